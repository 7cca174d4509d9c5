package integration

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
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

	checkToyRuns(ctx, t, eng, tag, spec, func(c *harness.Container) { checkNixDatabase(ctx, t, eng, c.ID, spec) })
	if _, diff, err := eng.WaitNoLeftovers(ctx, before, 30*time.Second); err != nil || diff != "" {
		t.Errorf("leftovers after the container: %s (%v)", diff, err)
	}
}

// checkToyRuns runs the toy image in the engine with only the three --tmpfs flags: its init is
// PID 1, its output is in `docker logs`, whileRunning (if not nil) sees it running, and `docker
// stop` ends it with 0. The container is removed at the end.
func checkToyRuns(ctx context.Context, t *testing.T, eng *harness.Engine, tag string, spec *imagespec.Spec, whileRunning func(*harness.Container)) {
	t.Helper()
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

	if whileRunning != nil {
		whileRunning(c)
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
}

// checkNixDatabase: the running container (built by the frontend, unpacked by Docker) holds the
// closure's registration as the image model renders it, and real Nix (the host's, on the
// container's exported /nix as a chroot store, since the toy has no Nix of its own) loads it and
// finds every store path's bytes matching the NAR hashes Nix computed when it built them. In a
// NixOS image, nixos2docker-nix-db.service does the loading inside the container at first boot
// (the flake's VM test checks that).
func checkNixDatabase(ctx context.Context, t *testing.T, eng *harness.Engine, id string, spec *imagespec.Spec) {
	t.Helper()
	nixStore := testenv.Need(t, "nix-store")
	if spec.NixRegistration == "" {
		t.Fatal("the toy's spec has no nixRegistration")
	}
	exported := filepath.Join(t.TempDir(), "container.tar")
	if _, err := eng.Docker(ctx, "export", "-o", exported, id); err != nil {
		t.Fatalf("docker export: %v", err)
	}
	root := t.TempDir()
	if err := unpackNix(exported, root); err != nil {
		t.Fatalf("unpacking the container's /nix: %v", err)
	}
	reg := filepath.Join(root, spec.NixRegistration)
	got, err := os.ReadFile(reg)
	if err != nil {
		t.Fatalf("the running container has no registration: %v", err)
	}
	if string(got) != imagemodel.NixRegistration(spec.Closure) {
		t.Errorf("the container's %s is not the closure's registration", spec.NixRegistration)
	}
	nix := func(stdin string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, nixStore, append([]string{"--store", "local?root=" + root}, args...)...)
		cmd.Env = append(os.Environ(), "NIX_CONFIG="+testenv.NixConfig)
		if stdin != "" {
			f, err := os.Open(stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nix-store %v: %v\n%s", args, err, out)
		}
	}
	nix(reg, "--load-db")
	nix("", "--verify-path", spec.Toplevel)
	nix("", "--verify", "--check-contents")
	t.Logf("the running container's registration of %d paths loaded by real Nix; the toplevel and every path verified", len(spec.Closure))
}

// unpackNix unpacks the /nix part of a `docker export` tar into root.
func unpackNix(file, root string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var dirs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(h.Name, "./")
		if name != "nix" && name != "nix/" && !strings.HasPrefix(name, "nix/") {
			continue
		}
		dest := filepath.Join(root, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, h)
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, dest); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(dest, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
			if err := os.Chmod(dest, os.FileMode(h.Mode).Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected tar type %c under /nix", h.Name, h.Typeflag)
		}
	}
	// Directory modes last: a read-only directory could not be filled.
	for _, h := range dirs {
		if err := os.Chmod(filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(h.Name, "./"))), os.FileMode(h.Mode).Perm()); err != nil {
			return err
		}
	}
	return nil
}
