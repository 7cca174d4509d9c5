# A self-contained flake for nixeval's real-Nix tests: configurations shaped
# like the toy's (config.system.build.dockerImageSpec, no extendModules), one
# for this machine and one per supported system.
{
  outputs =
    { self }:
    let
      mk = system: {
        config.system.build.dockerImageSpec = derivation {
          name = "spec.json";
          inherit system;
          builder = "/bin/sh";
          args = [ "-c" "echo '{}' > $out" ];
        };
      };
    in
    {
      nixosConfigurations = {
        here = mk (builtins.currentSystem or "x86_64-linux");
        x86 = mk "x86_64-linux";
        arm = mk "aarch64-linux";
      };
    };
}
