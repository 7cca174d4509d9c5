package nixos_test

// The systemd patch series (patches/systemd/<major>, chosen by the module's
// nixos/lib/systemd-patches.nix) and hack/systemd-patches-check, which applies
// them to pristine systemd sources. The series themselves are applied to real
// systemd sources by that script (Debian's in CI, tags of a git mirror where
// one is at hand) and built and booted by hack/systemd-e2e; these tests need
// only patch and git.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// shippedMajors are the systemd majors of the nixpkgs branches the module
// supports (nixos/README.md, "nixpkgs facts"): nixos-26.05 ships 260.1,
// master shipped 261.x before 262. Each needs a series, or every user of that
// branch gets an evaluation error.
var shippedMajors = []string{"260", "261", "262"}

func seriesPatches(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "series"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			names = append(names, l)
		}
	}
	return names
}

func TestSeriesFiles(t *testing.T) {
	root := filepath.Join(testenv.RepoRoot(t), "patches", "systemd")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var majors []string
	// A comment naming the upstream tag the series was written against.
	tagComment := regexp.MustCompile(`(?m)^#.*\bv(\d+)(\.\d+)?\b`)
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "series")); err != nil {
			t.Errorf("%s: no series file", dir)
			continue
		}
		majors = append(majors, e.Name())
		series, _ := os.ReadFile(filepath.Join(dir, "series"))
		if m := tagComment.FindSubmatch(series); m == nil || string(m[1]) != e.Name() {
			t.Errorf("%s/series: want a comment naming the tag v%s[.N] it was written against", dir, e.Name())
		}
		listed := seriesPatches(t, dir)
		for _, p := range listed {
			if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
				t.Errorf("%s/series names %s: %v", dir, p, err)
			}
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.patch"))
		for _, f := range files {
			if !slices.Contains(listed, filepath.Base(f)) {
				t.Errorf("%s is not in %s/series", f, dir)
			}
		}
	}
	for _, m := range shippedMajors {
		if !slices.Contains(majors, m) {
			t.Errorf("no series for systemd %s, which a supported nixpkgs branch ships (series: %v)", m, majors)
		}
	}
}

// TestSeriesSameChanges: every series makes the same changes as 262's (the
// one CI builds and boots): ports differ only in context lines and line
// numbers.
func TestSeriesSameChanges(t *testing.T) {
	root := filepath.Join(testenv.RepoRoot(t), "patches", "systemd")
	changes := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, l := range strings.Split(string(data), "\n") {
			if (strings.HasPrefix(l, "+") || strings.HasPrefix(l, "-")) && !strings.HasPrefix(l, "+++") && !strings.HasPrefix(l, "---") {
				b.WriteString(l + "\n")
			}
		}
		return b.String()
	}
	ref := seriesPatches(t, filepath.Join(root, "262"))
	for _, m := range shippedMajors {
		got := seriesPatches(t, filepath.Join(root, m))
		if !slices.Equal(got, ref) {
			t.Errorf("%s/series = %v, want the patches of 262/series %v", m, got, ref)
			continue
		}
		for _, p := range ref {
			if changes(filepath.Join(root, m, p)) != changes(filepath.Join(root, "262", p)) {
				t.Errorf("%s/%s adds or removes other lines than 262/%s", m, p, p)
			}
		}
	}
}

type checkResult struct {
	stdout, stderr string
	code           int
}

// runCheck runs hack/systemd-patches-check with patches/systemd replaced by
// patchesRoot.
func runCheck(t *testing.T, patchesRoot string, env []string, args ...string) checkResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.RepoRoot(t), "hack", "systemd-patches-check"), args...)
	cmd.Env = append(os.Environ(), append([]string{"SYSTEMD_PATCHES_ROOT=" + patchesRoot, "SYSTEMD_PATCHES_CHECK_DEBIAN=0"}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running hack/systemd-patches-check: %v", err)
	}
	return checkResult{out.String(), errb.String(), code}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A one-hunk patch of src/core/manager.c: "b" becomes "B" between a and c.
const fixturePatch = `--- a/src/core/manager.c
+++ b/src/core/manager.c
@@ -2,3 +2,3 @@
 a
-b
+B
 c
`

// TestPatchesCheck runs hack/systemd-patches-check on a fixture series
// against trees and tags made here: it says which source it checked, accepts
// offsets, refuses fuzz, and fails for a source that is not there.
func TestPatchesCheck(t *testing.T) {
	testenv.Need(t, "patch")
	git := testenv.Need(t, "git")
	patches := t.TempDir()
	write(t, filepath.Join(patches, "900", "series"), "# fixture\n# upstream-tag: v900\n0001-b.patch\n")
	write(t, filepath.Join(patches, "900", "0001-b.patch"), fixturePatch)

	trees := t.TempDir()
	exact := filepath.Join(trees, "exact")
	write(t, filepath.Join(exact, "src/core/manager.c"), "0\na\nb\nc\nd\n")
	offset := filepath.Join(trees, "offset")
	write(t, filepath.Join(offset, "src/core/manager.c"), "x\ny\nz\n0\na\nb\nc\nd\n")
	fuzz := filepath.Join(trees, "fuzz")
	write(t, filepath.Join(fuzz, "src/core/manager.c"), "0\nA\nb\nc\nd\n")

	// A git mirror with tags v900 (applies) and v900.1 (needs fuzz).
	mirror := filepath.Join(t.TempDir(), "systemd")
	gitRun := func(args ...string) {
		t.Helper()
		cmd := exec.Command(git, append([]string{"-C", mirror, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	write(t, filepath.Join(mirror, "src/core/manager.c"), "0\na\nb\nc\nd\n")
	gitRun("init", "-q")
	gitRun("add", "-A")
	gitRun("commit", "-qm", "v900")
	gitRun("tag", "v900")
	write(t, filepath.Join(mirror, "src/core/manager.c"), "0\nA\nb\nc\nd\n")
	gitRun("commit", "-qam", "v900.1")
	gitRun("tag", "v900.1")
	gitEnv := []string{"SYSTEMD_GIT_DIR=" + mirror}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want []string
	}{
		{"exact tree", nil, []string{"900@" + exact}, 0, []string{"900 @ " + exact + ": ok (1 patches)"}},
		{"offset", nil, []string{"900@" + offset}, 0, []string{"900 @ " + offset + ": ok (1 patches)"}},
		{"fuzz", nil, []string{"900@" + fuzz}, 1, []string{"900 @ " + fuzz + ": FAIL: 0001-b.patch does not apply", "Hunk #1 FAILED"}},
		{"tag", gitEnv, []string{"900@v900"}, 0, []string{"900 @ v900 (git ", mirror + "): ok (1 patches)"}},
		{"point release needing fuzz", gitEnv, []string{"900@v900.1"}, 1, []string{"900 @ v900.1 (git ", "FAIL: 0001-b.patch"}},
		{"default: every tag of the major", gitEnv, nil, 1, []string{"900 @ v900 (git ", "ok (1 patches)", "900 @ v900.1 (git ", "FAIL"}},
		{"missing tag", gitEnv, []string{"900@v900.7"}, 1, []string{"900 @ v900.7: FAIL: no systemd git mirror here has tag v900.7"}},
		{"no series", nil, []string{"901"}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCheck(t, patches, tc.env, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
	// Nothing is left in the trees it checked.
	for _, d := range []string{exact, offset, fuzz} {
		got, _ := os.ReadFile(filepath.Join(d, "src/core/manager.c"))
		if strings.Contains(string(got), "B") {
			t.Errorf("%s was patched in place", d)
		}
	}
}
