# A stand-in for nixpkgs' `pkgs` with the few attributes the modules use;
# derivations are instantiated, never built. See nixos-options-stub.nix.
{ system ? "x86_64-linux", systemdVersion ? "262.1" }:
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
  runtimeShell = "/bin/sh";
  coreutils = stubDrv "coreutils" { };
  gnused = stubDrv "gnused" { };
  systemd = mkSystemd systemdVersion [ ];
  inherit mkSystemd;
  runCommand = name: env: script: stubDrv name (env // { buildCommand = script; });
  callPackage = _fn: _args: stubDrv "nixos2docker-stub" { };
}
