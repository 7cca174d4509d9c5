package nixeval

import (
	"fmt"

	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// systems maps the platforms the builder stage can build for (natively or
// under emulation: Nix never cross-compiles here) to Nix systems.
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
	supported := ""
	for i, s := range systems {
		if i > 0 {
			supported += ", "
		}
		supported += platforms.Format(s.platform) + " (" + s.system + ")"
	}
	return "", fmt.Errorf("unsupported platform %s: nixos2docker builds NixOS images for %s", platforms.Format(norm), supported)
}
