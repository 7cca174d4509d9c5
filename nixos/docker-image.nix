# The outer module, the analogue of nixpkgs' nixos/modules/virtualisation/build-vm.nix:
# it adds config.system.build.dockerImage (and .dockerImageSpec) to any NixOS
# system. `extendModules` makes the Docker variant from the full configuration
# plus ./docker-container.nix (the qemu-vm.nix analogue) plus
# virtualisation.dockerVariant; the base configuration itself is never changed.
{
  config,
  options,
  lib,
  pkgs,
  extendModules,
  ...
}:
let
  inherit (lib) mkOption types literalExpression;
  cfg = config.virtualisation.dockerImage;

  # Definitions of virtualisation.dockerVariant in this (the base)
  # evaluation, not counting the option's default (priority 1500, mkOptionDefault).
  # The variant compares its own count with it to detect a nested variant.
  definitionCount =
    opt: if (opt.highestPrio or 1500) >= 1500 then 0 else builtins.length opt.definitions;

  variant = extendModules {
    modules = [ ./docker-container.nix ];
    # What the variant needs from the base evaluation (reading it inside the
    # variant would be the variant's own value: systemd.package would recurse).
    specialArgs.nixos2dockerBase = {
      systemdPackage = config.systemd.package;
      variantDefinitions = definitionCount options.virtualisation.dockerVariant;
      inherit definitionCount;
      # Where the base turns on activation features the variant turns off
      # (for its warnings); an older nixpkgs may lack the options.
      mountingFeatures = lib.filter (f: f.enabled) (
        map
          (path: {
            name = lib.showOption path;
            enabled = lib.hasAttrByPath path options && lib.attrByPath path false config;
            files = if lib.hasAttrByPath path options then (lib.getAttrFromPath path options).files else [ ];
          })
          [
            [ "system" "etc" "overlay" "enable" ]
            [ "system" "nixos-init" "enable" ]
          ]
      );
    };
  };

  portType = types.strMatching "[0-9]+(-[0-9]+)?(/(tcp|udp|sctp))?";
in
{
  options = {
    virtualisation.dockerVariant = mkOption {
      description = ''
        Machine configuration applied only to the Docker image built by
        `system.build.dockerImage` (like `virtualisation.vmVariant` for
        `nixos-rebuild build-vm`). The container settings of the variant
        (`boot.isContainer`, masked units, networking off, patched systemd)
        win over plain definitions of the base configuration; to change one of
        them in the image, use `lib.mkOverride 40` here (masked units,
        disabled services) or `lib.mkOverride 5` (`boot.*`, `fileSystems`).
        It cannot be nested in itself.
      '';
      inherit (variant) type;
      default = { };
      visible = "shallow";
    };

    virtualisation.dockerImage = {
      name = mkOption {
        # Docker's reference grammar: [registry[:port]/]path, path components
        # lower case with ".", "_", "__" or dashes between.
        type = types.strMatching "(([A-Za-z0-9.-]+(:[0-9]+)?)/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*";
        default =
          if config.networking.hostName != "" then lib.toLower config.networking.hostName else "nixos-docker";
        defaultText = literalExpression ''if config.networking.hostName != "" then lib.toLower config.networking.hostName else "nixos-docker"'';
        example = "registry.example.com:5000/team/web";
        description = "Repository name of the image (lower case, as Docker requires).";
      };

      tag = mkOption {
        type = types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        default = "latest";
        description = "Tag of the image.";
      };

      maxLayers = mkOption {
        type = types.addCheck types.int (n: n >= 2 && n <= 125) // {
          name = "maxLayers";
          description = "integer, at least 2 (one layer for the root skeleton, at least one for the store) and at most 125 (Docker's overlay2 refuses deeper images)";
        };
        default = 125;
        description = ''
          Upper bound of the number of layers, the root-skeleton layer
          included. Store paths are grouped into at most `maxLayers - 1`
          layers by the same Go code the BuildKit frontend uses.
        '';
      };

      extraContents = mkOption {
        type = types.listOf types.package;
        default = [ ];
        example = literalExpression "[ pkgs.cacert ]";
        description = "More store paths (with their closures) to put into the image.";
      };

      labels = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          "org.opencontainers.image.source" = "https://example.com/repo";
        };
        description = "Image labels.";
      };

      env = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = {
          TZ = "UTC";
        };
        description = ''
          Extra variables of the image's `Env`, i.e. the environment of PID 1
          (systemd) and of `docker exec`. `container=docker` and a `PATH` that
          reaches the system's tools are always set; a `PATH` here replaces it.
        '';
      };

      exposedPorts = mkOption {
        type = types.listOf portType;
        default = [ ];
        example = [
          "80/tcp"
          "53/udp"
        ];
        description = "Ports the image exposes (`EXPOSE`); `/tcp` is assumed when no protocol is given.";
      };

      volumes = mkOption {
        type = types.listOf (types.strMatching "/.*");
        default = [ ];
        example = [ "/var/lib/postgresql" ];
        description = "Absolute paths declared as volumes (`VOLUME`).";
      };

      healthcheck = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Whether the image has a `HEALTHCHECK` running
            `systemctl is-system-running` (healthy once the boot finished with
            no failed unit). It costs one short process per interval, nothing at boot.
          '';
        };
        interval = mkOption {
          type = types.ints.positive;
          default = 30;
          description = "Seconds between two health checks.";
        };
        startPeriod = mkOption {
          type = types.ints.unsigned;
          default = 60;
          description = "Seconds of boot during which failing checks do not count.";
        };
        startInterval = mkOption {
          type = types.ints.positive;
          default = 2;
          description = ''
            Seconds between two health checks during `startPeriod` (Docker 25
            and later; other engines check every `interval` from the start), so
            that a booted container is reported healthy within seconds.
          '';
        };
      };

      patchSystemd = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Whether the variant's `systemd.package` gets the patches of
          `patches/systemd/<major>` (needed to boot in an unprivileged Docker
          container with a read-only cgroup file system). Without them the
          image needs `--privileged` or writable cgroups.
        '';
      };

      allowUnpatchedSystemd = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to build the image even though the variant's
          `systemd.package` is not the patched one: a definition with a
          higher priority than the variant's (`lib.mkForce`, or
          `lib.mkOverride` below 90) replaces it, and evaluation fails naming
          that definition unless this is set. The image then carries that
          systemd as is, which needs `--privileged` or writable cgroups
          unless it is patched already.
        '';
      };

      systemdPatchesDir = mkOption {
        type = types.path;
        default = ../patches/systemd;
        defaultText = literalExpression "<nixos2docker>/patches/systemd";
        internal = true;
        description = "Directory with one `<major>/series` per supported systemd version.";
      };

      assembler = mkOption {
        type = types.package;
        default = pkgs.callPackage ./package.nix { };
        defaultText = literalExpression "pkgs.callPackage <nixos2docker>/nixos/package.nix { }";
        description = "The nixos2docker package whose `nixos2docker-assemble` writes the image archive from the spec.";
      };
    };
  };

  config = {
    # Built in the variant (./docker-container.nix), like system.build.vm.
    system.build = {
      dockerImageSpec = lib.mkDefault config.virtualisation.dockerVariant.system.build.dockerImageSpec;
      dockerImage = lib.mkDefault config.virtualisation.dockerVariant.system.build.dockerImage;
    };
  };

  # uses extendModules
  meta.buildDocsInSandbox = false;
}
