package testenv

import (
	"os"
	"path/filepath"
	"testing"
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
