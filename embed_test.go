package nixos2docker

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every Nix file of the module and every patch is embedded, byte for byte,
// and nothing else: a new folder under nixos/ must not be silently missing
// from the builder stage.
func TestModuleHasTheRepositoryFiles(t *testing.T) {
	want := map[string]bool{}
	for _, root := range []string{"nixos", "patches/systemd"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p == "nixos/tests" {
					return fs.SkipDir // test cases and fixtures stay out of the build
				}
				return nil
			}
			if root == "nixos" && !strings.HasSuffix(p, ".nix") {
				return nil // Go tests and the like
			}
			want[filepath.ToSlash(p)] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"nixos/docker-image.nix", "nixos/lib/image-spec.nix"} {
		if !want[f] {
			t.Fatalf("%s is not in the repository", f)
		}
	}
	checkFS(t, "Module", Module(), want)
	want["flake.nix"] = true
	checkFS(t, "Source", Source(), want)
}

func checkFS(t *testing.T, name string, fsys fs.FS, want map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		got[p] = true
		if !want[p] {
			t.Errorf("%s: embedded but not wanted: %s", name, p)
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		disk, err := os.ReadFile(filepath.FromSlash(p))
		if err != nil || string(disk) != string(data) {
			t.Errorf("%s: %s: embedded copy differs from the file (%v)", name, p, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range want {
		if !got[p] {
			t.Errorf("%s: not embedded: %s (add its folder to the go:embed lines in embed.go)", name, p)
		}
	}
}
