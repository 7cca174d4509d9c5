# Copy of the assertions of nixpkgs' nixos/modules/system/etc/etc-activation.nix
# (master, read 2026-12 in NixOS/nixpkgs), same condition and messages. Left
# out: the third assertion (switchable systems need kernel >= 6.6: no kernel
# options here), the activation script and the initrd mount units (what they
# do is why the variant turns the overlay off; they are not evaluated here).
{ config, lib, ... }:

{
  config = lib.mkIf config.system.etc.overlay.enable {
    assertions = [
      {
        assertion = config.boot.initrd.systemd.enable;
        message = "`system.etc.overlay.enable` requires `boot.initrd.systemd.enable`";
      }
      {
        assertion =
          (!config.system.etc.overlay.mutable)
          -> (config.systemd.sysusers.enable || config.services.userborn.enable);
        message = "`!system.etc.overlay.mutable` requires `systemd.sysusers.enable` or `services.userborn.enable`";
      }
    ];
  };
}
