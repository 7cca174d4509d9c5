# An ordinary NixOS configuration: nginx answering on port 80. Nothing here is
# Docker-specific except the image options at the end; the Docker variant adds
# the container settings (see nixos/docker-container.nix).
{ lib, ... }:
{
  networking.hostName = "example";

  services.nginx = {
    enable = true;
    virtualHosts.default = {
      default = true;
      locations."/".return = "200 'hello from nixos2docker\\n'";
    };
  };
  networking.firewall.allowedTCPPorts = [ 80 ];

  # A real machine would have these; the image variant replaces them.
  boot.loader.grub.device = "nodev";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  virtualisation.dockerImage = {
    name = "nixos2docker-example";
    exposedPorts = [ "80/tcp" ];
    labels."org.opencontainers.image.description" = "nginx on NixOS, systemd as PID 1";
  };

  # Only in the image: settings the machine does not have.
  virtualisation.dockerVariant = {
    services.nginx.virtualHosts.default.locations."/docker".return = "200 'running in Docker\\n'";
  };

  system.stateVersion = "26.05";
}
