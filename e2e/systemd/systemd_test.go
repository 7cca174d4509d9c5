package systemd

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
)

// Environment variables hack/systemd-e2e sets: root filesystem tars from hack/systemd-build.
const (
	envStock   = "NIXOS2DOCKER_SYSTEMD_STOCK_TAR"
	envPatched = "NIXOS2DOCKER_SYSTEMD_PATCHED_TAR"
)

// defaultFlags is the whole claim: these flags and no others.
var defaultFlags = []string{"--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"}

// writableCgroupFlags give the container the host's cgroup namespace and a writable cgroup2
// mount, where stock systemd works and the patches must change nothing.
var writableCgroupFlags = append(append([]string{}, defaultFlags...),
	"--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw")

// The patched systemd must boot to `running`: no unit may fail. DynamicUser= units used to
// (226/NAMESPACE: systemd insisted on a mount namespace for them, and Docker's default
// capabilities, without CAP_SYS_ADMIN, allow none); with patch 0007 they run as their dynamic
// user without one, their StateDirectory= a plain directory owned by that UID.

// Dynamic UIDs systemd allocates (meson defaults dynamic-uid-min/-max, as Debian and NixOS).
const dynamicUIDMin, dynamicUIDMax = 61184, 65519

// dynamicNoticeRe is the manager's notice (0007) for a DynamicUser= unit run without a mount
// namespace.
var dynamicNoticeRe = regexp.MustCompile(regexp.QuoteMeta(dynamicUnit) + `: DynamicUser=yes without a mount namespace`)

var (
	// Boot reached: systemd's own "Startup finished" log line or the multi-user status line.
	bootDoneRe = regexp.MustCompile(`Startup finished|Reached target.*(multi-user\.target|Multi-User System)`)
	startupRe  = regexp.MustCompile(`Startup finished in (\S+?)\.?$`)
	// Lines that show systemd booting in the log at all.
	bootLinesRe = regexp.MustCompile(`systemd 2\d\d.* running in system mode|Welcome to |Reached target`)
)

// figure is one row of the printed (never asserted) measurements.
type figure struct {
	image, mode, boot, stop, exit string
}

// figures collects rows from parallel subtests.
type figures struct {
	mu   sync.Mutex
	rows []figure
}

func (fs *figures) add(f figure) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.rows = append(fs.rows, f)
}

