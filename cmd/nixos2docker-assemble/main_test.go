package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/imagespec"
)

// fixture is the spec both sides of the contract test against.
const fixture = "../../imagespec/testdata/spec-v1.json"

// fakeStore makes a store holding every path of the fixture's closure.
func fakeStore(t *testing.T) (store string, spec *imagespec.Spec) {
	t.Helper()
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	spec, err = imagespec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	store = t.TempDir()
	for _, p := range spec.Closure {
		dir := filepath.Join(store, filepath.Base(p.Path))
		if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bin", "run"), []byte("#!"+p.Path), 0o555); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("bin/run", filepath.Join(dir, "init")); err != nil {
			t.Fatal(err)
		}
	}
	return store, spec
}

func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stderr.String()
}

func TestAssemble(t *testing.T) {
	store, spec := fakeStore(t)
	out := filepath.Join(t.TempDir(), "image.tar")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	code, stderr := runCmd(t, "--spec", fixture, "--out", out, "--store-dir", store)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "layer 1/") || !strings.Contains(stderr, "glibc-2.42") || !strings.Contains(stderr, "root skeleton") {
		t.Errorf("progress lines missing:\n%s", stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil || len(dm) != 1 {
		t.Fatalf("manifest.json: %v %s", err, files["manifest.json"])
	}
	if dm[0].RepoTags[0] != "web:latest" || len(dm[0].Layers) < 2 || len(dm[0].Layers) > spec.MaxLayers {
		t.Errorf("manifest.json: %+v", dm[0])
	}
	var img dockerspec.DockerOCIImage
	if err := json.Unmarshal(files[dm[0].Config], &img); err != nil {
		t.Fatal(err)
	}
	if !img.Created.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH", img.Created)
	}
	if len(img.RootFS.DiffIDs) != len(dm[0].Layers) {
		t.Errorf("%d diff IDs for %d layers", len(img.RootFS.DiffIDs), len(dm[0].Layers))
	}
	assertNoTemp(t, filepath.Dir(out), 1)

	// Same inputs, same bytes.
	out2 := filepath.Join(t.TempDir(), "again.tar")
	if code, stderr := runCmd(t, "--spec", fixture, "--out", out2, "--store-dir", store, "--quiet"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	} else if stderr != "" {
		t.Errorf("--quiet printed %q", stderr)
	}
	if again, _ := os.ReadFile(out2); !bytes.Equal(data, again) {
		t.Error("a second run gives other bytes")
	}
}

// assertNoTemp checks that dir holds exactly want entries (no temp files).
func assertNoTemp(t *testing.T, dir string, want int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != want {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v, want %d entries", dir, names, want)
	}
}

func TestAssembleFailures(t *testing.T) {
	store, _ := fakeStore(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "image.tar")
	badSpec := filepath.Join(dir, "v2.json")
	if err := os.WriteFile(badSpec, []byte(`{"version": 2}`), 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		args []string
		env  string
		code int
		want string
	}{
		{"no spec", []string{"--out", out}, "", 2, "--spec is required"},
		{"no out", []string{"--spec", fixture}, "", 2, "--out is required"},
		{"extra argument", []string{"--spec", fixture, "--out", out, "more"}, "", 2, `unexpected argument "more"`},
		{"unknown flag", []string{"--nope"}, "", 2, "flag provided but not defined"},
		{"missing spec file", []string{"--spec", filepath.Join(dir, "absent.json"), "--out", out}, "", 1, "reading the spec"},
		{"unknown version", []string{"--spec", badSpec, "--out", out}, "", 1, "unsupported version 2"},
		{"bad epoch", []string{"--spec", fixture, "--out", out, "--store-dir", store}, "yesterday", 1, "SOURCE_DATE_EPOCH"},
		{"empty store", []string{"--spec", fixture, "--out", out, "--store-dir", t.TempDir()}, "", 1, "missing"},
		{"no output dir", []string{"--spec", fixture, "--out", filepath.Join(dir, "nodir", "x.tar"), "--store-dir", store}, "", 1, "creating the output"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", c.env)
			code, stderr := runCmd(t, c.args...)
			if code != c.code || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, c.code, c.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output written despite the failure (%v)", err)
			}
			assertNoTemp(t, dir, 1) // only v2.json
		})
	}

	// A failure leaves an existing output untouched.
	if err := os.WriteFile(out, []byte("old image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := runCmd(t, "--spec", fixture, "--out", out, "--store-dir", t.TempDir()); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if got, _ := os.ReadFile(out); string(got) != "old image" {
		t.Errorf("output changed to %d bytes by a failed run", len(got))
	}
}

func TestHelp(t *testing.T) {
	code, stderr := runCmd(t, "-h")
	if code != 0 || !strings.Contains(stderr, "usage: nixos2docker-assemble --spec") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}
