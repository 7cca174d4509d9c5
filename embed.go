// Package nixos2docker carries the Nix side of nixos2docker inside the Go
// binaries: the NixOS module (nixos/, without its tests) and the systemd
// patches it applies (patches/systemd). The frontend writes these files into
// the builder stage (see package nixeval), so a build never fetches them and
// the frontend image alone decides which module version builds the image.
//
// go:embed cannot reach parent folders, hence this small root package.
package nixos2docker

import (
	"embed"
	"io/fs"
)

//go:embed nixos/*.nix nixos/lib/*.nix patches/systemd
var files embed.FS

// Module returns the module's files, rooted like the repository:
// nixos/docker-image.nix, nixos/lib/…, patches/systemd/<major>/….
func Module() fs.FS { return files }
