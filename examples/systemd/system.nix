# What nixpkgs' NixOS modules make of a configuration, for the subset
# ./configuration.nix uses, written with plain `derivation`s, builtins and a
# busybox builder: no nixpkgs, no lib. Each part names the NixOS file it
# follows. The result has the interface of a NixOS configuration as far as
# the frontend needs it: config.system.build.{toplevel,dockerImageSpec}.
#
# The container settings and the image config are the NixOS module's own
# (../../nixos/lib/container-units.nix, image-config.nix), applied here the
# way nixos/docker-container.nix applies them through NixOS options.
{
  system,
  configuration,
  runtimeDir,
}:
let
  imageSpec = import ../../nixos/lib/image-spec.nix;
  imageConfig = import ../../nixos/lib/image-config.nix;
  containerUnits = import ../../nixos/lib/container-units.nix;

  inherit (builtins)
    attrNames
    concatStringsSep
    concatMap
    filter
    isAttrs
    isList
    listToAttrs
    map
    ;
  concatStrings = concatStringsSep "";
  mapAttrsToList = f: as: map (n: f n as.${n}) (attrNames as);
  optionalAttrs = c: as: if c then as else { };
  optionalString = c: s: if c then s else "";
  # Right wins; attribute sets are merged recursively, anything else replaced.
  recursiveUpdate =
    a: b:
    a
    // listToAttrs (
      map (n: {
        name = n;
        value = if isAttrs (a.${n} or null) && isAttrs b.${n} then recursiveUpdate a.${n} b.${n} else b.${n};
      }) (attrNames b)
    );

  # ---------------------------------------------------------------- builders
  # Debian's busybox-static enters the store by copy (hence `sandbox = false`,
  # as for examples/toy): the builder of every derivation here, in none of
  # the image's store paths.
  busybox = derivation {
    name = "busybox";
    inherit system;
    builder = "/bin/sh";
    args = [
      "-ec"
      ''
        /bin/busybox mkdir -p "$out/bin"
        /bin/busybox cp /bin/busybox "$out/bin/busybox"
        for applet in $(/bin/busybox --list); do
          [ "$applet" = busybox ] || /bin/busybox ln -s busybox "$out/bin/$applet"
        done
      ''
    ];
  };

  mkDrv =
    name: script: extra:
    derivation (
      {
        inherit name system;
        builder = "${busybox}/bin/sh";
        args = [
          "-ec"
          script
        ];
        PATH = "${busybox}/bin";
      }
      // extra
    );

  # pkgs.writeText
  writeText =
    name: text:
    mkDrv name ''printf '%s' "$text" > "$out"'' { inherit text; };

  # ---------------------------------------------------------------- packages
  runtimeMissing = ''
    examples/systemd/runtime/ is missing or incomplete: it holds the patched systemd 262 and the Debian sid files it needs, which are built, not stored in git.
    Run hack/systemd-runtime (hack/demo and hack/test run it): it builds systemd from Debian's source with patches/systemd/262 (hack/systemd-build, cached) and writes examples/systemd/runtime/runtime.tar and versions.json.'';
  runtimeOK =
    builtins.pathExists (runtimeDir + "/versions.json") && builtins.pathExists (runtimeDir + "/runtime.tar");
  debian =
    if runtimeOK then
      import ./debian.nix {
        inherit mkDrv;
        runtimeTar = runtimeDir + "/runtime.tar";
        versions = builtins.fromJSON (builtins.readFile (runtimeDir + "/versions.json"));
      }
    else
      throw runtimeMissing;

  pkgs = {
    inherit (debian) bash coreutils systemd;
  };
  inherit (pkgs) bash coreutils systemd;
  runtimeShell = "${bash}/bin/bash";

  # ----------------------------------------------------------- configuration
  # The defaults of the NixOS options used here, then the configuration, then
  # the container settings of the Docker variant (nixos/docker-container.nix:
  # masked units and manager settings with mkForce, so they win).
  defaults = {
    networking.hostName = "nixos";
    environment.systemPackages = [ ];
    environment.etc = { };
    systemd = {
      services = { };
      slices = { };
      targets = { };
      # nixos/modules/system/boot/systemd.nix
      defaultUnit = "multi-user.target";
      ctrlAltDelUnit = "reboot.target";
      settings.Manager = {
        DefaultIOAccounting = true;
        DefaultIPAccounting = true;
      };
    };
    # nixos/modules/misc/ids.nix, nixos/modules/config/users-groups.nix
    users.users = {
      root = {
        uid = 0;
        group = "root";
        home = "/root";
        shell = runtimeShell;
        description = "System administrator";
      };
      nobody = {
        uid = 65534;
        group = "nogroup";
        home = "/var/empty";
        # NixOS: shadow's nologin; coreutils' false here.
        shell = "/run/current-system/sw/bin/false";
        description = "Unprivileged account (don't use!)";
      };
      # nixos/modules/system/boot/systemd.nix
      systemd-network = {
        uid = 152;
        group = "systemd-network";
        home = "/var/empty";
        shell = "/run/current-system/sw/bin/false";
      };
      systemd-resolve = {
        uid = 153;
        group = "systemd-resolve";
        home = "/var/empty";
        shell = "/run/current-system/sw/bin/false";
      };
    };
    users.groups = {
      root.gid = 0;
      wheel.gid = 1;
      tty.gid = 3;
      utmp.gid = 29;
      adm.gid = 55;
      systemd-journal.gid = 62;
      keys.gid = 96;
      systemd-network.gid = 152;
      systemd-resolve.gid = 153;
      users.gid = 100;
      nogroup.gid = 65534;
    };
    virtualisation.dockerImage = {
      name = null; # networking.hostName
      tag = "latest";
      maxLayers = 125;
      env = { };
      labels = { };
      exposedPorts = [ ];
      volumes = [ ];
      healthcheck = { };
    };
  };
  mask = names: listToAttrs (map (n: { name = n; value.enable = false; }) names);
  containerSettings = {
    systemd.services = mask containerUnits.maskedServices;
    systemd.sockets = mask containerUnits.maskedSockets;
    systemd.paths = mask containerUnits.maskedPaths;
    systemd.slices."-" = {
      overrideStrategy = "asDropin";
      sliceConfig = containerUnits.rootSliceSettings;
    };
    systemd.settings.Manager = containerUnits.managerSettings;
  };
  config = recursiveUpdate (recursiveUpdate defaults (configuration { inherit pkgs; })) containerSettings;

  hostName = config.networking.hostName;
  dockerImage = config.virtualisation.dockerImage;
  imageName = if dockerImage.name != null then dockerImage.name else hostName;

  # ------------------------------------------------------------------ units
  # nixos/lib/systemd-lib.nix
  mkPathSafeName = builtins.replaceStrings [ "@" ":" "\\" "[" "]" ] [ "-" "-" "-" "" "" ];
  toOption =
    x:
    if x == true then
      "true"
    else if x == false then
      "false"
    else
      toString x;
  attrsToSection =
    as:
    concatStrings (
      concatMap (name: map (x: "${name}=${toOption x}\n") (if isList as.${name} then as.${name} else [ as.${name} ])) (
        attrNames as
      )
    );
  makeBinPath = ps: concatStringsSep ":" (map (p: "${p}/bin") ps);

  # makeJobScript: writeShellScriptBin NAME "set -e\n\n${text}"
  makeJobScript =
    name: text:
    let
      scriptName = builtins.replaceStrings [ "\\" "@" ] [ "-" "_" ] name;
      script = mkDrv "unit-script-${scriptName}" ''
        mkdir -p "$out/bin"
        { echo "#!${runtimeShell}"; printf 'set -e\n\n%s\n' "$text"; } > "$out/bin/${scriptName}"
        chmod +x "$out/bin/${scriptName}"
      '' { inherit text; };
    in
    "${script}/bin/${scriptName}";

  # The [Unit] section from the list options (systemd-lib.nix, unitConfig).
  unitSection =
    def:
    let
      list = opt: key: optionalAttrs ((def.${opt} or [ ]) != [ ]) { ${key} = toString def.${opt}; };
    in
    list "requires" "Requires"
    // list "wants" "Wants"
    // list "after" "After"
    // list "before" "Before"
    // list "bindsTo" "BindsTo"
    // list "partOf" "PartOf"
    // list "conflicts" "Conflicts"
    // optionalAttrs ((def.description or "") != "") { Description = def.description; }
    // (def.unitConfig or { });

  commonUnitText =
    def: lines:
    ''
      [Unit]
      ${attrsToSection (unitSection def)}
    ''
    + lines
    + optionalString ((def.wantedBy or [ ]) != [ ]) ''

      [Install]
      WantedBy=${concatStringsSep " " def.wantedBy}
    '';

  # serviceToUnit, with stage2ServiceConfig's default path and the scripts.
  serviceToUnit =
    name: def:
    let
      path = (def.path or [ ]) ++ [
        coreutils
        systemd
      ];
      env = (def.environment or { }) // {
        PATH = makeBinPath path;
      };
      serviceConfig =
        (def.serviceConfig or { })
        // optionalAttrs ((def.script or "") != "") { ExecStart = makeJobScript "${name}-start" def.script; }
        // optionalAttrs ((def.preStart or "") != "") { ExecStartPre = makeJobScript "${name}-pre-start" def.preStart; };
    in
    commonUnitText def (
      ''
        [Service]
      ''
      + concatStrings (map (n: "Environment=${builtins.toJSON "${n}=${env.${n}}"}\n") (attrNames env))
      + attrsToSection serviceConfig
    );

  sectionUnit = section: key: def: commonUnitText def ''
    [${section}]
    ${attrsToSection (def.${key} or { })}
  '';

  # makeUnit: a directory with the unit file, or a link to /dev/null.
  makeUnit =
    name: def: text:
    if def.enable or true then
      mkDrv "unit-${mkPathSafeName name}" ''
        mkdir -p "$out"
        printf '%s' "$text" > "$out/${name}"
      '' { inherit text; }
    else
      mkDrv "unit-${mkPathSafeName name}-disabled" ''
        mkdir -p "$out"
        ln -s /dev/null "$out/${name}"
      '' { };

  unitsOf =
    suffix: toText: defs:
    mapAttrsToList (n: def: {
      name = "${n}.${suffix}";
      inherit def;
      unit = makeUnit "${n}.${suffix}" def (if def.enable or true then toText n def else "");
      strategy = def.overrideStrategy or "asDropinIfExists";
    }) defs;
  units =
    unitsOf "service" serviceToUnit config.systemd.services
    ++ unitsOf "socket" (_: sectionUnit "Socket" "socketConfig") (config.systemd.sockets or { })
    ++ unitsOf "path" (_: sectionUnit "Path" "pathConfig") (config.systemd.paths or { })
    ++ unitsOf "slice" (_: sectionUnit "Slice" "sliceConfig") config.systemd.slices
    ++ unitsOf "target" (_: def: "[Unit]\n${attrsToSection (unitSection def)}") config.systemd.targets;

  # nixos/modules/system/boot/systemd.nix, upstreamSystemUnits for a
  # container (boot.isContainer: no udev trigger, no sys-kernel-config.mount;
  # services.udev.enable = false), less the units Debian's build of 262 with
  # hack/systemd-build's meson options does not have (no utmp, no vconsole,
  # no bootloader, no machined/importd/portabled, …: see README.md).
  upstreamSystemUnits = [
    "basic.target"
    "sysinit.target"
    "sockets.target"
    "exit.target"
    "graphical.target"
    "multi-user.target"
    "network.target"
    "network-pre.target"
    "network-online.target"
    "nss-lookup.target"
    "nss-user-lookup.target"
    "time-set.target"
    "time-sync.target"
    "first-boot-complete.target"
    "sigpwr.target"
    "timers.target"
    "paths.target"
    "rpcbind.target"
    "rescue.target"
    "rescue.service"
    "sound.target"
    "bluetooth.target"
    "printer.target"
    "smartcard.target"
    "systemd-modules-load.service"
    "kmod-static-nodes.service"
    "modprobe@.service"
    "local-fs.target"
    "local-fs-pre.target"
    "remote-fs.target"
    "remote-fs-pre.target"
    "swap.target"
    "dev-hugepages.mount"
    "dev-mqueue.mount"
    "sys-fs-fuse-connections.mount"
    "sys-kernel-debug.mount"
    "sys-kernel-tracing.mount"
    "systemd-random-seed.service"
    "systemd-pstore.service"
    "systemd-remount-fs.service"
    "boot-complete.target"
    "hibernate.target"
    "suspend.target"
    "suspend-then-hibernate.target"
    "sleep.target"
    "hybrid-sleep.target"
    "reboot.target"
    "systemd-reboot.service"
    "poweroff.target"
    "systemd-poweroff.service"
    "halt.target"
    "systemd-halt.service"
    "shutdown.target"
    "umount.target"
    "final.target"
    "kexec.target"
    "systemd-kexec.service"
    "soft-reboot.target"
    "systemd-soft-reboot.service"
    "systemd-ask-password-console.path"
    "systemd-ask-password-console.service"
    "systemd-ask-password-wall.path"
    "systemd-ask-password-wall.service"
    "slices.target"
    "systemd-sysctl.service"
    "systemd-machine-id-commit.service"
    "systemd-exit.service"
    "systemd-update-done.service"
    # journald.nix
    "systemd-journald.socket"
    "systemd-journald@.socket"
    "systemd-journald-varlink@.socket"
    "systemd-journald.service"
    "systemd-journald@.service"
    "systemd-journal-flush.service"
    "systemd-journal-catalog-update.service"
    "systemd-journald-sync@.service"
    "systemd-journald-audit.socket"
    "systemd-journald-dev-log.socket"
    "syslog.socket"
    # tmpfiles.nix
    "systemd-tmpfiles-clean.service"
    "systemd-tmpfiles-clean.timer"
    "systemd-tmpfiles-setup.service"
    "systemd-tmpfiles-setup-dev.service"
    "systemd-tmpfiles-setup-dev-early.service"
  ];
  upstreamSystemWants = [
    "sysinit.target.wants"
    "sockets.target.wants"
    "local-fs.target.wants"
    "multi-user.target.wants"
    "timers.target.wants"
  ];

  # generateUnits: /etc/systemd/system.
  systemUnits = mkDrv "system-units" ''
    mkdir -p "$out"
    up=${systemd}/example/systemd/system
    # The upstream units we want (a missing one is an error, as in NixOS).
    for i in ${toString upstreamSystemUnits}; do
      fn=$up/$i
      [ -e "$fn" ] || { echo "missing $fn"; exit 1; }
      if [ -L "$fn" ]; then cp -P "$fn" "$out/"; else ln -s "$fn" "$out/"; fi
    done
    # Their .wants links, only those to units we have.
    for i in ${toString upstreamSystemWants}; do
      fn=$up/$i
      [ -e "$fn" ] || { echo "missing $fn"; exit 1; }
      x=$out/$i
      mkdir "$x"
      for w in "$fn"/*; do
        [ -e "$w" ] || [ -L "$w" ] || continue
        y=$x/$(basename "$w")
        cp -P "$w" "$y"
        [ -e "$out/$(basename "$w")" ] || rm "$y"
      done
    done
    # The configuration's units: drop-ins where upstream has the unit,
    # /dev/null links (masks) replace it.
    ${concatStrings (
      map (u: ''
        fn=${u.name}
        i=${u.unit}
        if [ ${u.strategy} = asDropin ]; then
          mkdir -p "$out/$fn.d"
          ln -s "$i/$fn" "$out/$fn.d/overrides.conf"
        elif [ -e "$out/$fn" ] || [ -L "$out/$fn" ]; then
          if [ "$(readlink "$i/$fn")" = /dev/null ]; then
            ln -sfn /dev/null "$out/$fn"
          else
            mkdir -p "$out/$fn.d"
            ln -s "$i/$fn" "$out/$fn.d/overrides.conf"
          fi
        else
          ln -fs "$i/$fn" "$out/"
        fi
      '') units
    )}
    # wantedBy
    ${concatStrings (
      concatMap (
        u:
        map (t: ''
          mkdir -p "$out/${t}.wants"
          ln -sfn "../${u.name}" "$out/${t}.wants/"
        '') (if u.def.enable or true then u.def.wantedBy or [ ] else [ ])
      ) units
    )}
    ln -s ${config.systemd.defaultUnit} "$out/default.target"
    ln -s ${config.systemd.ctrlAltDelUnit} "$out/ctrl-alt-del.target"
    ln -s rescue.target "$out/kbrequest.target"
    ln -sfn ../remote-fs.target "$out/multi-user.target.wants/"
  '' { };

  # --------------------------------------------------------------------- etc
  # environment.etc: nixos/modules/system/etc/etc.nix
  # systemd.managerEnvironment (its PATH is util-linux and the file system
  # tools, which this system does not have).
  managerEnvironment = {
    TZDIR = "/etc/zoneinfo";
  };
  settingsToSections =
    sections:
    concatStrings (mapAttrsToList (name: as: "[${name}]\n${attrsToSection as}\n") sections);
  etcEntries = {
    "systemd/system".source = systemUnits;
    "systemd/system.conf".text = settingsToSections {
      Manager = config.systemd.settings.Manager // {
        ManagerEnvironment = concatStringsSep " " (mapAttrsToList (n: v: "${n}='${v}'") managerEnvironment);
      };
    };
    # journald.nix: Storage=persistent is NixOS's journald default.
    "systemd/journald.conf".text = settingsToSections { Journal.Storage = "persistent"; };
    "systemd/system-preset/00-nixos.preset".text = "ignore *\n";
    "os-release".text = ''
      NAME="nixos2docker systemd example"
      ID=nixos2docker-example
      ID_LIKE=nixos
      PRETTY_NAME="nixos2docker systemd example (NixOS-shaped, systemd ${systemd.name})"
    '';
    # nixos/modules/config/nsswitch.nix with the image's system.nssModules = [ ]
    # (glibc's built-in files and dns; the systemd entries load nothing).
    "nsswitch.conf".text = ''
      passwd:    files systemd
      group:     files [success=merge] systemd
      shadow:    files
      sudoers:   files
      hosts:     mymachines files myhostname dns
      networks:  files
      ethers:    files
      services:  files
      protocols: files
      rpc:       files
    '';
    "shells".text = "/run/current-system/sw/bin/bash\n/run/current-system/sw/bin/sh\n";
    # nixos/modules/system/boot/systemd/tmpfiles.nix: systemd's own tmpfiles.d.
  }
  // listToAttrs (
    map
      (f: {
        name = "tmpfiles.d/${f}";
        value.source = "${systemd}/example/tmpfiles.d/${f}";
      })
      [
        "home.conf"
        "journal-nocow.conf"
        "systemd.conf"
        "systemd-nologin.conf"
        "systemd-tmp.conf"
        "tmp.conf"
        "var.conf"
      ]
  )
  // config.environment.etc;

  etcSource =
    target: e:
    if e ? source then e.source else writeText "etc-${builtins.baseNameOf target}" e.text;
  # make-etc.sh
  etc = mkDrv "etc" ''
    mkdir -p "$out/etc"
    ${concatStrings (
      mapAttrsToList (target: e: ''
        mkdir -p "$out/etc/$(dirname ${target})"
        ln -s ${etcSource target e} "$out/etc/${target}"
        ${optionalString ((e.mode or "symlink") != "symlink") ''
          echo ${e.mode} > "$out/etc/${target}.mode"
          echo ${e.user or "+0"} > "$out/etc/${target}.uid"
          echo ${e.group or "+0"} > "$out/etc/${target}.gid"
        ''}
      '') etcEntries
    )}
  '' { };

  # ------------------------------------------------------------ system path
  # environment.systemPackages: nixos/modules/config/system-path.nix (buildEnv)
  systemPackages = [
    bash
    coreutils
    systemd
  ]
  ++ config.environment.systemPackages;
  systemPath = mkDrv "system-path" ''
    mkdir -p "$out/bin"
    for p in ${toString systemPackages}; do
      for f in "$p"/bin/*; do
        [ -e "$out/bin/$(basename "$f")" ] || ln -s "$f" "$out/bin/"
      done
    done
    ln -s bash "$out/bin/sh"
  '' { };

  # -------------------------------------------------------------- activation
  # nixos/modules/system/activation/activation-script.nix: the script that
  # makes /etc, the users and /run/current-system; @out@ is the toplevel.
  userLine =
    n: u:
    "${n}:x:${toString u.uid}:${toString config.users.groups.${u.group}.gid}:${u.description or ""}:${u.home}:${u.shell}";
  groupLine =
    n: g:
    "${n}:x:${toString g.gid}:${concatStringsSep "," (filter (u: (config.users.users.${u}.extraGroups or [ ]) != [ ] && builtins.elem n config.users.users.${u}.extraGroups) (attrNames config.users.users))}";
  passwd = concatStringsSep "\n" (mapAttrsToList userLine config.users.users) + "\n";
  group = concatStringsSep "\n" (mapAttrsToList groupLine config.users.groups) + "\n";
  shadow = concatStringsSep "\n" (map (n: "${n}:!:1::::::") (attrNames config.users.users)) + "\n";

  activate = writeText "activate" ''
    #!${runtimeShell}
    systemConfig='@out@'
    export PATH=/empty
    for i in ${coreutils}; do PATH=$PATH:$i/bin; done
    _status=0
    trap "_status=1 _localstatus=\$?" ERR
    umask 0022

    # users: nixos/modules/config/update-users-groups.pl writes these files
    # (static UIDs and GIDs here; nothing to merge with on a first boot).
    cat > /etc/passwd <<'EOF'
    ${passwd}EOF
    cat > /etc/group <<'EOF'
    ${group}EOF
    cat > /etc/shadow <<'EOF'
    ${shadow}EOF
    chmod 0644 /etc/passwd /etc/group
    chmod 0600 /etc/shadow

    # etc: nixos/modules/system/etc/setup-etc.pl. /etc/static points at this
    # system's etc; every file there gets a link /etc/NAME -> /etc/static/NAME
    # (a copy where it has a .mode), links into an old /etc/static that this
    # one lacks are removed.
    etc=$(readlink -f "$systemConfig/etc")
    ln -sfn "$etc" /etc/.static.tmp && mv -T /etc/.static.tmp /etc/static
    cleanup() {
      local f t
      for f in "$1"/* "$1"/.[!.]*; do
        if [ -L "$f" ]; then
          t=$(readlink "$f")
          case $t in /etc/static/*) [ -L "$t" ] || { echo "removing obsolete symlink $f..."; rm -f "$f"; } ;; esac
        elif [ -d "$f" ]; then
          cleanup "$f"
        fi
      done
    }
    cleanup /etc
    link() {
      local src=$1 rel=$2 f name target
      for f in "$src"/* "$src"/.[!.]*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        name=''${f##*/}
        case $name in *.mode | *.uid | *.gid) continue ;; esac
        target=/etc/$rel$name
        if [ -e "$f.mode" ]; then
          cp "/etc/static/$rel$name" "$target.tmp"
          chown "$(cat "$f.uid" | tr -d +)":"$(cat "$f.gid" | tr -d +)" "$target.tmp"
          chmod "$(cat "$f.mode")" "$target.tmp"
          mv -f "$target.tmp" "$target"
        elif [ -L "$f" ]; then
          [ -d "$target" ] && [ ! -L "$target" ] && rm -rf "$target"
          ln -sfn "/etc/static/$rel$name" "$target.tmp" && mv -Tf "$target.tmp" "$target"
        elif [ -d "$f" ]; then
          mkdir -p "$target"
          link "$f" "$rel$name/"
        fi
      done
    }
    link "$etc" ""
    : >> /etc/NIXOS

    # usrbinenv: /usr/bin/env for scripts' #! lines (also in the skeleton).
    mkdir -m 0755 -p /usr/bin
    ln -sfn ${coreutils}/bin/env /usr/bin/.env.tmp && mv -Tf /usr/bin/.env.tmp /usr/bin/env

    # Not in NixOS: Debian's systemd execs systemd-shutdown (and pins
    # systemd-executor, runs generators) at the /usr/lib/systemd compiled into
    # it, where NixOS's systemd has its own store path compiled in.
    mkdir -m 0755 -p /usr/lib
    ln -sfn ${systemd}/lib/systemd /usr/lib/.systemd.tmp && mv -Tf /usr/lib/.systemd.tmp /usr/lib/systemd

    # var, nix: the directories the activation creates.
    mkdir -m 0755 -p /var/lib /var/log /var/cache /var/db /nix/var/nix/gcroots
    mkdir -m 1777 -p /var/tmp

    # Not in NixOS: a machine ID before systemd starts. Without one systemd
    # writes "uninitialized" to /etc/machine-id and bind-mounts a transient
    # ID over it, which fails without CAP_SYS_ADMIN: the ID stays unreadable
    # (journal directory, %m specifiers). Each container gets its own,
    # kept in its writable layer.
    if [ ! -s /etc/machine-id ] || [ "$(cat /etc/machine-id)" = uninitialized ]; then
      rm -f /etc/machine-id
      ${systemd}/bin/systemd-machine-id-setup
    fi

    # Make this configuration the current configuration.
    ln -sfn "$(readlink -f "$systemConfig")" /run/current-system

    exit $_status
  '';

  # nixos/modules/system/boot/stage-2-init.sh, for a container (no mounts, no
  # store remount: Docker provides /proc, /sys, /dev, /run).
  init = writeText "stage-2-init" ''
    #!${runtimeShell}
    systemConfig='@out@'
    export HOME=/root
    export PATH=/empty:${coreutils}/bin

    echo
    echo "<<< nixos2docker example: NixOS-shaped stage 2 >>>"
    echo

    mkdir -m 0755 -p /etc
    test -e /etc/fstab || touch /etc/fstab
    rm -f /etc/mtab*
    ln -s /proc/mounts /etc/mtab

    mkdir -m 01777 -p /tmp
    mkdir -m 0755 -p /var /var/log /var/lib /var/db
    mkdir -m 0755 -p /nix/var
    mkdir -m 0700 -p /root
    chmod 0700 /root
    mkdir -m 0755 -p /bin
    mkdir -m 0755 -p /home
    mkdir -m 0755 -p /run/lock
    rm -rf /var/run /var/lock
    ln -s /run /var/run
    ln -s /run/lock /var/lock

    echo "running activation script..."
    "$systemConfig/activate"

    ln -sfn "$systemConfig" /run/booted-system

    echo "starting systemd..."
    PATH=/run/current-system/systemd/lib/systemd exec systemd
  '';

  version = "26.05-example";
  # nixos/modules/system/activation/top-level.nix
  toplevel = mkDrv "nixos-system-${hostName}-${version}" ''
    mkdir -p "$out"
    sed "s|@out@|$out|g" ${init} > "$out/init"
    sed "s|@out@|$out|g" ${activate} > "$out/activate"
    chmod 0555 "$out/init" "$out/activate"
    ln -s ${etc}/etc "$out/etc"
    ln -s ${systemPath} "$out/sw"
    ln -s ${systemd} "$out/systemd"
    echo -n ${version} > "$out/nixos-version"
    echo -n systemd > "$out/init-interface-version"
    echo -n ${system} > "$out/system"
  '' { };

  # -------------------------------------------------------------- the image
  # nixos/docker-container.nix: the spec, with the module's image config.
  dockerImageSpec = imageSpec {
    inherit system toplevel;
    shell = "${busybox}/bin/sh";
    path = [ busybox ];
    imageName = imageName;
    imageTag = dockerImage.tag;
    maxLayers = dockerImage.maxLayers;
    config = imageConfig {
      inherit toplevel;
      name = imageName;
      inherit (dockerImage)
        env
        labels
        exposedPorts
        volumes
        healthcheck
        ;
    };
    name = "docker-image-spec-${builtins.replaceStrings [ "/" ":" ] [ "-" "-" ] imageName}.json";
  };
in
{
  config = config // {
    system.build = {
      inherit toplevel dockerImageSpec etc;
      units = systemUnits;
    };
  };
  inherit pkgs;
  parts = {
    inherit
      busybox
      systemPath
      activate
      init
      ;
    inherit (debian) unpacked libs;
  };
}
