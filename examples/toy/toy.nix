# The toy system for one Nix system. Shaped like the interface of a NixOS
# configuration: config.system.build.{toplevel,dockerImageSpec}, plus `parts`
# (every derivation by name) for tests.
#
# The closure has what the image code must handle: references between paths,
# a multi-output derivation whose both outputs are referenced, a build-time-only
# dependency (used while building toy-app, not referenced by anything), a
# 64 MiB blob, a path that enters only through extraContents, and an init that
# runs as PID 1 and exits 0 on SIGRTMIN+3 and SIGTERM. The text of toy-message
# is examples/toy/message.txt: change that file to change one derivation.
#
# Grown to a NixOS-sized closure when examples/toy/scale.json exists (hack/bench
# --scale writes it into its copy of the build context; it is never committed):
# {"paths": [{"size": BYTES, "refs": [INDEX, …]}, …]} adds one toy-data-K path
# per entry, holding BYTES of random data and referencing the earlier entries
# it lists; the toplevel references those no entry references. Random data
# makes the closure incompressible, as a system's binaries mostly are; its
# bytes differ between builds (paths are input-addressed: only a cold store
# rebuilds them).
{ system }:
let
  imageSpec = import ../../nixos/lib/image-spec.nix;

  # Debian's busybox-static enters the store by copy: the only step that
  # reads the host (hence `sandbox = false`), and the only builder not
  # from the store.
  busybox = derivation {
    name = "toy-busybox";
    inherit system;
    builder = "/bin/sh";
    args = [
      "-ec"
      ''
        /bin/busybox mkdir -p "$out/bin"
        /bin/busybox cp /bin/busybox "$out/bin/busybox"
        for applet in sh env cat cp dd echo head kill ln mkdir chmod sed sleep true yes; do
          /bin/busybox ln -s busybox "$out/bin/$applet"
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

  # Two outputs, both referenced by toy-app.
  lib = mkDrv "toy-lib" ''
    mkdir -p "$out/lib" "$doc/share/doc"
    echo "toy library, run by ${busybox}/bin/sh" > "$out/lib/libtoy.txt"
    echo "toy library documentation" > "$doc/share/doc/README"
  '' { outputs = [ "out" "doc" ]; };

  message = mkDrv "toy-message" ''
    printf '%s' "$text" > "$out"
  '' { text = builtins.readFile ./message.txt; };

  # Build-time only: toy-app runs it while building; its output does not
  # mention this path, so it is not in the closure.
  buildtool = mkDrv "toy-buildtool" ''
    mkdir -p "$out/bin"
    printf '#!%s\necho "generated at build time"\n' "${busybox}/bin/sh" > "$out/bin/toy-gen"
    chmod +x "$out/bin/toy-gen"
  '' { };

  app = mkDrv "toy-app" ''
    mkdir -p "$out/bin" "$out/share"
    ${buildtool}/bin/toy-gen > "$out/share/generated.txt"
    cat > "$out/bin/toy-hello" <<EOS
    #!${busybox}/bin/sh
    cat ${message}
    echo "lib: ${lib}/lib/libtoy.txt, doc: ${lib.doc}/share/doc/README"
    EOS
    chmod +x "$out/bin/toy-hello"
  '' { };

  # 64 MiB, deterministic, not all zeros.
  blob = mkDrv "toy-blob" ''
    yes "nixos2docker toy blob" | head -c 67108864 > "$out"
  '' { };

  scale = if builtins.pathExists ./scale.json then builtins.fromJSON (builtins.readFile ./scale.json) else null;
  # toy-data-K for scale entry K, in order (each refers only to earlier ones).
  scaled =
    if scale == null then
      [ ]
    else
      builtins.foldl' (
        done: entry:
        let
          k = builtins.length done;
          refs = map (r: builtins.elemAt done r) entry.refs;
        in
        done
        ++ [
          (mkDrv "toy-data-${toString k}" ''
            mkdir -p "$out"
            head -c ${toString entry.size} /dev/urandom > "$out/data"
            for r in $refs; do echo "$r"; done > "$out/refs"
          '' { inherit refs; })
        ]
      ) [ ] scale.paths;
  # The scaled paths no other scaled path references: the toplevel's.
  scaledTops =
    let
      referenced = builtins.concatLists (map (e: e.refs) scale.paths);
      indices = builtins.genList (k: k) (builtins.length scaled);
    in
    map (k: builtins.elemAt scaled k) (builtins.filter (k: !(builtins.elem k referenced)) indices);
  # One ln for all of them: a process per link (250 at 600 paths) made the
  # toplevel's build, not the image, most of a one-change rebuild's time.
  linkScaled = "ln -s ${builtins.concatStringsSep " " (map toString scaledTops)} \"$out/data/\"\n";

  # In the image only through extraContents.
  extra = mkDrv "toy-extra" ''
    echo "extra contents" > "$out"
  '' { };

  toplevel = mkDrv "toy-system" (
    ''
      mkdir -p "$out/sw/bin" "$out/etc"
      ln -s ${busybox}/bin/sh "$out/sw/bin/sh"
      ln -s ${busybox}/bin/env "$out/sw/bin/env"
      ln -s ${busybox}/bin/cat "$out/sw/bin/cat"
      ln -s ${app}/bin/toy-hello "$out/sw/bin/toy-hello"
      ln -s ${blob} "$out/blob"
      echo 'ID=toy' > "$out/etc/os-release"
    ''
    + (if scale == null then "" else "mkdir -p \"$out/data\"\n" + linkScaled)
    + ''
      # PID 1 ignores signals it has no handler for: trap SIGTERM and
      # SIGRTMIN+3 (37 on Linux), set before the start line, and wait on a
      # background sleep so the trap runs as soon as the signal arrives.
      cat > "$out/init" <<EOS
      #!${busybox}/bin/sh
      child=
      trap 'echo "toy init: stopping"; [ -z "\$child" ] || kill "\$child" 2>/dev/null; exit 0' TERM 37
      echo "toy init: started"
      ${app}/bin/toy-hello
      while :; do
        ${busybox}/bin/sleep 3600 &
        child=\$!
        wait "\$child"
      done
      EOS
      chmod +x "$out/init"
    ''
  ) { };

  dockerImageSpec = imageSpec {
    inherit system toplevel;
    shell = "${busybox}/bin/sh";
    path = [ busybox ];
    extraContents = [ extra ];
    imageName = "toy";
    imageTag = "latest";
    maxLayers = 125;
    config = {
      Entrypoint = [ "${toplevel}/init" ];
      Env = [
        "container=docker"
        "PATH=${toplevel}/sw/bin"
      ];
      StopSignal = "SIGRTMIN+3";
      Labels."org.opencontainers.image.title" = "toy";
    };
    # As the NixOS module does for a system with Nix (NixOS's default): the
    # image carries the closure's registration for the Nix database. The toy
    # has no Nix to load it; the tests load it with the host's.
    nixRegistration = "/nix/var/nix/nixos2docker-registration";
  };
in
{
  config.system.build = {
    inherit toplevel dockerImageSpec;
  };
  parts = {
    inherit
      busybox
      lib
      message
      buildtool
      app
      blob
      extra
      toplevel
      ;
  };
}
