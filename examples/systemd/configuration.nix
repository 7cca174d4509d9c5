# The system's configuration, written with NixOS option names: the subset
# ./system.nix implements (there is no module system without nixpkgs' lib:
# this is one plain attribute set, merged over ./system.nix's defaults).
# `pkgs` has what this example can build: bash, coreutils, systemd.
{ pkgs, ... }:
{
  networking.hostName = "nixos2docker-systemd";

  # A service that prints a line and keeps running: its line is in
  # `docker logs` (DefaultStandardOutput=tty, nixos/lib/container-units.nix).
  systemd.services.n2d-hello = {
    description = "nixos2docker example: prints a line and keeps running";
    wantedBy = [ "multi-user.target" ];
    # Type=exec: active only once the command really runs.
    serviceConfig.Type = "exec";
    script = ''
      echo "NIXOS2DOCKER-EXAMPLE-HELLO from $(${pkgs.systemd}/bin/systemctl --version | head -n1)"
      exec sleep infinity
    '';
  };

  # Typical NixOS hardening. Without CAP_SYS_ADMIN there is no mount
  # namespace: ProtectSystem=, PrivateTmp=, ProtectHome= are not applied
  # (the journal says so); NoNewPrivileges=, the capability bounding set and
  # the seccomp filters are.
  systemd.services.n2d-hardened = {
    description = "nixos2docker example: typical NixOS hardening";
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      Type = "exec";
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      NoNewPrivileges = true;
      CapabilityBoundingSet = "";
      RestrictSUIDSGID = true;
      LockPersonality = true;
      SystemCallArchitectures = "native";
      SystemCallFilter = [ "@system-service" ];
    };
    script = ''
      echo ok > /tmp/probe
      nnp=
      while read -r key value; do
        if [ "$key" = NoNewPrivs: ]; then nnp=$value; fi
      done < /proc/self/status
      echo "NIXOS2DOCKER-EXAMPLE-HARDENED NoNewPrivs=$nnp private tmp $(cat /tmp/probe)"
      exec sleep infinity
    '';
  };

  # DynamicUser=: runs as a dynamic UID (patch 0007), its StateDirectory= a
  # plain directory owned by it.
  systemd.services.n2d-dynamic = {
    description = "nixos2docker example: DynamicUser";
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      Type = "exec";
      DynamicUser = true;
      StateDirectory = "n2d-dynamic";
    };
    script = ''
      echo ok > "$STATE_DIRECTORY/probe"
      echo "NIXOS2DOCKER-EXAMPLE-DYNAMIC uid $(id -u) state $STATE_DIRECTORY $(cat "$STATE_DIRECTORY/probe")"
      exec sleep infinity
    '';
  };

  virtualisation.dockerImage = {
    name = "nixos2docker/systemd-example";
    labels."org.opencontainers.image.description" = "patched systemd 262 as PID 1, NixOS-shaped, built without nixpkgs";
  };
}
