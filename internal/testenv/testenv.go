// Package testenv holds what the project's tests share about the machine they
// run on: whether they run in CI (where a missing tool or service fails the
// test instead of skipping it), the tools they need, where the repository and
// nixpkgs' lib beside it are, Debian's Nix configured to work offline, and
// copying parts of the repository into a scratch tree.
package testenv

import (
	"github.com/nixos2docker/nixos2docker/imagespec"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NixConfig makes Debian's Nix work offline as root, without nixbld users,
// a binary cache or a sandbox (as the builder image does).
const NixConfig = "build-users-group =\nsubstituters =\nexperimental-features = nix-command flakes\nsandbox = false"

// InCI says whether the tests run in CI: CI set, and not "false" or "0".
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

// SkipOrFail skips the test with the message, or fails it in CI, where
// everything a test needs must be there.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format+" (CI is set: a failure, not a skip)", args...)
	}
	t.Skipf(format, args...)
}

// Need returns the path of a tool on PATH, or skips (fails in CI) without it.
func Need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		SkipOrFail(t, "%s not found on PATH (.ci/run installs it): %v", tool, err)
	}
	return p
}

// RepoRoot is the repository's root: the nearest directory above the test's
// working directory that holds flake.nix and go.mod (the frontend's nested
// module has a go.mod of its own, no flake.nix).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "flake.nix")); err == nil {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod and flake.nix above the test's working directory")
		}
		dir = parent
	}
}

// NixpkgsLib is nixpkgs' lib directory (the one holding default.nix):
// $NIXPKGS_LIB/lib, else ../shared/nixpkgs-lib/lib beside the repository, as
// CI lays it out. Skips (fails in CI) when it is not there.
func NixpkgsLib(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("NIXPKGS_LIB")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "..", "shared", "nixpkgs-lib")
	}
	lib := filepath.Join(dir, "lib")
	if _, err := os.Stat(filepath.Join(lib, "default.nix")); err != nil {
		SkipOrFail(t, "nixpkgs lib not found at %s (set NIXPKGS_LIB): %v", dir, err)
	}
	return lib
}

// CopyTree copies the directories rels of root (each relative to root) to
// the same relative places under dst: regular files only, made 0644, so a
// scratch copy of the repository is writable and independent of its modes.
func CopyTree(t testing.TB, root, dst string, rels ...string) {
	t.Helper()
	for _, rel := range rels {
		err := filepath.WalkDir(filepath.Join(root, rel), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			r, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dst, r), 0o755)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dst, r), data, 0o644)
		})
		if err != nil {
			t.Fatalf("copying %s: %v", rel, err)
		}
	}
}

// SpecFixturePath is the image spec fixture both sides' tests share
// (imagespec/testdata/spec-v1.json), as an absolute path.
func SpecFixturePath(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), "imagespec", "testdata", "spec-v1.json")
}

// SpecFixture is the parsed (so validated) image spec fixture; each call
// returns a new copy to modify.
func SpecFixture(t testing.TB) *imagespec.Spec {
	t.Helper()
	data, err := os.ReadFile(SpecFixturePath(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := imagespec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
