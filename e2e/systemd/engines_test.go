package systemd

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
)

// Beyond Docker's defaults (issue 10): the patched image on other engines and in other modes.
// Each case boots the image, checks it reaches `running` with nothing failed, that the engine's
// log command shows the boot and a unit's output, and that the stop the engine does exits 0 with
// the test units stopped cleanly; each adds a row to README's engines table.

// podmanModes are the ways a user runs the image with podman. Podman's --systemd mode (default
// "true": on when the command is /sbin/init or systemd, as the image's is) adds its own tmpfs
// mounts, a writable cgroup and SIGRTMIN+3; --systemd=false shows the image needs none of it.
var podmanModes = []struct {
	name  string
	flags []string
}{
	{"--tmpfs ×3 (podman --systemd auto: on)", defaultFlags},
	{"--tmpfs ×3 --systemd=false", append([]string{"--systemd=false"}, defaultFlags...)},
	{"no flags (podman --systemd auto: on)", nil},
}

func patchedTarOrSkip(t *testing.T) string {
	t.Helper()
	return needEnv(t, envPatched, "hack/systemd-e2e")
}

func TestSystemdInPodman(t *testing.T) {
	patchedTar := patchedTarOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rootful, err := harness.StartPodman(ctx, os.Stderr, false)
	if err != nil {
		t.Fatalf("setting podman up: %v", err)
	}
	t.Cleanup(func() {
		if !rootful.Started() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := rootful.Stop(ctx, os.Stderr); err != nil {
			t.Errorf("taking the podman engine down: %v", err)
		}
		if left, err := rootful.Leftovers(ctx); err != nil || left != "" {
			t.Errorf("the podman engine left something behind: %s %v", left, err)
		}
	})
	for _, e := range []*harness.Engine{rootful, rootful.Rootless()} {
		t.Run(e.Name, func(t *testing.T) {
			img, took, err := buildImage(ctx, e, patchedTar, "systemd-patched")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("patched image %s in %s's storage (import %.1f s, 0 = cached)", img, e.Name, took.Seconds())
			before, err := e.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range podmanModes {
				t.Run(m.name, func(t *testing.T) {
					bootCase(ctx, t, e, e.Name, m.name, m.flags, img, "")
					bootCase(ctx, t, e, e.Name, m.name, m.flags, img, "kill TERM")
				})
			}
			noLeftovers(ctx, t, e, before)
		})
	}
}

// bootCase runs the patched image with flags, checks boot, `running`, logs, and the stop
// (stop: "" for the engine's stop command with the image's stop signal, "kill TERM" for
// `kill --signal TERM` and wait), and records a row.
func bootCase(ctx context.Context, t *testing.T, e *harness.Engine, engine, mode string, flags []string, img, stop string) *harness.Container {
	t.Helper()
	r := &result{Engine: engine, Mode: mode, Platform: "linux/amd64", Boot: "never", Logs: "-"}
	record(t, r)
	c := run(ctx, t, e, flags, img)
	r.Boot = bootFigure(boot(ctx, t, c))
	r.Cgroup = cgroupMount(ctx, c)
	assertRunning(ctx, t, c)
	logs := waitLog(ctx, c, regexp.MustCompile(regexp.QuoteMeta(helloLine)), 10*time.Second)
	r.Logs = "boot + units"
	if !bootLinesRe.MatchString(logs) || !strings.Contains(logs, helloLine) {
		r.Logs = "missing"
		t.Errorf("%s logs lacks systemd's boot lines (%s) or the test unit's line %q:\n%s", engine, bootLinesRe, helloLine, harness.TailLines(logs, 30))
	}
	switch stop {
	case "":
		var st string
		st, r.Exit = stopAndWait(ctx, t, c, "", true)
		// "0.31 s SIGRTMIN+3" → "stop SIGRTMIN+3, 0.31 s"
		if f := strings.Fields(st); len(f) == 3 {
			st = "stop " + f[2] + ", " + f[0] + " " + f[1]
		}
		r.Stop = st
	case "kill TERM":
		t0 := time.Now()
		if err := c.Kill(ctx, "TERM"); err != nil {
			t.Fatalf("kill -s TERM: %v", err)
		}
		code, err := c.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r.Stop, r.Exit = "kill TERM, "+secs(time.Since(t0)), fmt.Sprint(code)
		if code != 0 {
			t.Errorf("kill --signal TERM: the container exited %d, want 0", code)
		}
	default:
		t.Fatalf("unknown stop %q", stop)
	}
	assertUnitsStopped(ctx, t, c)
	return c
}

// bootFigure shortens boot()'s figure to the time from run to the boot line ("2.1 s"), or to
// when systemctl said so ("≤ 2.1 s") if the log had no such line yet.
func bootFigure(s string) string {
	f := strings.Fields(s)
	switch {
	case len(f) >= 3 && f[0] == "≤":
		return f[0] + " " + f[1] + " " + f[2]
	case len(f) >= 2:
		return f[0] + " " + f[1]
	}
	return s
}

// TestSystemdDockerUsernsRemap: a second Docker engine with --userns-remap=default (container
// root is UID 100000-ish on the host, from dockremap's subuid range), the three --tmpfs flags.
func TestSystemdDockerUsernsRemap(t *testing.T) {
	patchedTar := patchedTarOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := dockerEngine(ctx, t, "userns")
	img, took, err := buildImage(ctx, e, patchedTar, "systemd-patched")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("patched image %s (import %.1f s, 0 = cached)", img, took.Seconds())
	before, err := e.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const mode = "--tmpfs ×3, dockerd --userns-remap=default"
	t.Run("image-stop-signal", func(t *testing.T) {
		bootCase(ctx, t, e, "docker", mode, defaultFlags, img, "")
	})
	t.Run("kill-TERM", func(t *testing.T) {
		bootCase(ctx, t, e, "docker", mode, defaultFlags, img, "kill TERM")
	})
	t.Run("root-is-remapped", func(t *testing.T) {
		c := run(ctx, t, e, defaultFlags, img)
		boot(ctx, t, c)
		out, err := c.Exec(ctx, "cat", "/proc/1/uid_map")
		if err != nil {
			t.Fatal(err)
		}
		// "0 <host uid> <count>": container root is not host root.
		if f := strings.Fields(out); len(f) < 3 || f[0] != "0" || f[1] == "0" {
			t.Errorf("PID 1's uid_map %q: want container root mapped to a non-zero host UID", strings.TrimSpace(out))
		}
		t.Logf("uid_map: %s", strings.TrimSpace(out))
		// The cgroup2 mount is rw in a user namespace: whether systemd could use it shows in
		// where PID 1 is (init.scope: it could) and who owns the container's cgroup.
		cg, _ := c.Exec(ctx, "sh", "-c", "cat /proc/1/cgroup; stat -c '%U %a %n' /sys/fs/cgroup /sys/fs/cgroup/cgroup.procs")
		t.Logf("cgroup in the container:\n%s", cg)
	})
	noLeftovers(ctx, t, e, before)
}

// cgroupMountRe picks the mount options of /sys/fs/cgroup from /proc/self/mountinfo.
var cgroupMountRe = regexp.MustCompile(`(?m)^\S+ \S+ \S+ \S+ /sys/fs/cgroup (r[ow])[, ]`)

// cgroupMount says how /sys/fs/cgroup is mounted in the container: "ro", "rw" or "?".
func cgroupMount(ctx context.Context, c *harness.Container) string {
	out, _ := c.Exec(ctx, "cat", "/proc/self/mountinfo")
	if m := cgroupMountRe.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return "?"
}
