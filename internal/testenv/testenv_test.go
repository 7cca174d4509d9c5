package testenv

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInCI(t *testing.T) {
	for v, want := range map[string]bool{"": false, "0": false, "false": false, "FALSE": false, "true": true, "1": true} {
		t.Setenv("CI", v)
		if got := InCI(); got != want {
			t.Errorf("CI=%q: InCI() = %v, want %v", v, got, want)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root := RepoRoot(t)
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv", "testenv.go")); err != nil {
		t.Errorf("RepoRoot = %s: %v", root, err)
	}
}

func TestCopyTree(t *testing.T) {
	root, dst := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a", "b", "f"), []byte("x"), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "other"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	CopyTree(t, root, dst, "a")
	fi, err := os.Stat(filepath.Join(dst, "a", "b", "f"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("copied file: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "other")); !os.IsNotExist(err) {
		t.Errorf("copied a directory it was not asked for: %v", err)
	}
}

// mkLib makes dir/lib/default.nix and returns dir.
func mkLib(t *testing.T, dir, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lib", "default.nix"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The lookup order: NIXPKGS_LIB (no fall-through when it is wrong), then
// ../shared/nixpkgs-lib beside the repository, then the pinned fetch; and
// what the error says when nothing works.
func TestFindNixpkgsLibOrder(t *testing.T) {
	t.Setenv("CI", "")
	base := t.TempDir()
	root := filepath.Join(base, "repo")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	env := mkLib(t, filepath.Join(base, "env"), "{ }")
	shared := mkLib(t, filepath.Join(base, "shared", "nixpkgs-lib"), "{ }")
	fetched := mkLib(t, filepath.Join(base, "fetched"), "{ }")
	fetches := 0
	fetch := func() (string, error) { fetches++; return fetched, nil }
	want := func(what, env, wantDir string) {
		t.Helper()
		got, err := findNixpkgsLib(env, root, fetch)
		if err != nil || got != filepath.Join(wantDir, "lib") {
			t.Errorf("%s: got %q, %v; want %s/lib", what, got, err, wantDir)
		}
	}

	want("NIXPKGS_LIB set, ../shared there", env, env)
	if _, err := findNixpkgsLib(filepath.Join(base, "nothing"), root, fetch); err == nil || !strings.Contains(err.Error(), "NIXPKGS_LIB="+filepath.Join(base, "nothing")) {
		t.Errorf("NIXPKGS_LIB naming no lib: got %v, want an error naming it", err)
	}
	want("NIXPKGS_LIB unset", "", shared)
	if fetches != 0 {
		t.Errorf("fetched %d times while a local lib was there", fetches)
	}
	if err := os.RemoveAll(filepath.Join(base, "shared")); err != nil {
		t.Fatal(err)
	}
	want("no ../shared", "", fetched)
	if fetches != 1 {
		t.Errorf("fetched %d times, want 1", fetches)
	}

	offline := func() (string, error) {
		return "", errors.New("unable to download 'https://…': Couldn't resolve host name (6)")
	}
	_, err := findNixpkgsLib("", root, offline)
	for _, s := range []string{"NIXPKGS_LIB is not set", filepath.Join(base, "shared", "nixpkgs-lib"), "Couldn't resolve host name", "NIXPKGS_LIB=DIR"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("offline: error %v does not say %q", err, s)
		}
	}
	if err != nil && strings.Contains(err.Error(), "In CI") {
		t.Errorf("outside CI the error speaks of CI: %v", err)
	}
	t.Setenv("CI", "true")
	if _, err := findNixpkgsLib("", root, offline); err == nil || !strings.Contains(err.Error(), "In CI, ../shared/nixpkgs-lib") {
		t.Errorf("in CI: error %v does not say ../shared is missing", err)
	}
	empty := func() (string, error) { return base, nil } // a fetched tree without lib/
	if _, err := findNixpkgsLib("", root, empty); err == nil {
		t.Error("a fetched tree without lib/default.nix was accepted")
	}
}

// The pinned fetch's mechanism with real Nix, on a local tarball shaped like
// GitHub's archive of a commit (the pinned URL needs a network these
// machines lack): the tree comes back from the store, and a wrong hash is
// refused.
func TestFetchNixpkgsLib(t *testing.T) {
	Need(t, "nix-instantiate")
	nixHash := Need(t, "nix-hash")
	dir := t.TempDir()
	// A nonce, so the fetch really happens instead of finding last run's path.
	content := fmt.Sprintf("{ nonce = %q; }\n", t.Name()+time.Now().Format(time.RFC3339Nano))
	top := mkLib(t, filepath.Join(dir, "nixpkgs.lib-0000000"), content)
	tgz := filepath.Join(dir, "archive.tar.gz")
	writeTarGz(t, tgz, dir, "nixpkgs.lib-0000000")
	out, err := exec.Command(nixHash, "--type", "sha256", "--base32", top).Output()
	if err != nil {
		t.Fatalf("nix-hash: %v", err)
	}
	hash := strings.TrimSpace(string(out))

	ctx := context.Background()
	got, err := fetchNixpkgsLib(ctx, "file://"+tgz, hash)
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	t.Cleanup(func() {
		cmd := exec.Command("nix-store", "--delete", got)
		cmd.Env = append(os.Environ(), "NIX_CONFIG="+NixConfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("nix-store --delete %s: %v: %s", got, err, out)
		}
	})
	if !strings.HasPrefix(got, "/nix/store/") {
		t.Errorf("fetched to %s, not the Nix store", got)
	}
	if data, err := os.ReadFile(filepath.Join(got, "lib", "default.nix")); err != nil || string(data) != content {
		t.Errorf("fetched lib/default.nix: %q, %v; want %q", data, err, content)
	}
	if _, err := fetchNixpkgsLib(ctx, "file://"+tgz, strings.Repeat("0", 52)); err == nil || !strings.Contains(err.Error(), "hash mismatch") {
		t.Errorf("wrong hash: got %v, want Nix's hash mismatch", err)
	}
}

// writeTarGz writes dir/name as a gzipped tar with name as its top directory.
func writeTarGz(t *testing.T, dst, dir, name string) {
	t.Helper()
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(filepath.Join(dir, name), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	for _, c := range []interface{ Close() error }{tw, zw, f} {
		if cerr := c.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("writing %s: %v", dst, err)
	}
}
