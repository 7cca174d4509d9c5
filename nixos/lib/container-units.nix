# What a nixos2docker image changes about systemd's units and manager, as
# data: the NixOS module (../docker-container.nix) applies it through NixOS
# options, examples/systemd (no nixpkgs) writes the same units and settings
# itself. Pure Nix, builtins only.
{
  # Units that fail or make no sense without privileges, hardware or a
  # console; masked (a unit with enable = false is a link to /dev/null,
  # nixpkgs nixos/lib/systemd-lib.nix, makeUnit). Each was started in the
  # patched container (patches/systemd/README.md, "Units a NixOS container
  # image should mask"): rfkill and hibernate-resume fail; logind runs but
  # has no seats and its sessions are scopes, which need cgroups; the rest
  # are skipped by their own conditions or serve no purpose in a container.
  # Kept because they work unprivileged with the patched systemd:
  # systemd-journald and systemd-journal-flush (journalctl works; services'
  # output goes to `docker logs` anyway, see managerSettings) and
  # systemd-tmpfiles-setup-dev(-early).
  maskedServices = [
    "systemd-sysctl"
    "systemd-random-seed"
    "systemd-rfkill"
    "systemd-hibernate-resume"
    "systemd-binfmt"
    "systemd-pstore"
    "systemd-firstboot"
    "systemd-hwdb-update"
    "systemd-networkd"
    "systemd-networkd-wait-online"
    "firewall"
    "network-setup"
    "systemd-remount-fs"
    "suid-sgid-wrappers"
    "systemd-logind"
    "systemd-vconsole-setup"
    "getty@"
    "serial-getty@"
    "autovt@"
    "console-getty"
    "container-getty@"
    "systemd-update-utmp"
    "systemd-machine-id-commit"
    "systemd-ask-password-wall"
  ];
  maskedSockets = [
    "systemd-networkd"
    "systemd-rfkill"
  ];
  maskedPaths = [ "systemd-ask-password-wall" ];

  # Logging: services' output to the container's stdout/stderr, i.e.
  # `docker logs` (patches/systemd/README.md, "Logging decision"): with
  # StandardOutput=tty and no /dev/console (docker run without -t), the
  # patched executor (262/0003-console-is-inherited-stdio.patch) gives each
  # service its own blocking description of PID 1's stdout: lossless, no
  # journald rate limit, stdout and stderr kept apart. StandardError stays
  # "inherit" (follows stdout) and TTYPath stays /dev/console (the patch acts
  # on exactly that path). PID 1 prints its status lines there too; its
  # later log messages go to the journal, as in any container with journald.
  # The [Manager] section of /etc/systemd/system.conf.
  managerSettings = {
    DefaultStandardOutput = "tty";
    ShowStatus = "yes";
  };

  # cgroups: the cgroup2 file system is read-only; systemd must not try to
  # enable controllers below the root (systemd.resource-control(5)). cgroup
  # v2 controller names only: systemd >= 258 has no v1 support. The [Slice]
  # section of a drop-in for the built-in -.slice.
  rootSliceSettings = {
    DisableControllers = "cpu cpuset io memory pids";
  };
}
