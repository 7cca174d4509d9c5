# The nixos2docker Go tools, packaged for Nix: nixos2docker-assemble writes a
# docker-loadable archive from an image spec with the same layering code
# (package layers) the BuildKit frontend uses, so both faces give the same
# layers. Used by system.build.dockerImage and the flake's packages.
{
  lib,
  buildGoModule,
  # go.mod asks for Go 1.26: prefer nixpkgs' Go 1.26 builder where the
  # default Go is older (null when this nixpkgs has none).
  buildGo126Module ? null,
}:
(if buildGo126Module != null then buildGo126Module else buildGoModule) {
  pname = "nixos2docker";
  version = "0.1.0";

  # Only the Go sources of the repository: changes to docs, Nix files or
  # patches do not rebuild the tools.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (
      f: f.hasExt "go" || f.name == "go.mod" || f.name == "go.sum"
    ) ../.;
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
