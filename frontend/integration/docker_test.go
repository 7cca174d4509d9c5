package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
)

// testWriter sends a script's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestToyRunsInDocker: the toy image, loaded into the real Docker engine by `docker buildx
// build --output type=docker` on the remote-driver builder, runs with only the three --tmpfs
// flags: its init is PID 1, its output is in `docker logs`, and `docker stop` ends it with 0.
func TestToyRunsInDocker(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	spec, err := e.expectedSpec(ctx, t, dir)
	if err != nil {
		t.Fatal(err)
	}

	eng, err := harness.StartEngine(ctx, testWriter{t})
	if err != nil {
		t.Fatalf("starting the Docker engine (hack/docker-engine): %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := eng.Stop(ctx, testWriter{t}); err != nil {
			t.Errorf("stopping the Docker engine: %v", err)
		}
	})
	before, err := eng.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	tag := fmt.Sprintf("nixos2docker-toy:it-%d", time.Now().UnixNano())
	file := filepath.Join(t.TempDir(), "toy.nix2docker")
	if err := os.WriteFile(file, []byte(e.toyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"buildx", "build", "--builder", e.BuildxBuilder,
		"--progress=plain", "--provenance=false", "-f", file, "--target", toyTarget},
		e.buildArgFlags("--build-arg")...)
	res, err := run(ctx, []string{"DOCKER_HOST=" + eng.Host}, "docker", append(args, "--output", "type=docker,name="+tag, dir)...)
	if err != nil {
		t.Fatalf("docker buildx build --output type=docker into the engine: %v", err)
	}
	t.Logf("built and loaded %s in %s", tag, res.Took.Round(time.Millisecond))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = eng.Docker(ctx, "rmi", "-f", tag)
	})

	c, err := eng.Run(ctx, []string{"--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"}, tag)
	if err != nil {
		t.Fatalf("docker run: %v", err)
	}
	c.Cleanup(t)
	c.Follow(ctx)

	// PID 1 of the container, seen from the host (the engine shares the host's PID namespace).
	pidOut, err := eng.Docker(ctx, "inspect", "--format", "{{.State.Pid}}", c.ID)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(pidOut)
	cmdline, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
	if err != nil {
		t.Fatalf("container PID 1 (host pid %s): %v", pid, err)
	}
	argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	t.Logf("PID 1: %q", argv)
	initPath := ""
	if len(spec.Config.Entrypoint) > 0 {
		initPath = spec.Config.Entrypoint[0]
	}
	if !strings.Contains(strings.Join(argv, " "), initPath) && !strings.Contains(strings.Join(argv, " "), spec.Toplevel) {
		t.Errorf("PID 1 runs %q, not the toy's init (%s, toplevel %s)", argv, initPath, spec.Toplevel)
	}
	inside, err := c.Exec(ctx, "/bin/sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '")
	if err == nil {
		t.Logf("PID 1 inside the container: %s", strings.TrimSpace(inside))
	}

	// Output reaches docker logs.
	deadline := time.Now().Add(30 * time.Second)
	for len(c.Lines()) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if len(c.Lines()) == 0 {
		t.Errorf("no output in docker logs after 30 s")
	}
	st, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running {
		t.Fatalf("container is not running: %+v", st)
	}

	took, err := c.Stop(ctx, "", 0)
	if err != nil {
		t.Fatalf("docker stop: %v", err)
	}
	st, err = c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("docker stop took %s, exit code %d", took.Round(time.Millisecond), st.ExitCode)
	if st.ExitCode != 0 {
		t.Errorf("docker stop: exit code %d, want 0", st.ExitCode)
	}
	logs, _ := c.Logs(ctx)
	t.Logf("docker logs:\n%s", tail(logs, 20))
	// What the toy's init prints when it starts, what its program prints, and what its trap
	// prints on the image's stop signal (examples/toy/toy.nix).
	for _, want := range []string{"toy init: started", "hello from the toy message", "toy init: stopping"} {
		if !strings.Contains(logs, want) {
			t.Errorf("docker logs lack %q", want)
		}
	}

	if err := c.Remove(ctx); err != nil {
		t.Errorf("docker rm: %v", err)
	}
	if _, diff, err := eng.WaitNoLeftovers(ctx, before, 30*time.Second); err != nil {
		t.Errorf("leftovers after the container: %s (%v)", diff, err)
	}
}
