// Package testenv holds what the project's tests share about the machine they
// run on: whether they run in CI (where a missing tool or service fails the
// test instead of skipping it), the tools they need, where the repository and
// nixpkgs' lib beside it are, Debian's Nix configured to work offline, and
// copying parts of the repository into a scratch tree.
package testenv

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nixos2docker/nixos2docker/imagespec"
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

// NixpkgsLib is nixpkgs' lib directory (the one holding default.nix), from
// the first of:
//
//  1. $NIXPKGS_LIB/lib: when NIXPKGS_LIB is set, it must hold lib/default.nix;
//  2. ../shared/nixpkgs-lib/lib beside the repository (CI's offline copy);
//  3. nixpkgs' lib at the commit pinned in nixpkgs-lib.nix, fetched by Nix
//     once (it then stays in the Nix store).
//
// Without any of them the test fails, in CI and out of it, saying how to
// provide it: tests that need it must not pass by skipping.
func NixpkgsLib(t testing.TB) string {
	t.Helper()
	lib, err := findNixpkgsLib(os.Getenv("NIXPKGS_LIB"), RepoRoot(t), pinnedNixpkgsLib)
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

// nixpkgsLibPin is a Nix function of { url, sha256 } with the pinned ones as
// defaults, giving the unpacked nixpkgs.lib tree.
//
//go:embed nixpkgs-lib.nix
var nixpkgsLibPin string

// findNixpkgsLib is NixpkgsLib's lookup: env is NIXPKGS_LIB's value, root
// the repository's root, fetch gives the pinned tree (the one holding lib/).
func findNixpkgsLib(env, root string, fetch func() (string, error)) (string, error) {
	has := func(dir string) error {
		_, err := os.Stat(filepath.Join(dir, "lib", "default.nix"))
		return err
	}
	if env != "" {
		if err := has(env); err != nil {
			return "", fmt.Errorf("NIXPKGS_LIB=%s holds no nixpkgs lib (want %s): %w", env, filepath.Join(env, "lib", "default.nix"), err)
		}
		return filepath.Join(env, "lib"), nil
	}
	shared := filepath.Join(filepath.Dir(root), "shared", "nixpkgs-lib")
	if has(shared) == nil {
		return filepath.Join(shared, "lib"), nil
	}
	dir, err := fetch()
	if err == nil {
		err = has(dir)
	}
	if err != nil {
		ci := ""
		if InCI() {
			ci = " In CI, ../shared/nixpkgs-lib is laid beside the clone: it is missing."
		}
		return "", fmt.Errorf("nixpkgs lib not found: NIXPKGS_LIB is not set, there is no %s, and fetching the pinned one (internal/testenv/nixpkgs-lib.nix) failed: %w\n"+
			"Provide it with NIXPKGS_LIB=DIR, DIR holding nixpkgs' lib/ (a nixpkgs checkout, or nix-community/nixpkgs.lib), or let Nix reach github.com once to fetch the pinned one.%s", shared, err, ci)
	}
	return filepath.Join(dir, "lib"), nil
}

var pinned struct {
	once sync.Once
	dir  string
	err  error
}

// pinnedNixpkgsLib fetches the pinned nixpkgs lib, once per test binary.
func pinnedNixpkgsLib() (string, error) {
	pinned.once.Do(func() {
		pinned.dir, pinned.err = fetchNixpkgsLib(context.Background(), "", "")
	})
	return pinned.dir, pinned.err
}

// fetchNixpkgsLib evaluates nixpkgs-lib.nix with Nix (Debian's is enough),
// with url and sha256 overriding the pinned ones when set, and returns the
// store path of the unpacked tree.
func fetchNixpkgsLib(ctx context.Context, url, sha256 string) (string, error) {
	nixInstantiate, err := exec.LookPath("nix-instantiate")
	if err != nil {
		return "", fmt.Errorf("nix-instantiate not found (hack/lib/deps.sh installs nix-bin): %w", err)
	}
	args := "{ }"
	if url != "" {
		args = fmt.Sprintf("{ url = %q; sha256 = %q; }", url, sha256)
	}
	// --read-write-mode: --eval alone would not add the fetched tree to the store.
	cmd := exec.CommandContext(ctx, nixInstantiate, "--eval", "--read-write-mode", "--json",
		"--expr", "toString ((\n"+nixpkgsLibPin+"\n) "+args+")")
	cmd.Env = append(os.Environ(), "NIX_CONFIG="+NixConfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, nixError(stderr.String()))
	}
	var dir string
	if err := json.Unmarshal(out, &dir); err != nil {
		return "", fmt.Errorf("reading nix-instantiate's answer %q: %w", out, err)
	}
	return dir, nil
}

// nixError is the error a Nix run printed last (from its last line starting
// with "error:"), without the retry warnings before it, on one line.
func nixError(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	from := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "error:") {
			from = i
		}
	}
	return strings.Join(strings.Fields(strings.Join(lines[from:], " ")), " ")
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
