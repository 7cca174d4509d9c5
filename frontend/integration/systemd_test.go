package integration

// The product's promise end to end: examples/systemd (a NixOS-shaped system whose PID 1 is the
// patched systemd 262) built through the frontend by `docker buildx build`, loaded into the real
// Docker engine (hack/docker-engine) and booted with nothing but the three --tmpfs flags.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

const (
	systemdFlakeDir = "examples/systemd"
	systemdTarget   = "systemd"
	// envSystemdRuntime names the directory hack/systemd-runtime writes (runtime.tar,
	// versions.json): the patched systemd the example's flake imports. hack/integration sets it.
	envSystemdRuntime = "NIXOS2DOCKER_SYSTEMD_RUNTIME"

	// What the example's services print (examples/systemd/configuration.nix).
	exampleHelloLine    = "NIXOS2DOCKER-EXAMPLE-HELLO"
	exampleHardenedLine = "NIXOS2DOCKER-EXAMPLE-HARDENED"
	exampleDynamicLine  = "NIXOS2DOCKER-EXAMPLE-DYNAMIC"
)

// The only flags the container gets: the whole claim.
var tmpfsFlags = []string{"--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"}

var (
	// systemd's own lines in docker logs: its banner, the welcome line, targets reached.
	systemdBootRe = regexp.MustCompile(`systemd 262 running in system mode|Welcome to |Reached target`)
	// The DynamicUser= service's report: a dynamic UID and its StateDirectory= probe.
	exampleDynamicRe = regexp.MustCompile(regexp.QuoteMeta(exampleDynamicLine) + ` uid (\d+) state /var/lib/n2d-dynamic ok`)
)

// unitStoppedRe matches systemd's line for unit stopped cleanly at shutdown.
func unitStoppedRe(unit string) *regexp.Regexp {
	return regexp.MustCompile(`Stopped ` + regexp.QuoteMeta(unit) + `|` + regexp.QuoteMeta(unit) + `: Deactivated successfully`)
}

// systemdRuntime returns the directory with the example's runtime, or skips (fails in CI).
func systemdRuntime(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envSystemdRuntime)
	if dir == "" {
		testenv.SkipOrFail(t, "%s is not set: run hack/integration, which runs hack/systemd-runtime (patched systemd 262 for %s)", envSystemdRuntime, systemdFlakeDir)
	}
	for _, f := range []string{"runtime.tar", "versions.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s=%s: %v (hack/systemd-runtime writes it)", envSystemdRuntime, dir, err)
		}
	}
	return dir
}

// systemdContext returns a build context for the example: copies of examples/systemd and
// nixos/ (the flake imports ../../nixos/lib) and the runtime from runtimeDir.
func (e *testEnv) systemdContext(t *testing.T, runtimeDir string) string {
	t.Helper()
	dst := t.TempDir()
	testenv.CopyTree(t, e.Repo, dst, systemdFlakeDir, "nixos")
	rt := filepath.Join(dst, systemdFlakeDir, "runtime")
	if err := os.RemoveAll(rt); err != nil {
		t.Fatal(err)
	}
	testenv.CopyTree(t, runtimeDir, rt, ".")
	return dst
}

