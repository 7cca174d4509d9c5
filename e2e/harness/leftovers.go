package harness

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Snapshot counts what a test can leave behind in and around the engine. Daemons (dockerd,
// containerd) are not in it: they belong to whoever started the engine.
type Snapshot struct {
	// Containers are the engine's containers (`docker ps -aq`).
	Containers []string
	// Processes are "pid comm" of processes in the engine's cgroup subtree other than dockerd
	// and containerd: container processes and shims.
	Processes []string
	// Cgroups are the directories under the engine's cgroup other than its daemons' leaf.
	Cgroups []string
	// Mounts are host mount points under the engine's root or run dir (there should be none:
	// the engine mounts only in its own namespace).
	Mounts []string
}

func (s Snapshot) String() string {
	return fmt.Sprintf("%d containers %v, %d processes %v, %d cgroups %v, %d host mounts %v",
		len(s.Containers), s.Containers, len(s.Processes), s.Processes, len(s.Cgroups), s.Cgroups, len(s.Mounts), s.Mounts)
}

// Snapshot takes a Snapshot of the running engine.
func (e *Engine) Snapshot(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	out, err := e.Docker(ctx, "ps", "-aq", "--no-trunc")
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	s.Containers = strings.Fields(out)
	slices.Sort(s.Containers)
	if s.Processes, s.Cgroups, err = e.cgroupContents(); err != nil {
		return s, err
	}
	if s.Mounts, err = e.hostMounts(); err != nil {
		return s, err
	}
	return s, nil
}

// cgroupContents lists processes and cgroups under the engine's cgroup subtree.
func (e *Engine) cgroupContents() (procs, cgroups []string, err error) {
	if e.Cgroup2Root == "" || e.Cgroup == "" {
		return nil, nil, nil
	}
	top := filepath.Join(e.Cgroup2Root, e.Cgroup)
	err = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != top && path != filepath.Join(top, "daemons") && !slices.Contains(e.keepCgroups, strings.TrimPrefix(path, e.Cgroup2Root)) {
			cgroups = append(cgroups, strings.TrimPrefix(path, e.Cgroup2Root))
		}
		// cgroup.procs reports size 0: read it to the end.
		data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil // removed meanwhile
		}
		for _, pid := range strings.Fields(string(data)) {
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			name := strings.TrimSpace(string(comm))
			// The daemons, and podman-engine's namespace holder.
			if name == "dockerd" || name == "containerd" || (name == "sleep" && e.script == "podman-engine") {
				continue
			}
			procs = append(procs, pid+" "+name)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading cgroup %s: %w", top, err)
	}
	slices.Sort(procs)
	slices.Sort(cgroups)
	return procs, cgroups, nil
}

// hostMounts lists mount points in the host's mount table under the engine's paths.
func (e *Engine) hostMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		for _, p := range []string{e.Root, e.RunDir} {
			if p != "" && (mp == p || strings.HasPrefix(mp, p+"/")) {
				ms = append(ms, mp)
			}
		}
	}
	return ms, sc.Err()
}

// Diff describes what after has that before had not (empty if nothing).
func Diff(before, after Snapshot) string {
	var b strings.Builder
	add := func(kind string, x, y []string) {
		for _, v := range y {
			if !slices.Contains(x, v) {
				fmt.Fprintf(&b, "%s %s left behind\n", kind, v)
			}
		}
	}
	add("container", before.Containers, after.Containers)
	add("process", before.Processes, after.Processes)
	add("cgroup", before.Cgroups, after.Cgroups)
	add("host mount", before.Mounts, after.Mounts)
	if len(after.Containers) != len(before.Containers) || len(after.Processes) != len(before.Processes) ||
		len(after.Cgroups) != len(before.Cgroups) || len(after.Mounts) != len(before.Mounts) {
		fmt.Fprintf(&b, "counts differ: before %s; after %s\n", before, after)
	}
	return b.String()
}

// WaitNoLeftovers polls until the engine holds no more than before did (shims exit a moment
// after their container is removed) and returns the final difference, empty if none.
func (e *Engine) WaitNoLeftovers(ctx context.Context, before Snapshot, timeout time.Duration) (Snapshot, string, error) {
	deadline := time.Now().Add(timeout)
	for {
		after, err := e.Snapshot(ctx)
		if err != nil {
			return after, "", err
		}
		d := Diff(before, after)
		if d == "" || time.Now().After(deadline) {
			return after, d, nil
		}
		select {
		case <-ctx.Done():
			return after, d, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Leftovers runs `hack/docker-engine leftovers` (or podman-engine's) after the engine is down: it returns what of the
// engine still exists (processes, cgroups, socket, host mounts), empty if nothing.
func (e *Engine) Leftovers(ctx context.Context) (string, error) {
	out, err := runScript(ctx, e.repo, e.script, e.env, nil, "leftovers")
	if err != nil && strings.TrimSpace(out) == "" {
		return "", err
	}
	return strings.TrimSpace(out), nil
}
