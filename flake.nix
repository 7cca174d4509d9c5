{
  description = "nixos2docker: Docker images from NixOS configurations, with systemd as PID 1";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      systemdPatches = import ./nixos/lib/systemd-patches.nix { inherit lib; };

      # The example: nginx on port 80, one module away from a Docker image.
      example =
        system:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            ./examples/flake/configuration.nix
            { nixpkgs.hostPlatform = system; }
          ];
        };
    in
    {
      # Adds system.build.dockerImage and .dockerImageSpec to any NixOS system.
      nixosModules.docker-image = ./nixos/docker-image.nix;
      nixosModules.default = self.nixosModules.docker-image;

      # systemd with the nixos2docker patches for every package of the
      # nixpkgs instance (rebuilds everything that depends on systemd; the
      # module patches only the image's systemd and does not need it).
      overlays.default = final: prev: { systemd = systemdPatches.patch prev.systemd; };

      nixosConfigurations.example = example "x86_64-linux";
      nixosConfigurations.example-aarch64 = example "aarch64-linux";

      packages = forAllSystems (
        system: pkgs:
        let
          build = (example system).config.system.build;
        in
        {
          nixos2docker = pkgs.callPackage ./nixos/package.nix { };
          dockerImage = build.dockerImage;
          dockerImageSpec = build.dockerImageSpec;
          default = build.dockerImage;
        }
      );

      # The NixOS VM test (needs KVM): `nix flake check` or
      # `nix build .#checks.x86_64-linux.vm -L`.
      checks = forAllSystems (
        system: pkgs: {
          vm = pkgs.testers.runNixOSTest (
            import ./nixos/tests/vm.nix {
              image = self.packages.${system}.dockerImage;
              imageName = (example system).config.virtualisation.dockerImage.name;
            }
          );
        }
      );
    };
}