// TestSystemdExampleInDocker: the example's image, built through the `# syntax=` file with
// `docker buildx build` and loaded into the real Docker engine, boots with only the three
// --tmpfs flags to multi-user.target with its PID 1 the patched systemd from the store; its
// boot lines and services' output are in `docker logs`; `docker exec` reaches systemctl without
// -e PATH; the HEALTHCHECK turns healthy; `docker stop` (the image's SIGRTMIN+3) and a plain
// SIGTERM both end it with exit code 0; nothing is left behind in the engine.
func TestSystemdExampleInDocker(t *testing.T) {
	e := requireEnv(t)
	runtimeDir := systemdRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := e.systemdContext(t, runtimeDir)

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

	tag := fmt.Sprintf("nixos2docker-systemd-example:it-%d", time.Now().UnixNano())
	file := filepath.Join(t.TempDir(), "systemd.nix2docker")
	if err := os.WriteFile(file, []byte(e.syntaxFile("# flake=.?dir="+systemdFlakeDir+"#"+systemdTarget+"\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"buildx", "build", "--builder", e.BuildxBuilder,
		"--progress=plain", "--provenance=false", "-f", file}, e.buildArgFlags("--build-arg")...)
	res, err := run(ctx, []string{"DOCKER_HOST=" + eng.Host}, "docker", append(args, "--output", "type=docker,name="+tag, dir)...)
	if err != nil {
		t.Fatalf("docker buildx build of %s into the engine: %v", systemdFlakeDir, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = eng.Docker(ctx, "rmi", "-f", tag)
	})
	figures := []string{fmt.Sprintf("build and load: %s", res.Took.Round(time.Millisecond))}
	defer func() { t.Logf("figures (measured, not asserted):\n  %s", strings.Join(figures, "\n  ")) }()

	checkExampleImageConfig(ctx, t, eng, tag, &figures)

	t.Run("boot-and-docker-stop", func(t *testing.T) {
		c := runExample(ctx, t, eng, tag)
		figures = append(figures, "boot (docker run → is-system-running answers): "+bootExample(ctx, t, c))

		pid1, err := c.Exec(ctx, "cat", "/proc/1/comm")
		if err != nil || strings.TrimSpace(pid1) != "systemd" {
			t.Errorf("PID 1 is %q (%v), want systemd", strings.TrimSpace(pid1), err)
		}
		exe, err := c.Exec(ctx, "readlink", "/proc/1/exe")
		if exe = strings.TrimSpace(exe); err != nil || !strings.HasPrefix(exe, "/nix/store/") || !strings.Contains(exe, "-systemd-") {
			t.Errorf("PID 1 runs %q (%v), want the systemd store path's binary", exe, err)
		}

		logs := waitLogs(ctx, c, exampleDynamicRe, 30*time.Second)
		if !systemdBootRe.MatchString(logs) {
			t.Errorf("docker logs has no systemd boot line (want %s)", systemdBootRe)
		}
		for _, want := range []string{exampleHelloLine + " from systemd 262", exampleHardenedLine + " NoNewPrivs=1"} {
			if !strings.Contains(logs, want) {
				t.Errorf("docker logs lacks the service's line %q", want)
			}
		}
		if m := exampleDynamicRe.FindStringSubmatch(logs); m == nil {
			t.Errorf("docker logs lacks the DynamicUser= service's report (want %s)", exampleDynamicRe)
		} else if m[1] == "0" {
			t.Errorf("the DynamicUser= service runs as root: %s", m[0])
		}

		// The hardened service's seccomp filters are loaded (systemd 262 dlopens libseccomp:
		// without it in the closure they are silently skipped).
		if pid, err := c.Exec(ctx, "systemctl", "show", "-P", "MainPID", "n2d-hardened.service"); err != nil {
			t.Errorf("MainPID of n2d-hardened.service: %v", err)
		} else if status, err := c.Exec(ctx, "cat", "/proc/"+strings.TrimSpace(pid)+"/status"); err != nil || !regexp.MustCompile(`(?m)^Seccomp:\s+2$`).MatchString(status) {
			t.Errorf("n2d-hardened.service (pid %s) runs without its SystemCallFilter= (want Seccomp: 2 in its status; %v):\n%s", strings.TrimSpace(pid), err, status)
		}
		// A machine ID of its own (systemd cannot bind-mount a transient one here).
		if id, err := c.Exec(ctx, "cat", "/etc/machine-id"); err != nil || !regexp.MustCompile(`^[0-9a-f]{32}\n?$`).MatchString(id) {
			t.Errorf("/etc/machine-id = %q (%v), want 32 hex digits", id, err)
		}

		// No -e PATH: the image's Env reaches /run/current-system/sw/bin.
		status, err := c.Exec(ctx, "systemctl", "status", "--no-pager")
		if err != nil {
			t.Errorf("docker exec systemctl status: %v\n%s", err, status)
		} else if !strings.Contains(status, "State: running") {
			t.Errorf("systemctl status does not say State: running:\n%s", harness.TailLines(status, 20))
		}

		figures = append(figures, "health (booted → healthy): "+waitHealthy(ctx, t, c))

		took, err := c.Stop(ctx, "", 0)
		if err != nil {
			t.Fatalf("docker stop: %v", err)
		}
		code, err := c.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		figures = append(figures, fmt.Sprintf("docker stop (SIGRTMIN+3): %s, exit %d", took.Round(time.Millisecond), code))
		if code != 0 {
			t.Errorf("docker stop: exit code %d, want 0", code)
		}
		checkUnitsStopped(ctx, t, c)
		if err := c.Remove(ctx); err != nil {
			t.Errorf("docker rm: %v", err)
		}
	})

	t.Run("sigterm", func(t *testing.T) {
		// Engines and orchestrators that ignore the image's StopSignal send SIGTERM.
		c := runExample(ctx, t, eng, tag)
		bootExample(ctx, t, c)
		t0 := time.Now()
		if err := c.Kill(ctx, "TERM"); err != nil {
			t.Fatalf("docker kill --signal TERM: %v", err)
		}
		code, err := c.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		figures = append(figures, fmt.Sprintf("docker kill --signal TERM + docker wait: %s, exit %d", took.Round(time.Millisecond), code))
		if code != 0 {
			t.Errorf("SIGTERM: exit code %d, want 0", code)
		}
		checkUnitsStopped(ctx, t, c)
		if err := c.Remove(ctx); err != nil {
			t.Errorf("docker rm: %v", err)
		}
	})

	if _, diff, err := eng.WaitNoLeftovers(ctx, before, 30*time.Second); err != nil || diff != "" {
		t.Errorf("left behind in the engine: %s (%v)", diff, err)
	}
}

// checkExampleImageConfig checks the loaded image's config is the NixOS module's
// (nixos/lib/image-config.nix) and records the image's size.
func checkExampleImageConfig(ctx context.Context, t *testing.T, eng *harness.Engine, tag string, figures *[]string) {
	t.Helper()
	out, err := eng.Docker(ctx, "image", "inspect", "--format", "{{json .Config}}", tag)
	if err != nil {
		t.Fatalf("docker image inspect: %v", err)
	}
	var cfg struct {
		Entrypoint  []string
		Env         []string
		StopSignal  string
		Healthcheck *struct{ Test []string }
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("image config %s: %v", out, err)
	}
	if size, err := eng.Docker(ctx, "image", "inspect", "--format", "{{.Size}}", tag); err == nil {
		var n int64
		if _, err := fmt.Sscan(size, &n); err == nil {
			*figures = append(*figures, fmt.Sprintf("image size (docker image inspect): %.1f MiB", float64(n)/(1<<20)))
		}
	}
	if len(cfg.Entrypoint) != 1 || !strings.HasPrefix(cfg.Entrypoint[0], "/nix/store/") || !strings.HasSuffix(cfg.Entrypoint[0], "/init") {
		t.Errorf("Entrypoint = %q, want the toplevel's init", cfg.Entrypoint)
	}
	if len(cfg.Env) == 0 || cfg.Env[0] != "container=docker" {
		t.Errorf("Env = %q, want container=docker first", cfg.Env)
	}
	if !slices.ContainsFunc(cfg.Env, func(s string) bool {
		return strings.HasPrefix(s, "PATH=") && slices.Contains(strings.Split(s[len("PATH="):], ":"), "/run/current-system/sw/bin")
	}) {
		t.Errorf("Env = %q has no PATH reaching /run/current-system/sw/bin", cfg.Env)
	}
	if cfg.StopSignal != "SIGRTMIN+3" {
		t.Errorf("StopSignal = %q, want SIGRTMIN+3", cfg.StopSignal)
	}
	if cfg.Healthcheck == nil || !slices.Contains(cfg.Healthcheck.Test, "is-system-running") {
		t.Errorf("Healthcheck = %+v, want systemctl is-system-running", cfg.Healthcheck)
	}
}

// runExample starts the image with the three --tmpfs flags only, follows its output and
// registers its removal (with its last lines printed if the test failed).
func runExample(ctx context.Context, t *testing.T, eng *harness.Engine, tag string) *harness.Container {
	t.Helper()
	c, err := eng.Run(ctx, tmpfsFlags, tag)
	if err != nil {
		t.Fatalf("docker run: %v", err)
	}
	c.Cleanup(t)
	c.Follow(ctx)
	return c
}

// bootExample waits until systemd says the boot is over and requires it to be `running`; for
// `degraded` it names each failed unit with its status. It returns the boot time figure.
func bootExample(ctx context.Context, t *testing.T, c *harness.Container) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	state := ""
	for {
		out, _ := c.Exec(ctx, "systemctl", "is-system-running")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		st, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Running {
			t.Fatalf("the container exited with %d during boot:\n%s", st.ExitCode, c.LogTail(ctx, 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("not booted after 2 min (systemctl is-system-running: %q):\n%s", state, c.LogTail(ctx, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	booted := time.Since(c.Started)
	if out, _ := c.Exec(ctx, "systemctl", "is-active", "multi-user.target"); strings.TrimSpace(out) != "active" {
		t.Errorf("multi-user.target is %q, want active", strings.TrimSpace(out))
	}
	if state == "degraded" {
		failed, _ := c.Exec(ctx, "systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager")
		var names []string
		for _, line := range strings.Split(strings.TrimSpace(failed), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				names = append(names, f[0])
				status, _ := c.Exec(ctx, "systemctl", "status", "--no-pager", "-l", "-n", "20", f[0])
				t.Logf("%s:\n%s", f[0], status)
			}
		}
		t.Errorf("the system is degraded, want running: failed units %s", strings.Join(names, ", "))
	}
	own, _ := c.Exec(ctx, "systemd-analyze", "time")
	return fmt.Sprintf("%s (%s; systemd-analyze: %s)", booted.Round(time.Millisecond), state, strings.TrimSpace(firstLine(own)))
}

// waitLogs waits until the followed output matches re, or timeout, and returns the whole log.
func waitLogs(ctx context.Context, c *harness.Container, re *regexp.Regexp, timeout time.Duration) string {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, ok := c.FirstLine(re); ok {
			break
		}
	}
	logs, _ := c.Logs(ctx)
	return logs
}

// waitHealthy waits for `docker inspect` to report the HEALTHCHECK healthy and returns how long
// it took.
func waitHealthy(ctx context.Context, t *testing.T, c *harness.Container) string {
	t.Helper()
	t0 := time.Now()
	status := ""
	for deadline := t0.Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := c.E.Docker(ctx, "inspect", "--format", "{{.State.Health.Status}}", c.ID)
		if err != nil {
			t.Fatalf("docker inspect: %v", err)
		}
		if status = strings.TrimSpace(out); status == "healthy" || status == "unhealthy" {
			break
		}
	}
	if status != "healthy" {
		probes, _ := c.E.Docker(ctx, "inspect", "--format", "{{json .State.Health}}", c.ID)
		t.Errorf("health is %q, want healthy: %s", status, probes)
	}
	return time.Since(t0).Round(time.Millisecond).String()
}

// checkUnitsStopped checks the log shows each of the example's services stopped at shutdown.
func checkUnitsStopped(ctx context.Context, t *testing.T, c *harness.Container) {
	t.Helper()
	logs, err := c.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"n2d-hello.service", "n2d-hardened.service", "n2d-dynamic.service"} {
		if re := unitStoppedRe(u); !re.MatchString(logs) {
			t.Errorf("docker logs shows no clean stop of %s (want %s):\n%s", u, re, harness.TailLines(logs, 30))
		}
	}
}
