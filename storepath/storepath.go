// Package storepath reads Nix store path names the way people do: without the
// hash, and split into package name and version. Layer descriptions, layer
// grouping and the SBOM all name store paths through it.
package storepath

import "path"

// Name is a store path's name without its hash: /nix/store/<hash>-glibc-2.42
// → glibc-2.42. A base name that is not <32 chars>-<name> is returned whole.
func Name(p string) string {
	base := path.Base(p)
	if len(base) > 33 && base[32] == '-' {
		return base[33:]
	}
	return base
}

// ParseName splits a name into package name and version the way Nix's
// builtins.parseDrvName does: the version starts after the first "-" that is
// not followed by a letter (glibc-2.42 → glibc, 2.42; xz-5.8.1-bin → xz, 5.8.1-bin).
func ParseName(name string) (pname, version string) {
	for i := 0; i+1 < len(name); i++ {
		if name[i] == '-' {
			c := name[i+1]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return name[:i], name[i+1:]
			}
		}
	}
	return name, ""
}
