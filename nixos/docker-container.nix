# The inner module, the analogue of nixpkgs' nixos/modules/virtualisation/qemu-vm.nix:
# everything that turns a NixOS configuration into one that boots with systemd
# as PID 1 in an unprivileged, Docker-default container
# (`docker run --tmpfs /run --tmpfs /run/lock --tmpfs /tmp`, nothing else:
# 14 capabilities, no CAP_SYS_ADMIN, a read-only cgroup2 file system).
# It is only ever evaluated inside the Docker variant made by ./docker-image.nix,
# modelled on how Incus/LXD and systemd-nspawn configure container guests
# (nixpkgs: virtualisation/container-config.nix, lxc-container.nix, nixos-containers.nix).
#
# Priorities: what would break the container is set with mkOverride 10 (as
# qemu-vm.nix's mkVMOverride), services and units with mkForce; both beat the
# base configuration's plain definitions.
{
  config,
  options,
  lib,
  pkgs,
  nixos2dockerBase,
  ...
}:
let
  cfg = config.virtualisation.dockerImage;
  mkDockerOverride = lib.mkOverride 10;

  systemdPatches = import ./lib/systemd-patches.nix {
    inherit lib;
    patchesDir = cfg.systemdPatchesDir;
  };

  # Nesting check: the variant sees the base configuration's definitions of
  # virtualisation.dockerVariant again (it is an extension of it), plus, if
  # any, those written inside virtualisation.dockerVariant itself.
  nestedVariant =
    nixos2dockerBase.definitionCount options.virtualisation.dockerVariant
    > nixos2dockerBase.variantDefinitions;
  # Checked when the spec is evaluated (not only when systemd is built), so
  # both errors show at evaluation time, before any build.
  assertSupported =
    x:
    if cfg.patchSystemd then builtins.seq (systemdPatches.check nixos2dockerBase.systemdPackage) x else x;
  assertNotNested =
    x:
    if nestedVariant then
      throw ''
        The option `virtualisation.dockerVariant' is set inside `virtualisation.dockerVariant' (in ${
          lib.concatStringsSep ", " (
            lib.filter (f: f != toString ./docker-image.nix) (map toString options.virtualisation.dockerVariant.files)
          )
        }).
        The Docker variant has no variant of its own: move those settings up into `virtualisation.dockerVariant'.''
    else
      x;

  # Units that fail or make no sense without privileges, hardware or a
  # console; masked (a unit with enable = false is a link to /dev/null,
  # nixpkgs nixos/lib/systemd-lib.nix, makeUnit). Each was started in the
  # patched container (patches/systemd/README.md, "Units a NixOS container
  # image should mask"): rfkill and hibernate-resume fail; logind runs but
  # has no seats and its sessions are scopes, which need cgroups; the rest
  # are skipped by their own conditions or serve no purpose in a container.
  # Kept because they work unprivileged with the patched systemd:
  # systemd-journald and systemd-journal-flush (journalctl works; services'
  # output goes to `docker logs` anyway, see logging below) and
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
  mask = names: lib.genAttrs names (_: { enable = lib.mkForce false; });

  # docker exec uses the image's Env: the same PATH a NixOS login shell has
  # (nixos/modules/config/shells-environment.nix), so `docker exec C systemctl …`
  # works without -e PATH.
  path = lib.concatStringsSep ":" [
    "/run/wrappers/bin"
    "/root/.nix-profile/bin"
    "/nix/profile/bin"
    "/nix/var/nix/profiles/default/bin"
    "/run/current-system/sw/bin"
  ];
  envAttrs = {
    container = "docker";
    PATH = path;
  }
  // cfg.env;
  # container first: PID 1 reads it to detect the container manager.
  env = [ "container=${envAttrs.container}" ] ++ lib.mapAttrsToList (n: v: "${n}=${v}") (
    removeAttrs envAttrs [ "container" ]
  );

  # A store-path-safe form of the image name for derivation names.
  safeName = lib.replaceStrings [ "/" ":" ] [ "-" "-" ] cfg.name;

  portKey = p: if lib.hasInfix "/" p then p else "${p}/tcp";

  toplevel = config.system.build.toplevel;

  # Docker's image config (the docker-image-spec type; durations in ns).
  imageConfig = {
    Entrypoint = [ "${toplevel}/init" ];
    Env = env;
    # systemd powers off on SIGRTMIN+3; Docker, containerd and Podman honour
    # StopSignal (the patched systemd also treats SIGTERM as poweroff).
    StopSignal = "SIGRTMIN+3";
    Labels = {
      "org.opencontainers.image.title" = cfg.name;
    }
    // cfg.labels;
    ExposedPorts = lib.listToAttrs (map (p: lib.nameValuePair (portKey p) { }) cfg.exposedPorts);
    Volumes = lib.genAttrs cfg.volumes (_: { });
  }
  // lib.optionalAttrs cfg.healthcheck.enable {
    Healthcheck = {
      Test = [
        "CMD"
        "/run/current-system/sw/bin/systemctl"
        "is-system-running"
      ];
      Interval = cfg.healthcheck.interval * 1000000000;
      Timeout = 10 * 1000000000;
      StartPeriod = cfg.healthcheck.startPeriod * 1000000000;
      Retries = 3;
    };
  };

  dockerImageSpec = assertNotNested (assertSupported (
    import ./lib/image-spec.nix {
      inherit toplevel;
      system = pkgs.stdenv.hostPlatform.system;
      shell = pkgs.runtimeShell;
      path = [
        pkgs.coreutils
        pkgs.gnused
      ];
      extraContents = cfg.extraContents;
      imageName = cfg.name;
      imageTag = cfg.tag;
      maxLayers = cfg.maxLayers;
      config = imageConfig;
      name = "docker-image-spec-${safeName}.json";
    }
  ));
in
{
  config = {
    # --- boot: a container, no bootloader, Docker provides /proc, /sys, /dev, /run.
    # nixos/modules/virtualisation/nixos-containers.nix (boot.isContainer),
    # nixos/modules/system/boot/loader/grub/grub.nix, .../systemd-boot/systemd-boot.nix
    boot.isContainer = mkDockerOverride true;
    boot.loader.grub.enable = mkDockerOverride false;
    boot.loader.systemd-boot.enable = mkDockerOverride false;
    # nixos/modules/tasks/filesystems.nix: mounting them needs CAP_SYS_ADMIN.
    boot.specialFileSystems = mkDockerOverride { };
    # nixos/modules/system/boot/stage-2.nix: no read-only bind mount of the
    # store (CAP_SYS_ADMIN again); the image's store is the container's.
    boot.nixStoreMountOpts = mkDockerOverride [ ];
    # The base configuration's disks and swap are not the container's.
    fileSystems = mkDockerOverride { };
    swapDevices = mkDockerOverride [ ];

    # --- services that need privileges or own what Docker owns.
    # Docker owns name resolution (it bind-mounts /etc/resolv.conf), so
    # resolved and nscd have nothing to do; both ran only as far as the
    # patches allow (resolved failed with 217/USER before 0007, nscd is a
    # DynamicUser= service with no isolation here) and are untested on NixOS.
    # timesyncd would need CAP_SYS_TIME; oomd needs writable cgroups.
    # nixos/modules/system/boot/resolved.nix, services/system/nscd.nix,
    # system/boot/timesyncd.nix, system/boot/systemd/oomd.nix
    services.resolved.enable = lib.mkForce false;
    services.nscd.enable = lib.mkForce false;
    # Without nscd, NSS modules cannot be loaded (assertion in
    # nixos/modules/config/nsswitch.nix); glibc's files/dns are enough here.
    system.nssModules = lib.mkForce [ ];
    services.timesyncd.enable = lib.mkForce false;
    systemd.oomd.enable = lib.mkForce false;

    # No console to run an emergency shell on: boot on instead of hanging
    # the container silently. nixos/modules/system/boot/systemd.nix
    systemd.enableEmergencyMode = lib.mkForce false;

    systemd.services = mask maskedServices;
    systemd.sockets = mask maskedSockets;
    systemd.paths = mask maskedPaths;

    # --- cgroups: the cgroup2 file system is read-only; systemd must not try
    # to enable controllers below the root (systemd.resource-control(5)).
    # cgroup v2 controller names only: systemd >= 258 has no v1 support.
    # A drop-in for the built-in -.slice (overrideStrategy: nixos/lib/systemd-unit-options.nix).
    systemd.slices."-" = {
      overrideStrategy = "asDropin";
      sliceConfig.DisableControllers = "cpu cpuset io memory pids";
    };

    # --- logging: services' output to the container's stdout/stderr, i.e.
    # `docker logs` (patches/systemd/README.md, "Logging decision"): with
    # StandardOutput=tty and no /dev/console (docker run without -t), the
    # patched executor (262/0003-console-is-inherited-stdio.patch) gives each
    # service its own blocking description of PID 1's stdout: lossless, no
    # journald rate limit, stdout and stderr kept apart. StandardError stays
    # "inherit" (follows stdout) and TTYPath stays /dev/console (the patch acts
    # on exactly that path). PID 1 prints its status lines there too; its
    # later log messages go to the journal, as in any container with journald.
    # nixos/modules/system/boot/systemd.nix (systemd.settings.Manager)
    systemd.settings.Manager = {
      DefaultStandardOutput = "tty";
      ShowStatus = "yes";
    };

    # --- networking: Docker owns it (addresses, routes, DNS, /etc/hosts).
    # nixos/modules/tasks/network-interfaces.nix, services/networking/dhcpcd.nix,
    # system/boot/networkd.nix, services/networking/firewall.nix, config/resolvconf.nix
    networking.useDHCP = lib.mkForce false;
    networking.dhcpcd.enable = lib.mkForce false;
    networking.useNetworkd = lib.mkForce false;
    systemd.network.enable = lib.mkForce false;
    networking.firewall.enable = lib.mkForce false;
    networking.interfaces = mkDockerOverride { };
    # Docker bind-mounts /etc/resolv.conf, /etc/hosts and /etc/hostname: the
    # activation must not replace them (nixos/modules/config/networking.nix,
    # nixos/modules/tasks/network-interfaces.nix).
    networking.resolvconf.enable = lib.mkForce false;
    environment.etc.hosts.enable = lib.mkForce false;
    environment.etc.hostname.enable = lib.mkForce false;
    # Docker sets the host name (the container ID, or --hostname); sethostname
    # needs CAP_SYS_ADMIN. nixos/modules/tasks/network-interfaces.nix
    # (system.activationScripts.hostname)
    system.activationScripts.hostname = lib.mkForce "";

    # --- systemd patched for the unprivileged container, in this variant only
    # (one systemd build; nothing else is rebuilt). The version is the base
    # configuration's systemd.package.
    systemd.package = lib.mkIf cfg.patchSystemd (
      lib.mkOverride 90 (systemdPatches.patch nixos2dockerBase.systemdPackage)
    );

    system.build = {
      inherit dockerImageSpec;
      dockerImage = pkgs.runCommand "docker-image-${safeName}.tar" {
        nativeBuildInputs = [ cfg.assembler ];
        spec = dockerImageSpec;
        # The spec references the whole closure, so the builder sees every path.
      } ''nixos2docker-assemble --spec "$spec" --out "$out"'';
    };
  };
}
