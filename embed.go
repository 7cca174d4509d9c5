// Package nixos2docker carries the Nix side of nixos2docker inside the Go
// binaries: the NixOS module (nixos/, without its tests), the systemd
// patches it applies (patches/systemd) and the flake. The frontend writes the
// module files into the builder stage (see package nixeval), so a build never
// fetches them and the frontend image alone decides which module version
// builds the image.
//
// go:embed cannot reach parent folders, hence this small root package.
package nixos2docker

import (
	"embed"
	"io/fs"
)

//go:embed nixos/*.nix nixos/lib/*.nix patches/systemd
var module embed.FS

//go:embed flake.nix nixos/*.nix nixos/lib/*.nix patches/systemd
var source embed.FS

// Module returns the files the builder stage needs, rooted like the
// repository: nixos/docker-image.nix, nixos/lib/…, patches/systemd/<major>/….
// The flake is not among them: nothing in the stage reads it, and a change to
// its examples or checks must not invalidate every user's build cache.
func Module() fs.FS { return module }

// Source returns Module's files and flake.nix.
func Source() fs.FS { return source }
