# Copy of the definitions of nixpkgs' nixos/modules/system/activation/nixos-init.nix
# (master, read 2026-12 in NixOS/nixpkgs): its assertions, with the same
# condition and messages. (The option, system.nixos-init.enable, is declared
# in ../../../nixos-options-stub.nix; its package option is left out.)
{ config, lib, ... }:

let
  cfg = config.system.nixos-init;
in
{
  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.boot.initrd.systemd.enable;
        message = "nixos-init can only be used with boot.initrd.systemd.enable";
      }
      {
        assertion = config.system.etc.overlay.enable;
        message = "nixos-init can only be used with system.etc.overlay.enable";
      }
      {
        assertion = config.services.userborn.enable || config.systemd.sysusers.enable;
        message = "nixos-init can only be used with services.userborn.enable or systemd.sysusers.enable";
      }
    ];
  };
}
