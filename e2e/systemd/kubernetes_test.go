package systemd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
)

// Kubernetes-shaped runs (issue 10): examples/kubernetes/pod.yaml mounts memory-backed emptyDir
// volumes on these paths; a kubelet makes each a tmpfs directory of mode 0777 on the node and the
// runtime bind-mounts it. No --tmpfs flags, no privileges.
var kubeMountPaths = []string{"/run", "/run/lock", "/tmp"}

// kubeManifest is the example the tests stand for.
const kubeManifest = "../../examples/kubernetes/pod.yaml"

// TestKubernetesManifest checks the example pod has what the Kubernetes-shaped runs below assume:
// a memory emptyDir on each path, no privileged or added capabilities, the readiness probe.
func TestKubernetesManifest(t *testing.T) {
	data, err := os.ReadFile(kubeManifest)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, p := range kubeMountPaths {
		// - { name: X, mountPath: P } and - { name: X, emptyDir: { medium: Memory, … } }
		m := regexp.MustCompile(`name: ([a-z-]+), mountPath: ` + regexp.QuoteMeta(p) + ` \}`).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s: no volumeMount on %s", kubeManifest, p)
			continue
		}
		if !regexp.MustCompile(`name: ` + m[1] + `, emptyDir: \{ medium: Memory\b`).MatchString(text) {
			t.Errorf("%s: volume %s (on %s) is not an emptyDir with medium: Memory", kubeManifest, m[1], p)
		}
	}
	for _, bad := range []string{"privileged: true", "add:", "hostPath", "/sys/fs/cgroup"} {
		if strings.Contains(text, bad) {
			t.Errorf("%s has %q: the example runs without privileges or host mounts", kubeManifest, bad)
		}
	}
	if !strings.Contains(text, `command: ["systemctl", "is-system-running"]`) {
		t.Errorf("%s: no readiness probe on systemctl is-system-running", kubeManifest)
	}
}

func TestSystemdKubernetesShaped(t *testing.T) {
	patchedTar := patchedTarOrSkip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := dockerEngine(ctx, t, "")
	img, _, err := buildImage(ctx, e, patchedTar, "systemd-patched")
	if err != nil {
		t.Fatal(err)
	}
	before, err := e.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Docker with the pod's mounts and no --tmpfs flags.
	var flags []string
	for _, p := range kubeMountPaths {
		flags = append(flags, "--mount", "type=tmpfs,destination="+p+",tmpfs-mode=0777")
	}
	const dockerMode = "emptyDir-shaped: --mount type=tmpfs (0777) ×3"
	t.Run("docker-mount-tmpfs", func(t *testing.T) {
		bootCase(ctx, t, e, "docker", dockerMode, flags, img, "")
		bootCase(ctx, t, e, "docker", dockerMode, flags, img, "kill TERM")
	})

	// containerd's own client with a spec shaped like the CRI's: containerd's default spec
	// (Docker's 14 capabilities, masked and read-only /proc paths), what the CRI adds on a
	// cgroup-v2 node (cgroup2 mounted read-only, a private cgroup namespace), the pod's mounts, the
	// image's stop signal for the stop and SIGTERM for a runtime that ignores it.
	t.Run("ctr-cri-shaped", func(t *testing.T) {
		ref := importToContainerd(ctx, t, e, img)
		for _, sig := range []string{"", "SIGTERM"} {
			name := "image-stop-signal"
			if sig != "" {
				name = sig
			}
			t.Run(name, func(t *testing.T) { ctrCase(ctx, t, e, ref, sig) })
		}
	})

	noLeftovers(ctx, t, e, before)
}

// ctrNamespace is the containerd namespace of the ctr runs (Docker's is "moby", the CRI's "k8s.io").
const ctrNamespace = "nixos2docker-e2e"

