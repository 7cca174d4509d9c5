# Option-layer cases for nixos_test.go, evaluated with nixpkgs' real lib:
#   nix-instantiate --eval --strict --json nixos/tests/cases.nix --arg lib 'import <nixpkgs-lib>' -A <case>
# Each case is a small JSON-able value; the error cases throw when forced.
{
  lib,
  # For buildableImage: a nixos2docker-assemble binary on this machine
  # (builds run without the sandbox here).
  assemblerBin ? null,
}:
let
  eval =
    {
      modules ? [ ],
      pkgsArgs ? { },
    }:
    lib.evalModules {
      modules = [
        ./nixos-options-stub.nix
        # nixpkgs' own definitions the module meets (copied exactly, see ./nixpkgs/README.md)
        ./nixpkgs/virtualisation/container-config.nix
        ./nixpkgs/system/activation/nixos-init.nix
        ./nixpkgs/system/etc/etc-activation.nix
        ../docker-image.nix
        { _module.args.pkgs = import ./stub-pkgs.nix pkgsArgs; }
        { virtualisation.dockerImage.systemdPatchesDir = lib.mkDefault ./fixtures/patches/systemd; }
      ] ++ modules;
    };

  web = eval {
    modules = [
      {
        networking.hostName = "web";
        networking.firewall.enable = true;
        systemd.services.myapp.description = "an application of the base system";
        virtualisation.dockerImage = {
          exposedPorts = [
            "80"
            "53/udp"
          ];
          volumes = [ "/var/lib/web" ];
          env.TZ = "UTC";
          labels."org.example.team" = "web";
        };
        virtualisation.dockerVariant = {
          virtualisation.dockerImage.tag = "variant";
          systemd.services.only-in-image.description = "defined in dockerVariant";
        };
      }
    ];
  };
  base = web.config;
  variant = web.config.virtualisation.dockerVariant;
  spec = base.system.build.dockerImageSpec;

  buildable =
    let
      system = builtins.currentSystem;
      busybox = (import ../../examples/toy/toy.nix { inherit system; }).parts.busybox;
      # The host binary as a package (types.package), copied into the store.
      assembler = derivation {
        name = "nixos2docker-assemble-host";
        inherit system;
        builder = "${busybox}/bin/sh";
        args = [
          "-ec"
          "${busybox}/bin/mkdir -p $out/bin && ${busybox}/bin/cp ${assemblerBin} $out/bin/nixos2docker-assemble"
        ];
      };
    in
    (eval {
      pkgsArgs = {
        inherit system;
        tools = busybox;
      };
      modules = [
        {
          networking.hostName = "web";
          virtualisation.dockerImage.exposedPorts = [ "80" ];
          virtualisation.dockerImage.volumes = [ "/var/lib/web" ];
          virtualisation.dockerImage.maxLayers = 3;
        }
        (lib.mkIf (assemblerBin != null) { virtualisation.dockerImage.assembler = assembler; })
      ];
    }).config.system.build;

  summary = c: {
    isContainer = c.boot.isContainer;
    nixStoreMountOpts = c.boot.nixStoreMountOpts;
    specialFileSystems = builtins.attrNames c.boot.specialFileSystems;
    nscd = c.services.nscd.enable;
    resolved = c.services.resolved.enable;
    timesyncd = c.services.timesyncd.enable;
    oomd = c.systemd.oomd.enable;
    emergencyMode = c.systemd.enableEmergencyMode;
    firewall = c.networking.firewall.enable;
    useDHCP = c.networking.useDHCP;
    etcHosts = c.environment.etc.hosts.enable or true;
    hostnameActivation = c.system.activationScripts.hostname or null;
    machineIdActivation = c.system.activationScripts.machine-id.text or null;
    masked = lib.sort lib.lessThan (
      lib.attrNames (lib.filterAttrs (_: u: !u.enable) c.systemd.services)
    );
    services = lib.sort lib.lessThan (lib.attrNames c.systemd.services);
    rootSlice = c.systemd.slices."-".sliceConfig.DisableControllers or null;
    defaultStandardOutput = c.systemd.settings.Manager.DefaultStandardOutput or null;
    maskedSockets = lib.sort lib.lessThan (
      lib.attrNames (lib.filterAttrs (_: u: !u.enable) c.systemd.sockets)
    );
    systemdPatches = map baseNameOf (map toString c.systemd.package.patches);
    toplevel = c.system.build.toplevel.outPath;
    tag = c.virtualisation.dockerImage.tag;
    sshdStartWhenNeeded = c.services.openssh.startWhenNeeded;
    nixDbService = c.systemd.services.nixos2docker-nix-db or null;
  };

  # A case whose base is `module` (given a file name, as a configuration
  # file would have), summarised by `f base variant`.
  withBase =
    file: module: f:
    let
      c = (eval { modules = [ { _file = file; imports = [ module ]; } ]; }).config;
    in
    f c c.virtualisation.dockerVariant;
  fixturePatches = import ../lib/systemd-patches.nix {
    inherit lib;
    patchesDir = ./fixtures/patches/systemd;
  };
