package systemd

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// envResults names the file where the suite writes its engine × mode × platform results (TSV)
// at the end of a run; hack/systemd-e2e and hack/arm64-e2e set it, and hack/engines-table turns
// the latest files into README's table.
const envResults = "NIXOS2DOCKER_E2E_RESULTS"

// result is one row of README's engines table: what booting the patched image gave on one
// engine, in one mode, on one platform.
type result struct {
	Engine, Mode, Platform string
	// Boot is the time from `run` to multi-user.target ("never" if not reached).
	Boot string
	// Cgroup is how /sys/fs/cgroup is mounted in the container: "ro" or "rw".
	Cgroup string
	// Logs says whether the engine's log command showed systemd's boot lines and a unit's output.
	Logs string
	// Stop is how the container was stopped and how long it took; Exit its exit code.
	Stop, Exit string
	// Result is "ok", or what failed.
	Result string
}

var results struct {
	mu   sync.Mutex
	rows []result
}

// record adds a row for README's table when t ends: its Result is "FAIL" if t failed, else as
// set, or "ok".
func record(t *testing.T, r *result) {
	t.Cleanup(func() {
		switch {
		case t.Failed():
			r.Result = "FAIL"
		case r.Result == "":
			r.Result = "ok"
		}
		t.Logf("row: %s | %s | %s | cgroup %s | boot %s | logs %s | %s | exit %s | %s", r.Engine, r.Mode, r.Platform, r.Cgroup, r.Boot, r.Logs, r.Stop, r.Exit, r.Result)
		results.mu.Lock()
		defer results.mu.Unlock()
		results.rows = append(results.rows, *r)
	})
}

// resultsTSV renders rows as tab-separated lines with a header, sorted by engine, mode,
// platform and stop, so reruns give comparable files.
func resultsTSV(rows []result) string {
	rows = append([]result(nil), rows...)
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.Engine != b.Engine {
			return a.Engine < b.Engine
		}
		if a.Mode != b.Mode {
			return a.Mode < b.Mode
		}
		if a.Platform != b.Platform {
			return a.Platform < b.Platform
		}
		return a.Stop < b.Stop
	})
	clean := func(s string) string { return strings.NewReplacer("\t", " ", "\n", " ", "|", "/").Replace(s) }
	var b strings.Builder
	b.WriteString("engine\tmode\tplatform\tcgroup\tboot\tlogs\tstop\texit\tresult\n")
	for _, r := range rows {
		f := []string{r.Engine, r.Mode, r.Platform, r.Cgroup, r.Boot, r.Logs, r.Stop, r.Exit, r.Result}
		for i := range f {
			if f[i] = clean(f[i]); f[i] == "" {
				f[i] = "-"
			}
		}
		b.WriteString(strings.Join(f, "\t") + "\n")
	}
	return b.String()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if file := os.Getenv(envResults); file != "" && len(results.rows) > 0 {
		err := os.MkdirAll(filepath.Dir(file), 0o755)
		if err == nil {
			err = os.WriteFile(file, []byte(resultsTSV(results.rows)), 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "writing results: %v\n", err)
		} else {
			fmt.Fprintf(os.Stderr, "results: %d rows in %s\n", len(results.rows), file)
		}
	}
	os.Exit(code)
}

func TestResultsTSV(t *testing.T) {
	got := resultsTSV([]result{
		{Engine: "podman", Mode: "b", Platform: "linux/amd64", Boot: "1 s", Result: "ok"},
		{Engine: "docker", Mode: "a|x", Platform: "linux/amd64", Stop: "0.3 s\tTERM", Result: "FAIL"},
	})
	want := "engine\tmode\tplatform\tcgroup\tboot\tlogs\tstop\texit\tresult\n" +
		"docker\ta/x\tlinux/amd64\t-\t-\t-\t0.3 s TERM\t-\tFAIL\n" +
		"podman\tb\tlinux/amd64\t-\t1 s\t-\t-\t-\tok\n"
	if got != want {
		t.Errorf("resultsTSV:\n%s\nwant:\n%s", got, want)
	}
}
