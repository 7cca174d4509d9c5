module github.com/nixos2docker/nixos2docker

// The floor nixpkgs' Go must meet: Nix builds this module (nixos/package.nix) with the Go the
// user's nixpkgs ships (GOTOOLCHAIN=local), so this line and every dependency's stay at or below
// it (hack/go-floor checks). BuildKit lives in the nested frontend module.
go 1.24.0

require (
	github.com/containerd/platforms v1.0.0-rc.1
	github.com/moby/docker-image-spec v1.3.1
	github.com/opencontainers/go-digest v1.0.0
	github.com/opencontainers/image-spec v1.1.1
	golang.org/x/sync v0.16.0
)

require (
	github.com/containerd/log v0.1.0 // indirect
	github.com/sirupsen/logrus v1.9.3 // indirect
	golang.org/x/sys v0.26.0 // indirect
)
