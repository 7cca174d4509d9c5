# A stand-in for nixpkgs' `pkgs` with the few attributes the modules use;
# derivations are instantiated, never built. See nixos-options-stub.nix.
# With `tools` (a store path with bin/sh, cp, sed: the toy's busybox), the
# shell and tools the image-spec derivation uses are real, so the module's
# spec can be built.
{ system ? "x86_64-linux", systemdVersion ? "262.1", tools ? null }:
let
  stubDrv = name: extra: derivation ({
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" "echo stub > $out" ];
  } // extra);
  # Like nixpkgs' systemd: version, patches, overrideAttrs.
  mkSystemd = version: patches:
    stubDrv "systemd-${version}" { inherit version patches; }
    // {
      inherit version patches;
      overrideAttrs = f: mkSystemd version (f { inherit version patches; }).patches;
    };
in
{
  stdenv.hostPlatform.system = system;
  runtimeShell = if tools == null then "/bin/sh" else "${tools}/bin/sh";
  coreutils = if tools == null then stubDrv "coreutils" { } else tools;
  gnused = if tools == null then stubDrv "gnused" { } else tools;
  systemd = mkSystemd systemdVersion [ ];
  nix = stubDrv "nix-2.31.2" { };
  inherit mkSystemd;
  # With tools: a real runCommand (sh -ec SCRIPT, PATH from nativeBuildInputs).
  runCommand =
    name: env: script:
    if tools == null then
      stubDrv name (env // { buildCommand = script; })
    else
      derivation (
        removeAttrs env [ "nativeBuildInputs" ]
        // {
          inherit name system;
          builder = "${tools}/bin/sh";
          args = [ "-ec" script ];
          PATH = builtins.concatStringsSep ":" (map (p: "${p}/bin") ((env.nativeBuildInputs or [ ]) ++ [ tools ]));
        }
      );
  callPackage = _fn: _args: stubDrv "nixos2docker-stub" { };
}
