# A stand-in for nixpkgs in nixeval's real-Nix tests: nixpkgs' real lib with a
# lib.nixosSystem that evaluates the NixOS option stub of nixos/tests (the
# test puts nixpkgs' lib at ./nixpkgs-lib and the stub at ./stub beside it).
{
  outputs =
    { self }:
    let
      lib = import ./nixpkgs-lib/lib;
    in
    {
      lib = lib // {
        nixosSystem =
          { modules, ... }:
          lib.evalModules {
            modules = [
              ./stub/nixos-options-stub.nix
              (
                { config, ... }:
                {
                  # nixpkgs/nixos/modules/misc/nixpkgs.nix (reduced to a string)
                  options.nixpkgs.hostPlatform = lib.mkOption {
                    type = lib.types.str;
                    description = "stub";
                  };
                  config._module.args.pkgs = import ./stub/stub-pkgs.nix { system = config.nixpkgs.hostPlatform; };
                }
              )
            ] ++ modules;
          };
      };
    };
}
