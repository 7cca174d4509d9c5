# The few NixOS options the nixos2docker modules read or set, declared so the
# option layer can be evaluated with nixpkgs' real `lib` (lib.evalModules,
# extendModules, types) where nixpkgs itself is not available (CI here).
# Names, types and defaults are copied from nixpkgs' module sources (file
# named next to each, under nixos/modules/, read from NixOS/nixpkgs master in
# 2026-12; nixos/README.md lists them). nixpkgs' own definitions that the
# module must get along with are copied exactly in ./nixpkgs/ (one file per
# nixpkgs file).
#
# THE GAP (what this file does not cover, checked only by the flake's VM test
# on a machine with nixpkgs): submodule types of file systems, units, etc files
# and interfaces are reduced to their `enable` (and the few fields set here)
# plus a freeform rest; `system.build.toplevel` is a stand-in derivation
# (never built) recording the settings the tests look at; `pkgs` is a stand-in
# (tests/stub-pkgs.nix); NixOS's own modules (stage-2, systemd, networking…)
# do not run, so what they do with these values is not evaluated.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  freeform = types.submodule { freeformType = types.attrsOf types.anything; };
  enableOpt = default: mkOption {
    type = types.bool;
    inherit default;
    description = "stub";
  };
  # nixos/lib/systemd-unit-options.nix: commonUnitOptions (enable,
  # overrideStrategy), sliceOptions (sliceConfig); the rest freeform.
  unit = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      enable = enableOpt true;
      overrideStrategy = mkOption {
        type = types.enum [ "asDropinIfExists" "asDropin" ];
        default = "asDropinIfExists";
        description = "stub";
      };
      sliceConfig = mkOption {
        type = types.attrsOf types.anything;
        default = { };
        description = "stub";
      };
    };
  };
  bool = default: mkOption {
    type = types.bool;
    inherit default;
    description = "stub";
  };
