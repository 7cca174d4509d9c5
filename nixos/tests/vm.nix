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

    with subtest("docker stop: within 5 s, exit code 0"):
        start = time.monotonic()
        machine.succeed("docker stop web")
        took = time.monotonic() - start
        code = machine.succeed("docker inspect -f '{{.State.ExitCode}}' web").strip()
        assert took < 5, f"docker stop took {took:.1f} s"
        assert code == "0", f"exit code {code}"
  '';
}
