# The Docker image config (the docker-image-spec type: Docker's superset of
# OCI's image config, with Healthcheck; durations in nanoseconds) of a
# nixos2docker image: the one writer of it, shared by the NixOS module
# (../docker-container.nix) and the examples that build a NixOS-shaped system
# without nixpkgs (examples/systemd). Pure Nix, builtins only.
#
#   import ./image-config.nix {
#     toplevel;                 # the system; its init is PID 1
#     name;                     # image name (the title label)
#     env ? { };                # more Env; a PATH here replaces the default
#     labels ? { };  exposedPorts ? [ "80" "53/udp" ];  volumes ? [ "/var/lib/x" ];
#     healthcheck ? { enable = true; interval = 30; startPeriod = 60; startInterval = 2; };  # seconds
#   }
{
  toplevel,
  name,
  env ? { },
  labels ? { },
  exposedPorts ? [ ],
  volumes ? [ ],
  healthcheck ? { },
}:
let
  hc = {
    enable = true;
    interval = 30;
    startPeriod = 60;
    startInterval = 2;
  }
  // healthcheck;

  # docker exec uses the image's Env: the same PATH a NixOS login shell has
  # (nixos/modules/config/shells-environment.nix), so `docker exec C systemctl …`
  # works without -e PATH.
  path = builtins.concatStringsSep ":" [
    "/run/wrappers/bin"
    "/root/.nix-profile/bin"
    "/nix/profile/bin"
    "/nix/var/nix/profiles/default/bin"
    "/run/current-system/sw/bin"
  ];
  envAttrs = {
    container = "docker";
    PATH = path;
  }
  // env;
  # container first: PID 1 reads it to detect the container manager.
  envList = [ "container=${envAttrs.container}" ] ++ map (n: "${n}=${envAttrs.${n}}") (
    builtins.attrNames (removeAttrs envAttrs [ "container" ])
  );

  portKey = p: if builtins.match ".*/.*" p != null then p else "${p}/tcp";
  emptyObjects = names: builtins.listToAttrs (map (n: { name = n; value = { }; }) names);
  seconds = s: s * 1000000000;
in
{
  Entrypoint = [ "${toplevel}/init" ];
  Env = envList;
  # systemd powers off on SIGRTMIN+3; Docker, containerd and Podman honour
  # StopSignal (the patched systemd also treats SIGTERM as poweroff).
  StopSignal = "SIGRTMIN+3";
  Labels = {
    "org.opencontainers.image.title" = name;
  }
  // labels;
  ExposedPorts = emptyObjects (map portKey exposedPorts);
  Volumes = emptyObjects volumes;
}
// (
  if hc.enable then
    {
      # healthy once the boot finished with no failed unit.
      Healthcheck = {
        Test = [
          "CMD"
          "/run/current-system/sw/bin/systemctl"
          "is-system-running"
        ];
        Interval = seconds hc.interval;
        Timeout = seconds 10;
        StartPeriod = seconds hc.startPeriod;
        # Docker >= 25 checks this often during StartPeriod, so a booted
        # container is reported healthy within seconds, not after Interval.
        StartInterval = seconds hc.startInterval;
        Retries = 3;
      };
    }
  else
    { }
)
