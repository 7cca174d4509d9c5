# A NixOS-like configuration for nixeval's real-Nix tests, where nixpkgs is
# not available: nixpkgs' real lib.evalModules (so extendModules, options and
# the module system's own errors are real) over the NixOS option stub of
# nixos/tests, WITHOUT our module, which eval.nix adds from the embedded
# files. The test puts nixpkgs' lib at ./nixpkgs-lib and the stub at ./stub.
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
    };
}