func TestSystemdInDocker(t *testing.T) {
	stockTar := needEnv(t, envStock, "hack/systemd-e2e, which builds stock and patched systemd and a Docker engine")
	patchedTar := needEnv(t, envPatched, "hack/systemd-e2e")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	e := dockerEngine(ctx, t, "")
	before, err := e.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before: %s", before)

	stockImg, took, err := buildImage(ctx, e, stockTar, "systemd-stock")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stock image %s (import %.1f s, 0 = cached)", stockImg, took.Seconds())
	patchedImg, took, err := buildImage(ctx, e, patchedTar, "systemd-patched")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("patched image %s (import %.1f s, 0 = cached)", patchedImg, took.Seconds())

	var figs figures
	defer func() {
		var b strings.Builder
		fmt.Fprintf(&b, "figures (measured, not asserted):\n%-8s %-26s %-56s %-24s %s\n", "image", "run flags", "boot (docker run → booted)", "stop", "exit")
		for _, f := range figs.rows {
			fmt.Fprintf(&b, "%-8s %-26s %-56s %-24s %s\n", f.image, f.mode, f.boot, f.stop, f.exit)
		}
		t.Log(b.String())
	}()

	t.Run("stock", func(t *testing.T) {
		t.Run("does-not-reach-multi-user", func(t *testing.T) {
			f := figure{image: "stock", mode: "--tmpfs ×3 only"}
			defer func() { figs.add(f) }()
			c := run(ctx, t, e, defaultFlags, stockImg)
			reached, st, err := waitMultiUser(ctx, c, 15*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if reached {
				t.Fatalf("stock systemd reached multi-user.target: the harness does not reproduce the problem")
			}
			if st.Running {
				f.boot, f.exit = "never (still running after 15 s)", "-"
				t.Logf("stock systemd still running after 15 s without reaching multi-user.target")
			} else {
				f.boot = fmt.Sprintf("never: exited %s after start", secs(st.FinishedAt.Sub(st.StartedAt)))
				f.exit = fmt.Sprint(st.ExitCode)
				logs := "none"
				if out, _ := c.Logs(ctx); strings.TrimSpace(out) != "" {
					logs = "some"
				}
				record(t, &result{Engine: "docker", Mode: "--tmpfs ×3, stock systemd 262 (reference)", Platform: "linux/amd64", Cgroup: "ro",
					Boot: "never (exits " + secs(st.FinishedAt.Sub(st.StartedAt)) + " after start)", Logs: logs, Stop: "-", Exit: f.exit,
					Result: "fails, as expected without the patches"})
				t.Logf("stock systemd exited with %d, output:\n%s", st.ExitCode, c.LogTail(ctx, 50))
			}
		})
		t.Run("writable-cgroups-boots", func(t *testing.T) {
			f := figure{image: "stock", mode: "writable cgroups"}
			defer func() { figs.add(f) }()
			c := run(ctx, t, e, writableCgroupFlags, stockImg)
			f.boot = "never"
			f.boot = boot(ctx, t, c)
			// Not the test units: with the image's DefaultStandardOutput=tty and no
			// /dev/console stock systemd cannot start them (209/STDOUT; patch 0003).
			assertInitScope(ctx, t, c)
			t.Logf("%s under stock systemd: %s", helloUnit, unitState(ctx, c, helloUnit))
			f.stop, f.exit = stopAndWait(ctx, t, c, "", true)
		})
	})

	t.Run("patched", func(t *testing.T) {
		f := figure{image: "patched", mode: "--tmpfs ×3 only"}
		c := run(ctx, t, e, defaultFlags, patchedImg)
		booted := t.Run("reaches-multi-user", func(t *testing.T) {
			f.boot = boot(ctx, t, c)
			assertRunning(ctx, t, c)
			// What the boot time went to (first boot of a Debian root runs its update units).
			if out, err := c.Exec(ctx, "systemd-analyze", "blame", "--no-pager"); err == nil {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				t.Logf("systemd-analyze blame (top 5):\n%s", strings.Join(lines[:min(5, len(lines))], "\n"))
			}
		})
		// The next subtests share this container; if it did not boot, each fails (not skips).
		needBooted := func(t *testing.T) {
			t.Helper()
			if !booted {
				t.Fatal("the container did not boot (see reaches-multi-user)")
			}
		}
		t.Run("logs-show-boot-and-service", func(t *testing.T) {
			needBooted(t)
			logs := waitLog(ctx, c, regexp.MustCompile(regexp.QuoteMeta(helloLine)), 10*time.Second)
			if !bootLinesRe.MatchString(logs) {
				t.Errorf("docker logs shows no systemd boot lines (want %s)", bootLinesRe)
			}
			if !strings.Contains(logs, helloLine) {
				t.Errorf("docker logs lacks the test service's line %q", helloLine)
			}
			t.Logf("docker logs of the booted container (last 40 lines):\n%s", harness.TailLines(logs, 40))
		})
		t.Run("exec-systemctl-status", func(t *testing.T) {
			needBooted(t)
			out, err := c.Exec(ctx, "systemctl", "status", "--no-pager")
			if err != nil {
				t.Fatalf("docker exec systemctl status: %v\n%s", err, out)
			}
			if !strings.Contains(out, "State:") {
				t.Errorf("systemctl status printed no system state:\n%s", out)
			}
		})
		t.Run("hardened-service-active", func(t *testing.T) {
			needBooted(t)
			if st := unitState(ctx, c, hardenedUnit); st != "active" {
				t.Fatalf("%s is %q, want active:\n%s", hardenedUnit, st, unitStatus(ctx, c, hardenedUnit))
			}
			// Without CAP_SYS_ADMIN systemd may start the unit without its sandbox: record which.
			pid, _ := c.Exec(ctx, "systemctl", "show", "-P", "MainPID", hardenedUnit)
			ns, err := c.Exec(ctx, "readlink", "/proc/1/ns/mnt", "/proc/"+strings.TrimSpace(pid)+"/ns/mnt")
			if f := strings.Fields(ns); err == nil && len(f) == 2 {
				t.Logf("%s sandbox (own mount namespace) applied: %v", hardenedUnit, f[0] != f[1])
			}
		})
		t.Run("dynamicuser-service", func(t *testing.T) {
			needBooted(t)
			// Active, running as a dynamic UID, and its StateDirectory= writable by it: the
			// service wrote the probe itself (it exits 1 if it cannot).
			if st := unitState(ctx, c, dynamicUnit); st != "active" {
				t.Fatalf("%s is %q, want active:\n%s", dynamicUnit, st, unitStatus(ctx, c, dynamicUnit))
			}
			uid := mainUID(ctx, t, c, dynamicUnit)
			if uid == 0 || uid < dynamicUIDMin || uid > dynamicUIDMax {
				t.Errorf("%s runs as UID %d, want a dynamic one (%d–%d)", dynamicUnit, uid, dynamicUIDMin, dynamicUIDMax)
			}
			stateDir := "/var/lib/" + dynamicStateDir
			want := fmt.Sprintf("%s uid %d state %s ok", dynamicLine, uid, stateDir)
			logs := waitLog(ctx, c, regexp.MustCompile(regexp.QuoteMeta(want)), 10*time.Second)
			if !strings.Contains(logs, want) {
				t.Errorf("docker logs lacks %q (the service's own report of its UID and StateDirectory= probe)", want)
			}
			probe := stateDir + "/probe"
			out, err := c.Exec(ctx, "stat", "-c", "%u %U %a %F", stateDir, probe)
			if err != nil {
				t.Fatalf("stat %s %s: %v\n%s", stateDir, probe, err, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], fmt.Sprintf("%d ", uid)) || !strings.HasSuffix(lines[0], " directory") ||
				!strings.HasPrefix(lines[1], fmt.Sprintf("%d ", uid)) {
				t.Errorf("%s and its probe should be owned by the service's UID %d (a plain directory, not a symlink into private/):\n%s", stateDir, uid, out)
			}
			if !dynamicNoticeRe.MatchString(logs) {
				t.Errorf("docker logs lacks the notice saying what %s loses without a mount namespace (want %s)", dynamicUnit, dynamicNoticeRe)
			}
			t.Logf("%s: active, UID %d, %s:\n%s", dynamicUnit, uid, stateDir, out)
		})
		t.Run("executor-error-in-journal", func(t *testing.T) {
			needBooted(t)
			// A unit that fails in systemd-executor (217/USER): the executor's own explanation
			// must reach the unit's journal (0008), not only PID 1's "status=217/USER".
			// --collect unloads the failed unit, so the system state stays running.
			out, err := c.Exec(ctx, "systemd-run", "--wait", "--collect", "--unit="+executorFailUnit,
				"-p", "User=n2d-no-such-user", "/bin/true")
			if err == nil {
				t.Fatalf("%s with User=n2d-no-such-user succeeded, want a 217/USER failure:\n%s", executorFailUnit, out)
			}
			var journal string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				journal, _ = c.Exec(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", executorFailUnit)
				if executorErrorRe.MatchString(journal) || time.Now().After(deadline) {
					break
				}
			}
			if !executorErrorRe.MatchString(journal) {
				t.Errorf("journalctl -u %s lacks the executor's reason (want %s):\n%s", executorFailUnit, executorErrorRe, journal)
			}
			t.Logf("systemd-run: %s\njournalctl -u %s:\n%s", strings.TrimSpace(out), executorFailUnit, journal)
		})
		t.Run("units-share-pid1-cgroup", func(t *testing.T) {
			needBooted(t)
			// Read-only cgroups: units cannot get their own; recorded, not required.
			pid1, svc := cgroups(ctx, t, c)
			t.Logf("PID 1 cgroup %q, %s cgroup %q", pid1, helloUnit, svc)
		})
		t.Run("stop-with-image-stop-signal", func(t *testing.T) {
			needBooted(t)
			f.stop, f.exit = stopAndWait(ctx, t, c, "", true)
			assertUnitsStopped(ctx, t, c)
		})
		if !booted {
			st, _ := c.State(ctx)
			f.boot, f.exit = "never", fmt.Sprint(st.ExitCode)
		}
		figs.add(f)
		record(t, figureResult(f, booted))

		t.Run("stop-with-sigterm", func(t *testing.T) {
			f := figure{image: "patched", mode: "--tmpfs ×3 only"}
			defer func() { figs.add(f) }()
			c := run(ctx, t, e, defaultFlags, patchedImg)
			f.boot = "never"
			f.boot = boot(ctx, t, c)
			f.stop, f.exit = stopAndWait(ctx, t, c, "SIGTERM", true)
			assertUnitsStopped(ctx, t, c)
			record(t, figureResult(f, true))
		})
		t.Run("writable-cgroups-own-cgroups", func(t *testing.T) {
			f := figure{image: "patched", mode: "writable cgroups"}
			defer func() { figs.add(f) }()
			c := run(ctx, t, e, writableCgroupFlags, patchedImg)
			f.boot = "never"
			f.boot = boot(ctx, t, c)
			assertRunning(ctx, t, c)
			assertInitScope(ctx, t, c)
			assertOwnCgroup(ctx, t, c)
			f.stop, f.exit = stopAndWait(ctx, t, c, "", true)
		})
	})

	// References for the stop figures, in parallel (each waits out docker stop's 10 s).
	t.Run("references", func(t *testing.T) {
		t.Run("sigterm-ignoring-pid1", func(t *testing.T) {
			t.Parallel()
			// A PID 1 without a SIGTERM handler ignores it: docker stop waits 10 s and kills.
			f := figure{image: "sleep", mode: "--tmpfs ×3, ignores TERM", boot: "-"}
			defer func() { figs.add(f) }()
			c := run(ctx, t, e, defaultFlags, stockImg, "sleep", "infinity")
			f.stop, f.exit = stopAndWait(ctx, t, c, "SIGTERM", false)
			if f.exit != "137" {
				t.Errorf("a SIGTERM-ignoring PID 1 exited %s after docker stop, want 137 (killed)", f.exit)
			}
		})
		t.Run("stock-sigterm-writable-cgroups", func(t *testing.T) {
			t.Parallel()
			// Stock systemd re-executes itself on SIGTERM instead of shutting down.
			f := figure{image: "stock", mode: "writable cgroups", boot: "never"}
			defer func() { figs.add(f) }()
			c := run(ctx, t, e, writableCgroupFlags, stockImg)
			f.boot = boot(ctx, t, c)
			f.stop, f.exit = stopAndWait(ctx, t, c, "SIGTERM", false)
			if st, err := c.State(ctx); err != nil || st.Running {
				t.Errorf("stock systemd still running after docker stop (%v)", err)
			}
		})
	})

	noLeftovers(ctx, t, e, before)
}

// figureResult is README's row for a patched-image figure of this test.
func figureResult(f figure, booted bool) *result {
	r := &result{Engine: "docker", Mode: "--tmpfs ×3", Platform: "linux/amd64", Cgroup: "ro", Boot: bootFigure(f.boot), Logs: "boot + units", Exit: f.exit}
	if !booted {
		r.Logs = "-"
	}
	if p := strings.Fields(f.stop); len(p) == 3 {
		r.Stop = "stop " + p[2] + ", " + p[0] + " " + p[1]
	}
	return r
}

// run starts a container, follows its output and registers its removal (with its last 50 lines
// printed if the test failed) on t.
func run(ctx context.Context, t *testing.T, e *harness.Engine, flags []string, image string, args ...string) *harness.Container {
	t.Helper()
	c, err := e.Run(ctx, flags, image, args...)
	if err != nil {
		t.Fatalf("docker run: %v", err)
	}
	c.Cleanup(t)
	c.Follow(ctx)
	t.Logf("container %s: %s run -d %s %s %s", c.Short(), e.CLIName(), strings.Join(flags, " "), image, strings.Join(args, " "))
	return c
}

// waitMultiUser polls until multi-user.target is active, the container exits, or timeout.
func waitMultiUser(ctx context.Context, c *harness.Container, timeout time.Duration) (bool, harness.State, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.State(ctx)
		if err != nil {
			return false, st, err
		}
		if !st.Running {
			return false, st, nil
		}
		if out, _ := c.Exec(ctx, "systemctl", "is-active", "multi-user.target"); strings.TrimSpace(out) == "active" {
			return true, st, nil
		}
		if time.Now().After(deadline) {
			return false, st, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// boot waits for multi-user.target and returns the boot time figure: from docker run to
// systemd's "Startup finished"/multi-user line in the log, or to when systemctl said so.
func boot(ctx context.Context, t *testing.T, c *harness.Container) string {
	t.Helper()
	reached, st, err := waitMultiUser(ctx, c, 90*time.Second)
	at := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if !reached {
		if st.Running {
			t.Fatalf("multi-user.target not reached within 90 s (systemctl is-system-running: %s)", systemState(ctx, c))
		}
		t.Fatalf("container exited with %d, %s after start, before reaching multi-user.target", st.ExitCode, secs(st.FinishedAt.Sub(st.StartedAt)))
	}
	// Also from the container's start, which leaves out docker run's own work.
	if l, ok := c.FirstLine(bootDoneRe); ok {
		own := ""
		// systemd's own figure, if it logged one by now.
		if m, ok := c.FirstLine(startupRe); ok {
			own = "; systemd: " + startupRe.FindStringSubmatch(m.Text)[1]
		}
		return fmt.Sprintf("%s (log; %s from start%s)", secs(l.At.Sub(c.Started)), secs(l.At.Sub(st.StartedAt)), own)
	}
	return fmt.Sprintf("≤ %s (systemctl; ≤ %s)", secs(at.Sub(c.Started)), secs(at.Sub(st.StartedAt)))
}

func systemState(ctx context.Context, c *harness.Container) string {
	out, _ := c.Exec(ctx, "systemctl", "is-system-running")
	return strings.TrimSpace(out)
}

// assertRunning checks `systemctl is-system-running` says running; if not, the failed units are
// listed with their status.
func assertRunning(ctx context.Context, t *testing.T, c *harness.Container) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, _ := c.Exec(wctx, "systemctl", "is-system-running", "--wait")
	state := strings.TrimSpace(out)
	if state == "running" {
		return
	}
	t.Errorf("systemctl is-system-running says %q, want running", state)
	failed, _ := c.Exec(ctx, "systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager")
	for _, line := range strings.Split(strings.TrimSpace(failed), "\n") {
		if fields := strings.Fields(line); len(fields) > 0 {
			t.Errorf("%s failed:\n%s", fields[0], unitStatus(ctx, c, fields[0]))
		}
	}
}

// mainUID returns the real UID of unit's main process.
func mainUID(ctx context.Context, t *testing.T, c *harness.Container, unit string) int {
	t.Helper()
	pid, err := c.Exec(ctx, "systemctl", "show", "-P", "MainPID", unit)
	pid = strings.TrimSpace(pid)
	if err != nil || pid == "" || pid == "0" {
		t.Fatalf("%s has no main process (%q, %v):\n%s", unit, pid, err, unitStatus(ctx, c, unit))
	}
	status, err := c.Exec(ctx, "cat", "/proc/"+pid+"/status")
	if err != nil {
		t.Fatalf("reading /proc/%s/status: %v", pid, err)
	}
	for _, l := range strings.Split(status, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Uid:" {
			var uid int
			if _, err := fmt.Sscan(f[1], &uid); err == nil {
				return uid
			}
		}
	}
	t.Fatalf("no Uid: line in /proc/%s/status:\n%s", pid, status)
	return -1
}

func unitState(ctx context.Context, c *harness.Container, unit string) string {
	out, _ := c.Exec(ctx, "systemctl", "is-active", unit)
	return strings.TrimSpace(out)
}

func unitStatus(ctx context.Context, c *harness.Container, unit string) string {
	out, _ := c.Exec(ctx, "systemctl", "status", "--no-pager", "-l", "-n", "20", unit)
	return out
}

// cgroups returns PID 1's cgroup and the hello service's main process's cgroup.
func cgroups(ctx context.Context, t *testing.T, c *harness.Container) (pid1, svc string) {
	t.Helper()
	pid, err := c.Exec(ctx, "systemctl", "show", "-P", "MainPID", helloUnit)
	pid = strings.TrimSpace(pid)
	if err != nil || pid == "" || pid == "0" {
		t.Fatalf("%s has no main process (%q, %v):\n%s", helloUnit, pid, err, unitStatus(ctx, c, helloUnit))
	}
	p1, err := c.Exec(ctx, "cat", "/proc/1/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := c.Exec(ctx, "cat", "/proc/"+pid+"/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	return unifiedLine(p1), unifiedLine(ps)
}

// unifiedLine picks the cgroup2 line ("0::/path") of a /proc/PID/cgroup; on a hybrid host the
// file also lists v1 hierarchies that say nothing here.
func unifiedLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "0::") {
			return l
		}
	}
	return strings.TrimSpace(s)
}

