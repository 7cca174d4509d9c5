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
  # these errors show at evaluation time, before any build.
  assertSupported =
    x:
    if cfg.patchSystemd then builtins.seq (systemdPatches.check nixos2dockerBase.systemdPackage) x else x;
  # The variant patches the base's systemd.package at priority 90; a
  # definition that beats it (mkForce is 50) makes the variant's systemd the
  # stock one, which exits 255 in an unprivileged container. Name it.
  assertPatched =
    x:
    if cfg.patchSystemd && !cfg.allowUnpatchedSystemd && !(systemdPatches.isPatched config.systemd.package) then
      throw ''
        nixos2docker: the Docker variant's systemd.package is not the patched systemd: a definition with a
        higher priority than the variant's (mkOverride 90) sets it, in ${
          lib.concatStringsSep ", " (
            lib.filter (f: f != toString ./docker-container.nix) (map toString options.systemd.package.files)
          )
        }.
        The image would carry ${config.systemd.package.name or "that systemd"} without the series of
        patches/systemd/${systemdPatches.majorOf config.systemd.package}, and stock systemd exits 255 in an unprivileged
        Docker container (read-only cgroups). Give that definition a lower priority (a plain definition
        is patched), or set virtualisation.dockerImage.allowUnpatchedSystemd = true to build the image
        with it anyway (it then needs --privileged or writable cgroups unless it is patched already).''
    else
      x;
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

  # Masked units, manager settings and the root slice's drop-in: shared with
  # examples/systemd, which builds the same system without nixpkgs.
  containerUnits = import ./lib/container-units.nix;
  mask = names: lib.genAttrs names (_: { enable = lib.mkForce false; });

  # The image's Nix database: the assembler writes the closure's
  # registration (nix-store --load-db format, from the spec's closure) to this
  # file, and nixos2docker-nix-db.service loads it at first boot. Only when
  # the image has Nix.
  nixRegistration = if config.nix.enable then "/nix/var/nix/nixos2docker-registration" else null;

  # Nix in the container: the image's store paths are registered in
  # the Nix database at first boot, from the registration file the
  # assembler writes (the closure's path, narHash, narSize and references,
  # as nixpkgs' closureInfo and nix-store --dump-db write them), then the
  # file is removed; like nixpkgs' own Docker and LXC images
  # (nixos/modules/profiles/docker-container.nix,
  # virtualisation/lxc-container.nix: /nix-path-registration loaded by
  # boot.postBootCommands). A unit instead, so `systemctl status` shows it;
  # ordered before nix-daemon and sysinit.target, so every Nix client sees a
  # complete database. /nix/var/nix/profiles/system (-> system-1-link ->
  # the toplevel) and gcroots/profiles are in the image's skeleton
  # (./lib/image-spec-lib.nix), so the running system is a GC root.
  nixDbService = {
    description = "Register the image's store paths in the Nix database";
    wantedBy = [ "sysinit.target" ];
    after = [ "local-fs.target" ];
    before = [
      "sysinit.target"
      "nix-daemon.socket"
      "nix-daemon.service"
      "shutdown.target"
    ];
    conflicts = [ "shutdown.target" ];
    unitConfig = {
      DefaultDependencies = false;
      ConditionPathExists = nixRegistration;
    };
    serviceConfig = {
      Type = "oneshot";
      StandardInput = "file:${nixRegistration}";
      ExecStart = "${config.nix.package.out}/bin/nix-store --load-db";
      ExecStartPost = "${pkgs.coreutils}/bin/rm -f ${nixRegistration}";
    };
  };

  # A store-path-safe form of the image name for derivation names.
  safeName = lib.replaceStrings [ "/" ":" ] [ "-" "-" ] cfg.name;

  toplevel = config.system.build.toplevel;

  # Docker's image config (Entrypoint, Env with PATH and container=docker,
  # StopSignal, Healthcheck …): one writer, shared with examples/systemd.
  imageConfig = import ./lib/image-config.nix {
    inherit toplevel;
    inherit (cfg)
      name
      env
      labels
      exposedPorts
      volumes
      ;
    healthcheck = {
      inherit (cfg.healthcheck)
        enable
        interval
        startPeriod
        startInterval
        ;
    };
  };

  dockerImageSpec = assertNotNested (assertSupported (assertPatched (
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
      inherit nixRegistration;
      name = "docker-image-spec-${safeName}.json";
    }
  )));
