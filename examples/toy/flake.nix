# A toy "NixOS configuration" with no inputs and no nixpkgs: a handful of
# busybox-built derivations shaped like a system closure, and its image spec
# built by the real nixos/lib/image-spec.nix. The tests (and the frontend's
# integration tests) build it with Debian's Nix, offline:
#
#   nix build 'path:<repo root>?dir=examples/toy#nixosConfigurations.toy.config.system.build.dockerImageSpec'
#
# Reference it as path:<repo root>?dir=examples/toy: the flake imports
# ../../nixos/lib, which Nix only copies when the source is the whole tree.
# Builds need `sandbox = false` (busybox enters the store from /bin/busybox).
{
  description = "nixos2docker toy system (no nixpkgs)";

  outputs =
    { self }:
    let
      mk = system: import ./toy.nix { inherit system; };
    in
    {
      nixosConfigurations = {
        # The evaluating machine's system under --impure; x86_64-linux in pure
        # evaluation (builtins.currentSystem is not there).
        toy = mk (builtins.currentSystem or "x86_64-linux");
        toy-x86_64-linux = mk "x86_64-linux";
        toy-aarch64-linux = mk "aarch64-linux";
      };
    };
}