// importToContainerd copies the Docker image into containerd's image store (docker save | ctr
// images import), unless it is there, and returns containerd's name for it.
func importToContainerd(ctx context.Context, t *testing.T, e *harness.Engine, img string) string {
	t.Helper()
	ref := "docker.io/" + img
	if out, err := e.Ctr(ctx, nil, "-n", ctrNamespace, "images", "ls", "-q"); err == nil && strings.Contains(out+"\n", ref+"\n") {
		return ref
	}
	// Images of earlier root filesystems would pile up.
	if out, err := e.Ctr(ctx, nil, "-n", ctrNamespace, "images", "ls", "-q"); err == nil {
		for _, old := range strings.Fields(out) {
			_, _ = e.Ctr(ctx, nil, "-n", ctrNamespace, "images", "rm", old)
		}
	}
	t0 := time.Now()
	pr, pw := io.Pipe()
	save := e.Command(ctx, "save", img)
	save.Stdout = pw
	var saveErr bytes.Buffer
	save.Stderr = &saveErr
	if err := save.Start(); err != nil {
		t.Fatalf("docker save: %v", err)
	}
	go func() { pw.CloseWithError(save.Wait()) }()
	if out, err := e.Ctr(ctx, pr, "-n", ctrNamespace, "images", "import", "-"); err != nil {
		t.Fatalf("ctr images import: %v\n%s\n%s", err, out, saveErr.String())
	}
	t.Logf("imported %s into containerd (%s) in %s", img, ctrNamespace, secs(time.Since(t0)))
	return ref
}

