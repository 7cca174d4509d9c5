# The nixos2docker Go tools, packaged for Nix: nixos2docker-assemble writes a
# docker-loadable archive from an image spec with the same layering code
# (package layers) the BuildKit frontend uses, so both faces give the same
# layers. Used by system.build.dockerImage and the flake's packages.
{
  lib,
  # nixpkgs' default Go: the root Go module keeps its `go` line at or below
  # the floor hack/go-floor checks, so no versioned builder (which nixpkgs
  # turns into a throw when it retires that Go) is needed.
  buildGoModule,
}:
buildGoModule {
  pname = "nixos2docker";
  version = "0.1.0";

  # Only the root Go module's sources: changes to docs, Nix files, patches or
  # the frontend module (BuildKit, nested in frontend/) do not rebuild the tools.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.difference (lib.fileset.fileFilter (
      f: f.hasExt "go" || f.name == "go.mod" || f.name == "go.sum"
    ) ../.) ../frontend;
  };

  vendorHash = import ./vendor-hash.nix;
  subPackages = [ "cmd/nixos2docker-assemble" ];
  env.CGO_ENABLED = "0";
  ldflags = [
    "-s"
    "-w"
  ];
  # The Go tests run in the project's CI (they need Docker, BuildKit, Nix).
  doCheck = false;

  meta = {
    description = "Docker images from NixOS configurations, with systemd as PID 1";
    mainProgram = "nixos2docker-assemble";
    platforms = lib.platforms.linux;
  };
}