// assertInitScope checks that with writable cgroups PID 1 moved itself into init.scope, as
// systemd does wherever it can write its cgroup.
func assertInitScope(ctx context.Context, t *testing.T, c *harness.Container) {
	t.Helper()
	out, err := c.Exec(ctx, "cat", "/proc/1/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if l := unifiedLine(out); !strings.HasSuffix(l, "/init.scope") {
		t.Errorf("with writable cgroups PID 1 should be in init.scope: %q", l)
	}
}

// assertOwnCgroup checks that with writable cgroups a unit gets its own cgroup.
func assertOwnCgroup(ctx context.Context, t *testing.T, c *harness.Container) {
	t.Helper()
	pid1, svc := cgroups(ctx, t, c)
	if pid1 == svc || !strings.Contains(svc, helloUnit) {
		t.Errorf("with writable cgroups %s should have its own cgroup: PID 1 %q, service %q", helloUnit, pid1, svc)
	}
}

// stopAndWait runs docker stop (the image's stop signal if signal is empty), waits for the exit
// and checks the exit code is 0 if wantZero. It returns the figures.
func stopAndWait(ctx context.Context, t *testing.T, c *harness.Container, signal string, wantZero bool) (stop, exit string) {
	t.Helper()
	took, err := c.Stop(ctx, signal, 0)
	if err != nil {
		t.Fatalf("docker stop: %v", err)
	}
	code, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sig := signal
	if sig == "" {
		sig = imageStopSig
	}
	stop, exit = secs(took)+" "+sig, fmt.Sprint(code)
	if code != 0 && wantZero {
		t.Errorf("docker stop (%s) took %s and the container exited %d, want 0", sig, secs(took), code)
	}
	return stop, exit
}

