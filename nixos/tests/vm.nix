# The NixOS VM test of the flake (checks.<system>.vm, run by `nix flake check`).
# It cannot run on the project's CI machines (no nixpkgs, no KVM): it is the
# first thing to run on a machine with Nix, nixpkgs and KVM.
#
# A VM with Docker loads the example image (nginx) and runs it with nothing but
# the three tmpfs mounts and a published port: no --privileged, no caps, no
# --cgroupns, no cgroup volume, no --stop-signal.
{ image, imageName }:
{
  name = "nixos2docker";

  nodes.machine = { pkgs, ... }: {
    environment.systemPackages = [ pkgs.curl ];
    virtualisation.docker.enable = true;
    virtualisation.memorySize = 2048;
    virtualisation.diskSize = 4096;
  };

  testScript = ''
    import time

    machine.wait_for_unit("docker.service")
    machine.succeed("docker load < ${image}")
    machine.succeed(
        "docker run -d --name web --tmpfs /run --tmpfs /run/lock --tmpfs /tmp"
        " -p 8080:80 ${imageName}:latest"
    )

    with subtest("boots to multi-user.target with systemd as PID 1"):
        machine.wait_until_succeeds("docker exec web systemctl is-active multi-user.target", timeout=180)
        comm = machine.succeed("docker exec web cat /proc/1/comm").strip()
        assert comm == "systemd", f"PID 1 is {comm!r}"

    with subtest("nginx answers on the published port"):
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:8080/ | grep -q 'hello from nixos2docker'", timeout=60)
        machine.succeed("curl -sf http://127.0.0.1:8080/docker | grep -q 'running in Docker'")

    with subtest("no failed units"):
        # --wait returns once the boot is over; its exit code is non-zero for
        # "degraded", so accept both and name the failed units below.
        machine.wait_until_succeeds(
            "docker exec web systemctl is-system-running --wait | grep -Eq '^(running|degraded)$'", timeout=120
        )
        failed = machine.succeed("docker exec web systemctl list-units --failed --plain --no-legend").strip()
        assert failed == "", f"failed units:\n{failed}"

    with subtest("docker logs shows the boot"):
        logs = machine.succeed("docker logs web 2>&1")
        assert "multi-user" in logs.lower() or "Reached target" in logs, f"no boot messages in docker logs:\n{logs}"

    with subtest("docker exec systemctl works without -e PATH"):
        machine.succeed("docker exec web systemctl status --no-pager")

    with subtest("Nix knows the image's store paths and the system profile"):
        # nixos2docker-nix-db.service loaded the registration at first boot and removed it.
        for prop, want in [("ConditionResult", "yes"), ("Result", "success")]:
            got = machine.succeed(f"docker exec web systemctl show -p {prop} --value nixos2docker-nix-db").strip()
            assert got == want, f"nixos2docker-nix-db: {prop}={got}, want {want}"
        machine.fail("docker exec web test -e /nix/var/nix/nixos2docker-registration")
        toplevel = machine.succeed("docker exec web readlink -f /run/current-system").strip()
        machine.succeed(f"docker exec web nix-store --verify-path {toplevel}")
        machine.succeed(f"docker exec web nix-store --query --requisites {toplevel} | grep -q -- -systemd-")
        link = machine.succeed("docker exec web readlink /nix/var/nix/profiles/system").strip()
        assert link == "system-1-link", f"profiles/system -> {link}"
        profile = machine.succeed("docker exec web readlink -f /nix/var/nix/profiles/system").strip()
        assert profile == toplevel, f"the system profile is {profile}, the running system {toplevel}"
        # A garbage collection keeps the running system (profiles and current-system are roots).
        machine.succeed("docker exec web nix-store --gc --print-dead > /dev/null")
        machine.succeed(f"docker exec web sh -c 'nix-store --gc --print-roots | grep -q {toplevel}'")

    with subtest("docker stop: within 5 s, exit code 0"):
        start = time.monotonic()
        machine.succeed("docker stop web")
        took = time.monotonic() - start
        code = machine.succeed("docker inspect -f '{{.State.ExitCode}}' web").strip()
        assert took < 5, f"docker stop took {took:.1f} s"
        assert code == "0", f"exit code {code}"
  '';
}