in
{
  config = lib.mkMerge [
    {
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
      # nixos/modules/virtualisation/container-config.nix sets these (with
      # boot.isContainer) at plain priority, so a plain definition in the base
      # (hardened configurations enable audit, hardware modules udev) would
      # conflict with it in the variant; the variant's win, with nixpkgs' value.
      security.audit.enable = mkDockerOverride false;
      services.udev.enable = mkDockerOverride false;
      boot.kernel.enable = mkDockerOverride false;
      boot.modprobeConfig.enable = mkDockerOverride false;

      # A machine ID before systemd starts (stage 2 runs the activation first).
      # Without one, systemd writes "uninitialized" to /etc/machine-id and
      # bind-mounts a transient ID over it, which fails without CAP_SYS_ADMIN:
      # the ID stays unreadable (the journal's directory, %m specifiers).
      # Each container gets its own, kept in its writable layer; measured with
      # examples/systemd, which runs the same lines.
      system.activationScripts.machine-id = lib.stringAfter [ "etc" ] ''
        if [ ! -s /etc/machine-id ] || [ "$(cat /etc/machine-id)" = uninitialized ]; then
          rm -f /etc/machine-id
          ${config.systemd.package}/bin/systemd-machine-id-setup
        fi
      '';

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
      # nsswitch.conf still names systemd's modules (passwd/group/shadow:
      # systemd; hosts: mymachines myhostname, from systemd.nix): glibc's dlopen
      # of libnss_systemd.so.2 etc. then fails (no nscd LD_LIBRARY_PATH, not in
      # glibc's own lib directory), the source counts as UNAVAIL and the
      # default action [UNAVAIL=continue] goes on to the next one: hosts are
      # files (Docker's /etc/hosts) then dns, users and groups /etc/passwd and
      # /etc/group. What is lost: DynamicUser= users have no name outside PID 1
      # (ls, ps and id show the UID), and nothing answers for the host name
      # beyond Docker's /etc/hosts entry. Measured with glibc 2.36 and that
      # nsswitch.conf, the modules absent (nixos/README.md).
      system.nssModules = lib.mkForce [ ];
      services.timesyncd.enable = lib.mkForce false;
      systemd.oomd.enable = lib.mkForce false;

      # No console to run an emergency shell on: boot on instead of hanging
      # the container silently. nixos/modules/system/boot/systemd.nix
      systemd.enableEmergencyMode = lib.mkForce false;

      systemd.services = mask containerUnits.maskedServices // {
        nixos2docker-nix-db = lib.mkIf (nixRegistration != null) nixDbService;
      };
      systemd.sockets = mask containerUnits.maskedSockets;
      systemd.paths = mask containerUnits.maskedPaths;

      # --- cgroups: no controllers below the read-only root cgroup
      # (lib/container-units.nix). A drop-in for the built-in -.slice
      # (overrideStrategy: nixos/lib/systemd-unit-options.nix).
      systemd.slices."-" = {
        overrideStrategy = "asDropin";
        sliceConfig = containerUnits.rootSliceSettings;
      };

      # --- logging: services' output to the container's stdout/stderr, i.e.
      # `docker logs` (lib/container-units.nix, managerSettings).
      # nixos/modules/system/boot/systemd.nix (systemd.settings.Manager)
      systemd.settings.Manager = containerUnits.managerSettings;

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
      # Docker sets the host name (the container ID, or --hostname) and
      # bind-mounts /etc/hostname; NixOS has no hostname activation script any
      # more (removed from nixos/modules/tasks/network-interfaces.nix in 2023,
      # NixOS/nixpkgs#263203): only systemd sets it at boot, from /etc/hostname,
      # and finds it already set.
      environment.etc.hosts.enable = lib.mkForce false;
      environment.etc.hostname.enable = lib.mkForce false;

      # --- sshd as a daemon, not socket-activated per connection: its own
      # messages (listening, logins, refused keys) then reach `docker logs` like
      # every service's (sshd@.service sends them to the journal only, and
      # every connection adds a unit's start and stop lines there instead), and
      # `docker top` shows one sshd. nixpkgs' own Docker image does the same
      # (nixos/modules/virtualisation/docker-image.nix). Beats
      # container-config.nix's mkDefault true; a base's explicit choice wins.
      services.openssh.startWhenNeeded = lib.mkOverride 900 false;

      # --- activation features that mount at boot or activation (the /etc
      # overlay: an erofs image and an overlayfs; nixos-init needs it and the
      # systemd initrd): mounting needs CAP_SYS_ADMIN, which the container lacks,
      # and the image boots stage 2 (/init) without an initrd anyway. Turned off
      # in the image (below), /etc is then made by the activation script as on
      # any NixOS without them; a warning names where the base turned them on.
      # nixos/modules/system/etc/etc.nix, etc-activation.nix,
      # nixos/modules/system/activation/nixos-init.nix
      warnings = map (
        f:
        "nixos2docker: ${f.name} is turned off in the Docker image (set in ${lib.concatStringsSep ", " (map toString f.files)}): it mounts at boot, which needs CAP_SYS_ADMIN; the image's /etc is made by the activation script instead."
      ) nixos2dockerBase.mountingFeatures;

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
    }
    # An older nixpkgs may lack these options (see the activation features above).
    (lib.optionalAttrs (options ? system.etc.overlay.enable) {
      system.etc.overlay.enable = mkDockerOverride false;
    })
    (lib.optionalAttrs (options ? system.nixos-init.enable) {
      system.nixos-init.enable = mkDockerOverride false;
    })
  ];
}
