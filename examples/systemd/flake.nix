# A NixOS-shaped system booted by the patched systemd 262, built with real Nix
# and no nixpkgs (no inputs at all): see README.md. Its binaries (systemd, the
# Debian sid libraries it needs, bash, coreutils) come from runtime/, which
# hack/systemd-runtime writes (not in git); ./system.nix turns them into store
# paths and builds the rest the way NixOS does.
#
#   nix build 'path:<repo root>?dir=examples/systemd#nixosConfigurations.systemd.config.system.build.dockerImageSpec'
#   docker buildx build -f examples/systemd/systemd.nix2docker .     (from the repository root)
#
# Reference it as path:<repo root>?dir=examples/systemd: the flake imports
# ../../nixos/lib (the image spec, image config and container units the NixOS
# module uses), which Nix only copies when the source is the whole tree.
# Builds need `sandbox = false` (busybox enters the store from /bin/busybox).
{
  description = "nixos2docker example: patched systemd 262 as PID 1 in a NixOS-shaped system (no nixpkgs)";

  outputs =
    { self }:
    {
      # x86_64-linux only: the runtime is built for it (hack/systemd-build).
      nixosConfigurations.systemd = import ./system.nix {
        system = "x86_64-linux";
        configuration = import ./configuration.nix;
        runtimeDir = ./runtime;
      };
    };
}