in
{
  options = {
    # nixos/modules/system/build.nix
    system.build = mkOption {
      type = types.submoduleWith {
        modules = [ { freeformType = with types; lazyAttrsOf (uniq unspecified); } ];
      };
      default = { };
      description = "stub";
    };
    # nixos/modules/system/activation/activation-script.nix (either str or a
    # submodule there)
    system.activationScripts = mkOption {
      type = types.attrsOf (types.either types.str freeform);
      default = { };
      description = "stub";
    };
    # nixos/modules/misc/meta.nix
    meta = mkOption {
      type = types.submodule { freeformType = types.attrsOf types.anything; };
      default = { };
      description = "stub";
    };
    # nixos/modules/tasks/network-interfaces.nix
    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
      description = "stub";
    };
    networking.useDHCP = bool true;
    networking.useNetworkd = bool false;
    networking.interfaces = mkOption {
      type = types.attrsOf freeform;
      default = { };
      description = "stub";
    };
    # nixos/modules/services/networking/dhcpcd.nix
    networking.dhcpcd.enable = bool true;
    # nixos/modules/services/networking/firewall.nix
    networking.firewall.enable = bool true;
    # nixos/modules/config/resolvconf.nix
    networking.resolvconf.enable = bool true;
    # nixos/modules/system/etc/etc.nix
    environment.etc = mkOption {
      type = types.attrsOf (types.submodule {
        freeformType = types.attrsOf types.anything;
        options.enable = enableOpt true;
      });
      default = { };
      description = "stub";
    };
    # nixos/modules/virtualisation/nixos-containers.nix
    boot.isContainer = bool false;
    # nixos/modules/system/boot/loader/grub/grub.nix
    boot.loader.grub.enable = bool (!config.boot.isContainer);
    # nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix
    boot.loader.systemd-boot.enable = bool false;
    # nixos/modules/tasks/filesystems.nix
    boot.specialFileSystems = mkOption {
      type = types.attrsOf freeform;
      default = { };
      description = "stub";
    };
    fileSystems = mkOption {
      type = types.attrsOf freeform;
      default = { };
      description = "stub";
    };
    # nixos/modules/config/swap.nix
    swapDevices = mkOption {
      type = types.listOf freeform;
      default = [ ];
      description = "stub";
    };
    # nixos/modules/system/boot/stage-2.nix
    boot.nixStoreMountOpts = mkOption {
      type = types.listOf types.nonEmptyStr;
      default = [ "ro" "nodev" "nosuid" ];
      description = "stub";
    };
    # nixos/modules/system/boot/resolved.nix
    services.resolved.enable = bool false;
    # nixos/modules/services/system/nscd.nix
    services.nscd.enable = bool true;
    # nixos/modules/config/nsswitch.nix
    system.nssModules = mkOption {
      type = types.listOf types.path;
      default = [ ];
      description = "stub";
    };
    # nixos/modules/system/boot/timesyncd.nix
    services.timesyncd.enable = bool (!config.boot.isContainer);
    # nixos/modules/system/boot/systemd/oomd.nix
    systemd.oomd.enable = bool true;
    # nixos/modules/system/boot/networkd.nix
    systemd.network.enable = bool false;
    # nixos/modules/security/audit.nix
    security.audit.enable = mkOption {
      type = types.enum [ false true "lock" ];
      default = false;
      description = "stub";
    };
    # nixos/modules/services/hardware/udev.nix
    services.udev.enable = bool true;
    # nixos/modules/system/boot/kernel.nix
    boot.kernel.enable = bool true;
    # nixos/modules/system/boot/modprobe.nix
    boot.modprobeConfig.enable = bool true;
    # nixos/modules/config/console.nix
    console.enable = bool true;
    # nixos/modules/services/misc/nix-optimise.nix
    nix.optimise.automatic = bool false;
    # nixos/modules/config/power-management.nix
    powerManagement.enable = bool true;
    # nixos/modules/misc/documentation.nix
    documentation.nixos.enable = bool true;
    # nixos/modules/tasks/network-interfaces.nix
    networking.useHostResolvConf = bool false;
    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh.startWhenNeeded = bool false;
    # nixos/modules/tasks/lvm.nix
    services.lvm.enable = bool true;
    # nixos/modules/config/shells-environment.nix
    environment.variables = mkOption {
      type = with types; attrsOf (oneOf [ (listOf (oneOf [ int str path ])) int str path ]);
      default = { };
      description = "stub";
    };
    # nixos/modules/system/etc/etc.nix
    system.etc.overlay.enable = bool false;
    system.etc.overlay.mutable = bool true;
    # nixos/modules/system/activation/nixos-init.nix
    system.nixos-init.enable = bool false;
    # nixos/modules/system/boot/systemd/initrd.nix
    boot.initrd.systemd.enable = bool false;
    # nixos/modules/system/boot/systemd/sysusers.nix
    systemd.sysusers.enable = bool false;
    # nixos/modules/services/system/userborn.nix
    services.userborn.enable = bool false;
    # nixos/modules/services/system/nix-daemon.nix
    nix.enable = bool true;
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
      description = "stub";
    };
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
      description = "stub";
    };
    warnings = mkOption {
      internal = true;
      default = [ ];
      type = types.listOf types.str;
      description = "stub";
    };
    # nixos/modules/system/boot/systemd.nix
    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
      description = "stub";
    };
    systemd.enableEmergencyMode = bool true;
    systemd.services = mkOption { type = types.attrsOf unit; default = { }; description = "stub"; };
    systemd.sockets = mkOption { type = types.attrsOf unit; default = { }; description = "stub"; };
    systemd.paths = mkOption { type = types.attrsOf unit; default = { }; description = "stub"; };
    systemd.slices = mkOption { type = types.attrsOf unit; default = { }; description = "stub"; };
    systemd.settings.Manager = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "stub";
    };
  };

  # Stand-in for nixos/modules/system/activation/top-level.nix: a derivation
  # (instantiated, never built) whose attributes record what the tests check,
  # behind top-level.nix's own handling of assertions and warnings
  # (failedAssertions: throw; else showWarnings).
  config.system.build.toplevel =
    let
      failedAssertions = map (x: x.message) (lib.filter (x: !x.assertion) config.assertions);
      baseSystem = derivation {
        name = "nixos-system-${config.networking.hostName}-stub";
        system = pkgs.stdenv.hostPlatform.system;
        builder = "/bin/sh";
        args = [ "-c" "echo stub > $out" ];
        isContainer = config.boot.isContainer;
        systemd = config.systemd.package;
      };
    in
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatStringsSep "\n" (map (x: "- ${x}") failedAssertions)}"
    else
      lib.showWarnings config.warnings baseSystem;
}
