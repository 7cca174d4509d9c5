# Shared by the image-spec derivation (./image-spec.nix), the NixOS module and
# the toy example: the spec version and the root-filesystem skeleton, i.e.
# everything of the image outside /nix/store. Pure Nix, no nixpkgs.
rec {
  # Must equal imagespec.Version in imagespec/imagespec.go.
  version = 1;

  dir = path: mode: {
    inherit path mode;
    type = "dir";
  };
  symlink = path: target: {
    inherit path target;
    type = "symlink";
  };
  file = path: mode: content: {
    inherit path mode content;
    type = "file";
  };

  # What a NixOS system needs before its first activation: PID 1 at /init and
  # /sbin/init, the shells scripts expect, the mount points Docker does not
  # create, and the system profile as `nix-env -p /nix/var/nix/profiles/system
  # --set` leaves it (system -> system-1-link -> the toplevel), which
  # nixos-rebuild and the activation use; gcroots/profiles is the link Nix
  # makes itself when it creates gcroots/, which makes profiles GC roots.
  # /etc stays a plain writable directory (Docker bind-mounts hosts,
  # hostname and resolv.conf into it); the activation fills it from
  # /etc/static. No /etc/machine-id: systemd writes one on first boot, so
  # every container gets its own.
  defaultSkeleton =
    {
      toplevel,
      binSh ? "${toplevel}/sw/bin/sh",
      usrBinEnv ? "${toplevel}/sw/bin/env",
    }:
    [
      (symlink "/init" "${toplevel}/init")
      (dir "/sbin" "0755")
      (symlink "/sbin/init" "${toplevel}/init")
      (dir "/bin" "0755")
      (symlink "/bin/sh" binSh)
      (dir "/usr" "0755")
      (dir "/usr/bin" "0755")
      (symlink "/usr/bin/env" usrBinEnv)
      (dir "/etc" "0755")
      (symlink "/etc/static" "${toplevel}/etc")
      (dir "/nix" "0755")
      (dir "/nix/var" "0755")
      (dir "/nix/var/nix" "0755")
      (dir "/nix/var/nix/profiles" "0755")
      (symlink "/nix/var/nix/profiles/system" "system-1-link")
      (symlink "/nix/var/nix/profiles/system-1-link" "${toplevel}")
      (dir "/nix/var/nix/gcroots" "0755")
      (symlink "/nix/var/nix/gcroots/profiles" "/nix/var/nix/profiles")
      (dir "/tmp" "1777")
      (dir "/run" "0755")
      (dir "/var" "0755")
      (dir "/var/tmp" "1777")
      (dir "/root" "0700")
      (dir "/home" "0755")
    ];
}
