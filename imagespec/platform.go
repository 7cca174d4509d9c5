package imagespec

import (
	"fmt"
	"strings"

	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// systems maps the image platforms nixos2docker builds for (natively or under
// emulation: Nix never cross-compiles here) to Nix systems. The one table:
// the frontend's plan, the image config's platform and the archive read it.
var systems = []struct {
	platform ocispecs.Platform
	system   string
}{
	{ocispecs.Platform{OS: "linux", Architecture: "amd64"}, "x86_64-linux"},
	{ocispecs.Platform{OS: "linux", Architecture: "arm64"}, "aarch64-linux"},
}

// SystemFor returns the Nix system for an image platform.
func SystemFor(p ocispecs.Platform) (string, error) {
	norm := platforms.Normalize(p)
	for _, s := range systems {
		// arm64 variants (v8, v9…) all run aarch64-linux code.
		if norm.OS == s.platform.OS && norm.Architecture == s.platform.Architecture {
			return s.system, nil
		}
	}
	return "", fmt.Errorf("unsupported platform %s: nixos2docker builds NixOS images for %s", platforms.Format(norm), supported())
}

// Platform returns the image platform of a Nix system (the spec's "system").
func Platform(system string) (ocispecs.Platform, error) {
	for _, s := range systems {
		if s.system == system {
			return s.platform, nil // normalised: containerd drops arm64's v8
		}
	}
	return ocispecs.Platform{}, fmt.Errorf("system %q has no image platform (supported: %s)", system, supported())
}

// IsSystem tells whether system is one nixos2docker builds for.
func IsSystem(system string) bool {
	_, err := Platform(system)
	return err == nil
}

func supported() string {
	var out []string
	for _, s := range systems {
		out = append(out, platforms.Format(s.platform)+" ("+s.system+")")
	}
	return strings.Join(out, ", ")
}
