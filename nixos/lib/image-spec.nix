# The image-spec derivation: the only writer of the image spec (version 1),
# whose only reader is the Go package imagespec.
#
# The derivation's own structured attributes ARE the spec: with
# __structuredAttrs, Nix writes every attribute to .attrs.json and replaces
# the exportReferencesGraph key "closure" with the closure's path info
# (path, narHash, narSize, references), so the builder only copies that file
# to $out. Nothing is parsed or generated at build time.
#
# It needs nothing from nixpkgs (plain `derivation`, builtins only, no builtin
# newer than Nix 2.8), so it is used both by the NixOS module (with pkgs) and
# by the toy example (a busybox builder, no nixpkgs).
#
#   import ./image-spec.nix {
#     system       = "x86_64-linux";
#     shell        = "${busybox}/bin/sh";       # any POSIX sh
#     path         = [ busybox ];               # provide cp, sed, mkdir ("<p>/bin" go on PATH)
#     toplevel     = <store path>;              # the system; its closure is the image
#     extraContents = [ ];                      # more store paths for the image
#     imageName    = "web";  imageTag = "latest";  maxLayers = 125;
#     config       = { Entrypoint = [ ... ]; Env = [ ... ]; ... };  # Docker image config
#     skeleton     = null;                      # null: defaultSkeleton of ./image-spec-lib.nix
#     binSh        = "${toplevel}/sw/bin/sh";   # target of /bin/sh in the default skeleton
#     usrBinEnv    = "${toplevel}/sw/bin/env";  # target of /usr/bin/env in it
#     nixRegistration = null;                   # or an absolute path: where the image gets the
#                                               # closure's Nix registration (nix-store --load-db)
#   }
#
# The spec version and the default root skeleton live in ./image-spec-lib.nix
# (also used by the module and the tests).
{
  system,
  shell,
  path,
  toplevel,
  extraContents ? [ ],
  imageName,
  imageTag ? "latest",
  maxLayers ? 125,
  config,
  skeleton ? null,
  binSh ? "${toplevel}/sw/bin/sh",
  usrBinEnv ? "${toplevel}/sw/bin/env",
  nixRegistration ? null,
  name ? "docker-image-spec.json",
}:

let
  specLib = import ./image-spec-lib.nix;

  checked =
    if !(builtins.isInt maxLayers) || maxLayers < 2 || maxLayers > 125 then
      throw "nixos2docker image spec: maxLayers must be an integer from 2 (one layer for the root skeleton, at least one for the store) to 125 (Docker's overlay2 refuses deeper images), got ${builtins.toJSON maxLayers}"
    else if imageName == "" then
      throw "nixos2docker image spec: imageName must not be empty"
    else if imageTag == "" then
      throw "nixos2docker image spec: imageTag must not be empty"
    else if !(config ? Entrypoint) && !(config ? Cmd) then
      throw "nixos2docker image spec: config needs an Entrypoint or a Cmd"
    else if nixRegistration != null && (builtins.substring 0 1 nixRegistration != "/" || builtins.substring 0 11 nixRegistration == "/nix/store/") then
      throw "nixos2docker image spec: nixRegistration must be an absolute path outside /nix/store, got ${builtins.toJSON nixRegistration}"
    else
      true;

  pathVar = builtins.concatStringsSep ":" (map (p: "${p}/bin") path);
in
assert checked;
derivation ({
  inherit name system;
  builder = shell;
  __structuredAttrs = true;

  # The spec (see imagespec/imagespec.go for every field).
  version = specLib.version;
  inherit
    imageName
    imageTag
    maxLayers
    config
    ;
  toplevel = "${toplevel}";
  skeleton = if skeleton == null then specLib.defaultSkeleton { inherit toplevel binSh usrBinEnv; } else skeleton;
  # Nix puts the closure's path info here, under the same key.
  exportReferencesGraph.closure = [ toplevel ] ++ extraContents;

  # Attributes are not exported as environment variables with structured
  # attrs, and Nix 2.8 (Debian bookworm) exports no $out either: read the
  # output path from .attrs.sh (`declare -A outputs=(['out']='/nix/store/…' )`),
  # else from the JSON. Nix >= 2.19 names both files in NIX_ATTRS_*_FILE;
  # Nix 2.8 leaves them in the build directory.
  args = [
    "-ec"
    ''
      PATH=${pathVar}
      json=''${NIX_ATTRS_JSON_FILE:-$NIX_BUILD_TOP/.attrs.json}
      sh=''${NIX_ATTRS_SH_FILE:-$NIX_BUILD_TOP/.attrs.sh}
      out=
      if [ -f "$sh" ]; then
        out=$(sed -n "s|.*\\['out'\\]='\\([^']*\\)'.*|\\1|p" "$sh")
      fi
      if [ -z "$out" ]; then
        out=$(sed -n 's|.*"outputs" *: *{ *"out" *: *"\([^"]*\)".*|\1|p' "$json")
      fi
      case $out in
        /*) ;;
        *) echo "image-spec: cannot find the output path in $sh or $json" >&2; exit 1 ;;
      esac
      cp "$json" "$out"
    ''
  ];
}
# Where the assembler writes the closure's Nix registration (the format of
# nix-store --dump-db/--load-db: path, narHash, narSize, an empty deriver,
# the number of references, the references; from "closure" below), absent
# for an image without Nix.
// (if nixRegistration == null then { } else { inherit nixRegistration; }))
