// Package storepath reads Nix store path names the way people do: without the
// hash, and split into package name and version. Layer descriptions, layer
// grouping and the SBOM all name store paths through it. It also holds Nix's
// grammar of store paths (Check), which every path of a spec must follow
// before anything is copied or named after it.
package storepath

import (
	"fmt"
	"path"
	"strings"
)

// Dir is the Nix store.
const Dir = "/nix/store"

// Nix32 is the alphabet of Nix's base-32 hashes (no e, o, t, u).
const Nix32 = "0123456789abcdfghijklmnpqrsvwxyz"

// Pattern is the store-path grammar as an extended regular expression that
// Go's regexp and grep -E read alike (the builder stage's run.sh has it too).
// Check adds what a regular expression says badly: no leading dot, at most
// MaxNameLen characters.
const Pattern = `^/nix/store/[` + Nix32 + `]{32}-[A-Za-z0-9+._?=-]+$`

// MaxNameLen is the longest name Nix gives a store path.
const MaxNameLen = 211

// Check says whether p is a store path as Nix makes them:
// /nix/store/<32 base-32 characters>-<name>, the name of letters, digits and
// + - . _ ? =, not starting with a dot, at most MaxNameLen long.
func Check(p string) error {
	base, ok := strings.CutPrefix(p, Dir+"/")
	if !ok {
		return fmt.Errorf("%q is not in %s", p, Dir)
	}
	if len(base) < 33 || base[32] != '-' || strings.Contains(base, "/") {
		return fmt.Errorf("%q is not a store path (%s/<32-char hash>-<name>)", p, Dir)
	}
	for i := 0; i < 32; i++ {
		if !strings.ContainsRune(Nix32, rune(base[i])) {
			return fmt.Errorf("%q: the hash has %q, which is not in Nix's base-32 alphabet", p, base[i])
		}
	}
	name := base[33:]
	switch {
	case name == "":
		return fmt.Errorf("%q: empty name", p)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%q: the name is longer than %d characters", p, MaxNameLen)
	case name[0] == '.':
		return fmt.Errorf("%q: the name starts with a dot", p)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			return fmt.Errorf("%q: the name has %q, which a store path name cannot have", p, c)
		}
	}
	return nil
}

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
