# A NixOS-like configuration for nixeval's real-Nix tests, where nixpkgs is
# not available: nixpkgs' real lib.evalModules (so extendModules, options and
# the module system's own errors are real) over the NixOS option stub of
# nixos/tests, WITHOUT our module, which eval.nix adds from the embedded
# files; and one that already imports our module (./nixos, copied by the
# test), which eval.nix must not import twice. The test puts nixpkgs' lib at
# ./nixpkgs-lib and the stub at ./stub.
{
  outputs =
    { self }:
    let
      lib = import ./nixpkgs-lib/lib;
      system = builtins.currentSystem or "x86_64-linux";
    in
    {
      nixosConfigurations.web = lib.evalModules {
        modules = [
          ./stub/nixos-options-stub.nix
          {
            _module.args.pkgs = import ./stub/stub-pkgs.nix { inherit system; };
            networking.hostName = "web";
          }
        ];
      };
      nixosConfigurations.withmodule = lib.evalModules {
        modules = [
          ./stub/nixos-options-stub.nix
          ./nixos/docker-image.nix
          {
            _module.args.pkgs = import ./stub/stub-pkgs.nix { inherit system; };
            networking.hostName = "withmodule";
            virtualisation.dockerImage.name = "from-the-flake";
          }
        ];
      };
    };
}