// ctrCase runs the image with `ctr run` and the CRI-shaped spec, checks boot, `running`, logs and
// the stop (sig "": the image's stop signal, as the CRI's StopContainer sends), and records a row.
func ctrCase(ctx context.Context, t *testing.T, e *harness.Engine, ref, sig string) {
	const mode = "CRI-shaped spec: emptyDir-shaped tmpfs ×3, ro cgroup, cgroupns"
	r := &result{Engine: "containerd (ctr)", Mode: mode, Platform: "linux/amd64", Boot: "never", Logs: "-"}
	record(t, r)
	id := fmt.Sprintf("n2d-cri-%d", time.Now().UnixNano()%1e9)
	logFile := filepath.Join(e.RunDir, id+".log")
	ctr := func(args ...string) (string, error) {
		return e.Ctr(ctx, nil, append([]string{"-n", ctrNamespace}, args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(logFile)
			t.Logf("ctr container %s: last 50 lines of output:\n%s", id, harness.TailLines(string(data), 50))
		}
		_, _ = ctr("task", "kill", "-s", "SIGKILL", id)
		for i := 0; i < 50; i++ {
			if _, err := ctr("task", "delete", "--force", id); err == nil || !strings.Contains(taskStatus(ctx, e, id), "RUNNING") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := ctr("containers", "delete", id); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("ctr containers delete %s: %v", id, err)
		}
		_ = os.Remove(logFile)
	})
	args := []string{"run", "-d", "--log-uri", "file://" + logFile,
		// Under the engine's cgroup subtree (ctr's default is /<namespace>/<id> at the root).
		"--cgroup", e.Cgroup + "/" + id,
		// A new cgroup namespace: the CRI's on cgroup v2 (ctr's default spec has none).
		"--with-ns", "cgroup:",
		// No CPU weight: ctr sets 1024 by default and this machine's cgroup2 has no cpu
		// controller (a kubelet sets a weight from the pod's requests on nodes that have one).
		"--cpu-shares", "0",
		// The CRI adds this mount (containerd's default spec has none): cgroupfs read-only, which
		// runc makes a cgroup2 mount on a cgroup-v2 node.
		"--mount", "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev"}
	for _, p := range kubeMountPaths {
		args = append(args, "--mount", "type=tmpfs,src=tmpfs,dst="+p+",options=rw:nosuid:nodev:mode=0777")
	}
	t0 := time.Now()
	if out, err := ctr(append(args, ref, id)...); err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	execIn := func(n int, cmd ...string) (string, error) {
		return ctr(append([]string{"task", "exec", "--exec-id", fmt.Sprintf("probe%d", n), id}, cmd...)...)
	}
	booted := false
	for n := 0; time.Since(t0) < 90*time.Second; n++ {
		if out, _ := execIn(n, "systemctl", "is-active", "multi-user.target"); strings.TrimSpace(out) == "active" {
			booted = true
			break
		}
		if !strings.Contains(taskStatus(ctx, e, id), "RUNNING") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !booted {
		t.Fatalf("multi-user.target not reached (task %s)", taskStatus(ctx, e, id))
	}
	r.Boot = "≤ " + secs(time.Since(t0))
	if out, _ := execIn(1000, "systemctl", "is-system-running", "--wait"); strings.TrimSpace(out) != "running" {
		failed, _ := execIn(1001, "systemctl", "list-units", "--failed", "--no-pager")
		t.Errorf("systemctl is-system-running: %q, want running:\n%s", strings.TrimSpace(out), failed)
	}
	// The spec is the one asked for: read-only cgroup2, its own cgroup namespace, Docker's caps.
	if out, err := execIn(1002, "sh", "-c", "grep ' /sys/fs/cgroup ' /proc/self/mountinfo; grep CapEff /proc/1/status; cat /proc/1/cgroup"); err == nil {
		if m := cgroupMountRe.FindStringSubmatch(out); m != nil {
			r.Cgroup = m[1]
		}
		if !regexp.MustCompile(`/sys/fs/cgroup ro,.* - cgroup2 `).MatchString(out) || !strings.Contains(out, "CapEff:\t00000000a80425fb") || !strings.Contains(out, "0::/\n") {
			t.Errorf("the ctr spec is not CRI-shaped (want cgroup2 read-only, CapEff 00000000a80425fb, PID 1 at its cgroup namespace's root):\n%s", out)
		}
	} else {
		t.Errorf("inspecting the container: %v", err)
	}
	var logs string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		data, _ := os.ReadFile(logFile)
		if logs = string(data); strings.Contains(logs, helloLine) {
			break
		}
	}
	r.Logs = "boot + units"
	if !bootLinesRe.MatchString(logs) || !strings.Contains(logs, helloLine) {
		r.Logs = "missing"
		t.Errorf("the log (ctr --log-uri) lacks systemd's boot lines or %q:\n%s", helloLine, harness.TailLines(logs, 30))
	}
	killArgs := []string{"task", "kill"}
	how := "kill (image stop signal)"
	if sig == "" {
		// ctr run records the image's STOPSIGNAL as a label, which `ctr task kill` sends, as the
		// CRI's StopContainer does.
		info, err := ctr("containers", "info", id)
		if err != nil || !strings.Contains(info, `"io.containerd.image.config.stop-signal": "`+imageStopSig+`"`) {
			t.Errorf("the container's stop-signal label is not %s (%v):\n%s", imageStopSig, err, harness.TailLines(info, 40))
		}
		how = "kill (image's " + imageStopSig + ")"
	}
	if sig != "" {
		killArgs, how = append(killArgs, "-s", sig), "kill "+sig
	}
	t1 := time.Now()
	if out, err := ctr(append(killArgs, id)...); err != nil {
		t.Fatalf("ctr task kill: %v\n%s", err, out)
	}
	for time.Since(t1) < 30*time.Second && strings.Contains(taskStatus(ctx, e, id), "RUNNING") {
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(t1)
	// ctr task delete exits with the task's exit code.
	code := 0
	if _, err := ctr("task", "delete", id); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("ctr task delete: %v", err)
		}
		code = ee.ExitCode()
	}
	r.Stop, r.Exit = how+", "+secs(took), fmt.Sprint(code)
	if code != 0 {
		t.Errorf("ctr task %s: exited %d after %s, want 0", how, code, secs(took))
	}
	data, _ := os.ReadFile(logFile)
	for _, u := range []string{helloUnit, hardenedUnit, dynamicUnit} {
		if !regexp.MustCompile(`Stopped ` + regexp.QuoteMeta(u) + `|` + regexp.QuoteMeta(u) + `: Deactivated successfully`).Match(data) {
			t.Errorf("the log shows no clean stop of %s", u)
		}
	}
}

// taskStatus is the STATUS column of `ctr task ls` for id ("" if it has no task).
func taskStatus(ctx context.Context, e *harness.Engine, id string) string {
	out, _ := e.Ctr(ctx, nil, "-n", ctrNamespace, "task", "ls")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}
