package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// The Nix-native face end to end: the toy example's image spec, built by the
// real nixos/lib/image-spec.nix with Debian's Nix, assembled from the real
// /nix/store. Skipped without nix, git and busybox-static (failing in CI).
func TestAssembleToyFromRealStore(t *testing.T) {
	nix, git := testenv.Need(t, "nix"), testenv.Need(t, "git")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testenv.SkipOrFail(t, "/bin/busybox missing (apt-get install busybox-static): %v", err)
	}
	tree := t.TempDir()
	testenv.CopyTree(t, "../..", tree, "nixos", "examples/toy")
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}} {
		if out, err := command(tree, git, args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	ref := "git+file://" + tree + "?dir=examples/toy#nixosConfigurations.toy.config.system.build.dockerImageSpec"
	out, err := command(tree, nix, "build", "--no-link", "--json", ref)
	if err != nil {
		t.Fatalf("nix build %s: %v\n%s", ref, err, out)
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &built); err != nil || len(built) != 1 {
		t.Fatalf("nix build --json: %v\n%s", err, out)
	}
	specPath := built[0].Outputs["out"]
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}

	image := filepath.Join(t.TempDir(), "toy.tar")
	if code, stderr := runCmd(t, "--spec", specPath, "--out", image); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	archive, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "toy.tar")
	if code, stderr := runCmd(t, "--spec", specPath, "--out", again, "--quiet"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(again); !bytes.Equal(b, archive) {
		t.Error("two runs over the same store give other bytes")
	}

	outer := readTar(t, archive)
	var dm []struct{ Layers []string }
	if err := json.Unmarshal(outer["manifest.json"].data, &dm); err != nil || len(dm) != 1 {
		t.Fatalf("manifest.json: %v", err)
	}
	layerOf := map[string]int{} // store path → layer
	entries := map[string]tarEntry{}
	for i, l := range dm[0].Layers {
		for name, e := range readTar(t, outer[l].data) {
			entries[name] = e
			parts := strings.SplitN(name, "/", 4)
			if len(parts) >= 3 && parts[0] == "nix" && parts[1] == "store" && parts[2] != "" {
				layerOf["/nix/store/"+parts[2]] = i
			}
		}
	}
	if len(dm[0].Layers) > spec.MaxLayers {
		t.Errorf("%d layers, maxLayers %d", len(dm[0].Layers), spec.MaxLayers)
	}
	for _, p := range spec.Closure {
		if _, ok := layerOf[p.Path]; !ok {
			t.Errorf("%s is in no layer", p.Path)
		}
	}
	// The toplevel is in the topmost store layer, the 64 MiB blob has a
	// layer to itself.
	if got := layerOf[spec.Toplevel]; got != len(dm[0].Layers)-2 {
		t.Errorf("toplevel in layer %d of %d", got, len(dm[0].Layers))
	}
	for p, l := range layerOf {
		if strings.HasSuffix(p, "-toy-blob") {
			for q, m := range layerOf {
				if m == l && q != p {
					t.Errorf("toy-blob shares layer %d with %s", l, q)
				}
			}
		}
	}
	// Every file as the store has it: content, mode, symlink target.
	checked := 0
	for _, p := range spec.Closure {
		err := filepath.WalkDir(p.Path, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := strings.TrimPrefix(path, "/")
			fi, err := os.Lstat(path)
			if err != nil {
				return err
			}
			if d.IsDir() {
				name += "/"
			}
			e, ok := entries[name]
			if !ok {
				t.Errorf("%s is not in the image", path)
				return nil
			}
			checked++
			if e.hdr.Mode != int64(fi.Mode().Perm()) && fi.Mode()&fs.ModeSymlink == 0 {
				t.Errorf("%s: mode %o in the image, %o in the store", path, e.hdr.Mode, fi.Mode().Perm())
			}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(path)
				if e.hdr.Linkname != target {
					t.Errorf("%s: link %q, store %q", path, e.hdr.Linkname, target)
				}
			case fi.Mode().IsRegular():
				want, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				if sha256.Sum256(want) != sha256.Sum256(e.data) {
					t.Errorf("%s: content differs", path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d closure paths in %d layers; %d store entries checked against the store", len(spec.Closure), len(dm[0].Layers), checked)
	if checked < len(spec.Closure) {
		t.Errorf("checked only %d entries", checked)
	}

	checkNixDatabase(t, spec, outer, dm[0].Layers)
}

// checkNixDatabase unpacks the image's layers into a root and uses real Nix
// on it as a chroot store (local?root=): the image's registration loads into
// an empty database, after which Nix knows every store path of the image
// with its references, and --verify-path / --verify --check-contents find
// the image's bytes matching the NAR hashes Nix computed when it built them;
// the system profile resolves to the toplevel.
func checkNixDatabase(t *testing.T, spec *imagespec.Spec, outer map[string]tarEntry, layerNames []string) {
	t.Helper()
	nixStore := testenv.Need(t, "nix-store")
	if spec.NixRegistration == "" {
		t.Fatal("the toy's spec has no nixRegistration")
	}
	root := t.TempDir()
	for _, l := range layerNames {
		if err := untar(root, outer[l].data); err != nil {
			t.Fatalf("unpacking layer %s: %v", l, err)
		}
	}
	store := "local?root=" + root
	reg := filepath.Join(root, spec.NixRegistration)
	if _, err := os.Stat(reg); err != nil {
		t.Fatalf("the image has no registration: %v", err)
	}
	nix := func(stdin string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, nixStore, append([]string{"--store", store}, args...)...)
		cmd.Env = append(os.Environ(), "NIX_CONFIG="+testenv.NixConfig)
		if stdin != "" {
			f, err := os.Open(stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nix-store %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	nix(reg, "--load-db")
	nix("", "--verify-path", spec.Toplevel)
	for _, p := range spec.Closure {
		got := strings.Fields(nix("", "--query", "--references", p.Path))
		want := slices.Sorted(slices.Values(p.References))
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("Nix's references of %s: %v, want %v", p.Path, got, want)
		}
	}
	if out := nix("", "--verify", "--check-contents"); strings.Contains(out, "modified") || strings.Contains(out, "invalid") {
		t.Errorf("nix-store --verify --check-contents:\n%s", out)
	}
	requisites := strings.Fields(nix("", "--query", "--requisites", spec.Toplevel))
	if len(requisites) == 0 {
		t.Errorf("Nix knows no requisites of the toplevel")
	}
	// The system profile as nix-env --set leaves it (links inside the root).
	l1, _ := os.Readlink(filepath.Join(root, "nix/var/nix/profiles/system"))
	l2, _ := os.Readlink(filepath.Join(root, "nix/var/nix/profiles", l1))
	if l1 != "system-1-link" || l2 != spec.Toplevel {
		t.Errorf("profiles/system -> %q -> %q, want system-1-link -> %s", l1, l2, spec.Toplevel)
	}

	// The check can fail: one changed byte in a store file of the image and
	// Nix no longer verifies that path.
	var victim string
	for _, p := range spec.Closure {
		if strings.HasSuffix(p.Path, "-toy-message") {
			victim = filepath.Join(root, p.Path)
		}
	}
	if err := os.Chmod(victim, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(victim, []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nixStore, "--store", store, "--verify-path", strings.TrimPrefix(victim, root))
	cmd.Env = append(os.Environ(), "NIX_CONFIG="+testenv.NixConfig)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("nix-store --verify-path accepted a changed path:\n%s", out)
	}
	t.Logf("registration of %d paths loaded by real Nix; every path verified against the image's bytes", len(spec.Closure))
}

// untar unpacks an uncompressed layer tar into dir (regular files,
// directories, symlinks: what the archive writes).
func untar(dir string, data []byte) error {
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(name, dir+string(filepath.Separator)) && name != dir {
			return fmt.Errorf("%s leaves the root", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, 0o755); err != nil {
				return err
			}
			defer os.Chmod(name, os.FileMode(h.Mode).Perm()) // after its contents
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(h.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(name, nil, 0o600); err != nil {
				return err
			}
			f, err := os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Chmod(name, os.FileMode(h.Mode).Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected tar type %c", h.Name, h.Typeflag)
		}
	}
}

type tarEntry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, data []byte) map[string]tarEntry {
	t.Helper()
	out := map[string]tarEntry{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = tarEntry{h, b}
	}
}

// command runs a tool with Debian's Nix configured to work offline as root.
func command(dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NIX_CONFIG="+testenv.NixConfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}
