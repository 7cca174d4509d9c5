# Using nixos2docker from your own flake:
#
#   nix build .#nixosConfigurations.web.config.system.build.dockerImage
#   docker load < result
#   docker run -d --name web --tmpfs /run --tmpfs /run/lock --tmpfs /tmp -p 8080:80 nixos2docker-example:latest
{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    nixos2docker.url = "github:nixos2docker/nixos2docker";
    nixos2docker.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs =
    {
      self,
      nixpkgs,
      nixos2docker,
    }:
    {
      nixosConfigurations.web = nixpkgs.lib.nixosSystem {
        modules = [
          nixos2docker.nixosModules.default
          ./configuration.nix
          { nixpkgs.hostPlatform = "x86_64-linux"; }
        ];
      };

      packages.x86_64-linux.default = self.nixosConfigurations.web.config.system.build.dockerImage;
    };
}