in
{
  defaults =
    let
      c = (eval { }).config.virtualisation.dockerImage;
    in
    {
      inherit (c) name tag maxLayers;
      extraContents = map toString c.extraContents;
      healthcheck = c.healthcheck.enable;
      patchSystemd = c.patchSystemd;
    };

  defaultNameWithoutHostName =
    (eval { modules = [ { networking.hostName = ""; } ]; }).config.virtualisation.dockerImage.name;

  base = summary base;
  variant = summary variant;

  spec = {
    inherit (spec)
      version
      imageName
      imageTag
      maxLayers
      system
      config
      skeleton
      ;
    toplevel = toString spec.toplevel;
    closureRoots = map toString spec.exportReferencesGraph.closure;
    variantToplevel = variant.system.build.toplevel.outPath;
    baseToplevel = base.system.build.toplevel.outPath;
    imageSpecName = spec.name;
    nixRegistration = spec.nixRegistration or null;
    dockerImageName = base.system.build.dockerImage.name;
  };

  # nixpkgs' container-config.nix defines these at plain priority; a base
  # that defines them too (hardened configurations enable audit, hardware
  # modules udev and modprobe config) must still evaluate.
  hardenedBase = withBase "hardened.nix" {
    security.audit.enable = true;
    services.udev.enable = true;
    boot.kernel.enable = true;
    boot.modprobeConfig.enable = true;
  } (
    base: variant:
    let
      pick = c: {
        audit = c.security.audit.enable;
        udev = c.services.udev.enable;
        kernel = c.boot.kernel.enable;
        modprobe = c.boot.modprobeConfig.enable;
      };
    in
    {
      base = pick base;
      variant = pick variant;
      toplevel = variant.system.build.toplevel.outPath;
    }
  );

  # Activation features that mount: on in the base (with what nixpkgs'
  # assertions require), off in the variant, with a warning.
  mountingFeatures = withBase "etc-overlay.nix" {
    system.etc.overlay.enable = true;
    system.etc.overlay.mutable = false;
    system.nixos-init.enable = true;
    boot.initrd.systemd.enable = true;
    services.userborn.enable = true;
  } (
    base: variant: {
      base = [ base.system.etc.overlay.enable base.system.nixos-init.enable ];
      variant = [ variant.system.etc.overlay.enable variant.system.nixos-init.enable ];
      baseWarnings = base.warnings;
      variantWarnings = variant.warnings;
      # Forces the assertions and prints the warnings (stand-in top-level.nix).
      toplevel = variant.system.build.toplevel.outPath;
    }
  );

  # A base that forces systemd.package, but to a systemd patched already
  # (overlays.default): accepted, and not patched twice.
  forcedPatchedSystemd = withBase "forced-patched.nix" (
    { pkgs, ... }: { systemd.package = lib.mkForce (fixturePatches.patch pkgs.systemd); }
  ) (base: variant: map (p: baseNameOf (toString p)) variant.systemd.package.patches);

  # Forced to stock systemd, accepted knowingly: the variant keeps it.
  forcedSystemdAllowed = withBase "forced-systemd.nix" (
    { pkgs, ... }:
    {
      systemd.package = lib.mkForce pkgs.systemd;
      virtualisation.dockerImage.allowUnpatchedSystemd = true;
    }
  ) (base: variant: {
    patches = variant.systemd.package.patches;
    imageName = variant.system.build.dockerImageSpec.imageName;
  });

  sshdExplicit = withBase "sshd.nix" { services.openssh.startWhenNeeded = true; } (
    base: variant: variant.services.openssh.startWhenNeeded
  );

  noNix = withBase "no-nix.nix" { nix.enable = false; } (
    base: variant: {
      nixRegistration = variant.system.build.dockerImageSpec.nixRegistration or null;
      nixDbService = variant.systemd.services ? nixos2docker-nix-db;
    }
  );

  registryName =
    let
      c = (eval { modules = [ { virtualisation.dockerImage.name = "localhost:5000/team/web-app"; } ]; }).config;
    in
    {
      inherit (c.system.build.dockerImageSpec) imageName;
      specName = c.system.build.dockerImageSpec.name;
    };
  badName =
    (eval { modules = [ { virtualisation.dockerImage.name = "Web App"; } ]; })
    .config.virtualisation.dockerImage.name;

  # The module's own spec and image, built for real:
  #   nix-build cases.nix -A buildableSpec
  #   nix-build cases.nix -A buildableImage --argstr assemblerBin /path/to/nixos2docker-assemble
  # (shell and tools from the toy's busybox; the toplevel is the stub's).
  buildableSpec = buildable.dockerImageSpec;
  buildableImage = buildable.dockerImage;

  healthcheckOff =
    (eval { modules = [ { virtualisation.dockerImage.healthcheck.enable = false; } ]; })
    .config.system.build.dockerImageSpec.config ? Healthcheck;

  # With patchSystemd = false the variant keeps the base's systemd, whatever its version.
  unpatched =
    let
      c =
        (eval {
          modules = [ { virtualisation.dockerImage.patchSystemd = false; } ];
          pkgsArgs.systemdVersion = "255.4";
        }).config;
    in
    c.virtualisation.dockerVariant.systemd.package.version;

  supportedFixture = (import ../lib/systemd-patches.nix {
    inherit lib;
    patchesDir = ./fixtures/patches/systemd;
  }).supported;
  supportedReal = (import ../lib/systemd-patches.nix { inherit lib; }).supported;

  # The flake's outputs, with nixpkgs replaced by its lib and stub packages
  # (lib.nixosSystem is not in lib: the configurations are not evaluated).
  flake =
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      outputs = (import ../../flake.nix).outputs {
        self = outputs;
        nixpkgs = {
          inherit lib;
          legacyPackages = lib.genAttrs systems (system: import ./stub-pkgs.nix { inherit system; });
        };
      };
      stub = import ./stub-pkgs.nix { };
    in
    {
      outputs = lib.attrNames outputs;
      nixosModules = lib.attrNames outputs.nixosModules;
      moduleIsOuter = outputs.nixosModules.default == ../docker-image.nix;
      nixosConfigurations = lib.attrNames outputs.nixosConfigurations;
      packages = lib.mapAttrs (_: lib.attrNames) outputs.packages;
      checks = lib.mapAttrs (_: lib.attrNames) outputs.checks;
      # The overlay patches systemd with the real patches/systemd series.
      overlaySystemd =
        let
          patched = (outputs.overlays.default { } { systemd = stub.mkSystemd "262.1" [ ]; }).systemd;
        in
        {
          inherit (patched) version;
          patches = map (p: baseNameOf (toString p)) patched.patches;
        };
    };

  # --- errors (each throws when forced)
  wrongType =
    (eval { modules = [ { virtualisation.dockerImage.maxLayers = "many"; } ]; })
    .config.virtualisation.dockerImage.maxLayers;
  maxLayersTooSmall =
    (eval { modules = [ { virtualisation.dockerImage.maxLayers = 1; } ]; })
    .config.virtualisation.dockerImage.maxLayers;
  maxLayersTooMany =
    (eval { modules = [ { virtualisation.dockerImage.maxLayers = 1000000000; } ]; })
    .config.virtualisation.dockerImage.maxLayers;
  badPort =
    (eval { modules = [ { virtualisation.dockerImage.exposedPorts = [ "http" ]; } ]; })
    .config.virtualisation.dockerImage.exposedPorts;
  nested =
    (eval {
      modules = [
        {
          virtualisation.dockerVariant = {
            services.nscd.enable = true;
            virtualisation.dockerVariant.services.resolved.enable = true;
          };
        }
      ];
    }).config.system.build.dockerImageSpec.imageName;
  unsupportedSystemd =
    (eval { pkgsArgs.systemdVersion = "255.4"; }).config.system.build.dockerImageSpec.imageName;
  forcedSystemd = withBase "forced-systemd.nix" (
    { pkgs, ... }: { systemd.package = lib.mkForce pkgs.systemd; }
  ) (base: variant: variant.system.build.dockerImageSpec.imageName);
  badRegistration =
    (import ../lib/image-spec.nix {
      system = "x86_64-linux";
      shell = "/bin/sh";
      path = [ ];
      toplevel = "/nix/store/00000000000000000000000000000000-toplevel";
      imageName = "x";
      config.Cmd = [ "/init" ];
      nixRegistration = "var/nix-registration";
    }).drvPath;
}
