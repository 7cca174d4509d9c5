# systemd patched for Docker's unprivileged default container: the series in
# patches/systemd/<major>/series, applied in order, chosen by the major version
# of the systemd package given. An unsupported version fails evaluation with a
# message naming the supported ones.
#
# Used by the Docker variant (docker-container.nix: only the variant's
# systemd.package is patched) and by the flake's overlays.default.
#
#   let sp = import ./systemd-patches.nix { inherit lib; }; in
#   sp.supported               # [ "262" … ]: majors with a series file
#   sp.patchesFor "262"        # the series as a list of paths
#   sp.check systemd           # its major version if supported, else a throw
#   sp.isPatched systemd       # whether its patches already hold its major's series
#   sp.patch systemd           # systemd with its series applied (or a throw);
#                              # unchanged if already patched (e.g. by overlays.default)
#
# Point releases: the series is chosen by the major version alone, so 262.1
# gets 262's series. That is only sound while the series applies to the point
# release exactly; hack/systemd-patches-check checks each series against every
# point release at hand with fuzz 0 (nixpkgs' patchPhase would accept fuzz).
{
  lib,
  patchesDir ? ../../patches/systemd,
}:
let
  entries = if builtins.pathExists patchesDir then builtins.readDir patchesDir else { };

  # A version is supported once its directory has a series file (an empty
  # series is allowed: the stock systemd of that version needs nothing).
  supported = lib.sort lib.versionOlder (
    lib.filter (n: entries.${n} == "directory" && builtins.pathExists (patchesDir + "/${n}/series")) (
      lib.attrNames entries
    )
  );

  # One patch file name per line; blank lines and # comments are skipped.
  patchesFor =
    major:
    let
      lines = lib.splitString "\n" (builtins.readFile (patchesDir + "/${major}/series"));
      names = lib.filter (l: l != "" && !(lib.hasPrefix "#" l)) (map lib.trim lines);
    in
    map (n: patchesDir + "/${major}/${n}") names;

  majorOf = systemd: lib.versions.major (lib.getVersion systemd);

  check =
    systemd:
    let
      major = majorOf systemd;
    in
    if lib.elem major supported then
      major
    else
      throw ''
        nixos2docker: systemd ${lib.getVersion systemd} (the systemd.package of the Docker variant) is not supported.
        Supported systemd major versions: ${
          if supported == [ ] then "none (patches/systemd is empty)" else lib.concatStringsSep ", " supported
        } (patches/systemd/<major>/series).
        Use a nixpkgs whose systemd has one of these major versions, or set
        virtualisation.dockerImage.patchSystemd = false (the image then needs a privileged or
        writable-cgroups container).'';

  # By file name: a series patch counts as applied when a patch of the
  # package ends with its name (a path, or a store path "<hash>-<name>").
  isPatched =
    systemd:
    let
      names = map (p: baseNameOf (toString p)) (systemd.patches or [ ]);
    in
    lib.all (p: lib.any (lib.hasSuffix (baseNameOf (toString p))) names) (patchesFor (check systemd));

  patch =
    systemd:
    let
      patches = patchesFor (check systemd);
    in
    if patches == [ ] || isPatched systemd then
      systemd
    else
      systemd.overrideAttrs (old: {
        patches = (old.patches or [ ]) ++ patches;
      });
in
{
  inherit
    supported
    patchesFor
    majorOf
    check
    isPatched
    patch
    ;
}
