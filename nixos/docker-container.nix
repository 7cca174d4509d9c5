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

  # Masked units, manager settings and the root slice's drop-in: shared with
  # examples/systemd, which builds the same system without nixpkgs.
  containerUnits = import ./lib/container-units.nix;
  mask = names: lib.genAttrs names (_: { enable = lib.mkForce false; });

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

    systemd.services = mask containerUnits.maskedServices;
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