// assertUnitsStopped checks the log shows each test unit stopped during shutdown.
func assertUnitsStopped(ctx context.Context, t *testing.T, c *harness.Container) {
	t.Helper()
	logs, err := c.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{helloUnit, hardenedUnit, dynamicUnit} {
		re := regexp.MustCompile(`Stopped ` + regexp.QuoteMeta(u) + `|` + regexp.QuoteMeta(u) + `: Deactivated successfully`)
		if !re.MatchString(logs) {
			t.Errorf("docker logs shows no clean stop of %s (want %s)", u, re)
		}
	}
	// A unit that fails to stop must be explained. Mount units are: the runtime's mounts
	// (/etc/hostname, /etc/hosts, /etc/resolv.conf, the --tmpfs ones) cannot be unmounted without
	// CAP_SYS_ADMIN, and the runtime removes them with the container anyway.
	for _, m := range shutdownFailureRe.FindAllStringSubmatch(logs, -1) {
		if strings.HasSuffix(m[1], ".mount") {
			t.Logf("shutdown: %s failed to unmount (expected: no CAP_SYS_ADMIN; the runtime's mount)", m[1])
			continue
		}
		t.Errorf("shutdown: %s failed to stop: %s", m[1], m[0])
	}
}

// executorFailUnit is a transient unit that fails in systemd-executor; executorErrorRe is the
// executor's own message saying why, which patch 0008 sends to the journal.
const executorFailUnit = "n2d-executor-error.service"

var executorErrorRe = regexp.MustCompile(regexp.QuoteMeta(executorFailUnit) + `: Failed at step USER spawning /bin/true`)

// shutdownFailureRe matches systemd's status line for a unit that failed to stop.
var shutdownFailureRe = regexp.MustCompile(`(?m)Failed (?:unmounting|stopping|to stop) (\S+)`)

// waitLog waits until the followed output matches re, or timeout, and returns the whole log.
func waitLog(ctx context.Context, c *harness.Container, re *regexp.Regexp, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		if _, ok := c.FirstLine(re); ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	logs, _ := c.Logs(ctx)
	return logs
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
