package integration

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/tonistiigi/fsutil"

	"github.com/nixos2docker/nixos2docker/imagespec"
)

// The toy example: a flake in examples/toy that imports ../../nixos/lib, so its build context
// is a tree with both (see toyContext) and the flake is in a subdirectory of it.
const (
	toyFlakeDir = "examples/toy"
	toyTarget   = "toy"
	toyAttr     = "nixosConfigurations." + toyTarget + ".config.system.build.dockerImageSpec"
	// toyChangeFile is the toy's file that only one derivation (toy-message) reads.
	toyChangeFile = "examples/toy/message.txt"
)

// expectedSpec builds the image spec of the flake in dir with Nix in the builder image, without
// the frontend: it is what the tests hold the frontend's image against.
func (e *testEnv) expectedSpec(ctx context.Context, t *testing.T, dir string) (*imagespec.Spec, error) {
	t.Helper()
	fs, err := fsutil.NewFS(dir)
	if err != nil {
		return nil, fmt.Errorf("flake dir %s: %w", dir, err)
	}
	script := `set -e
nix build --no-link --print-out-paths "path:/src?dir=` + toyFlakeDir + `#` + toyAttr + `" > /out/path
cp "$(cat /out/path)" /out/spec.json
`
	var data []byte
	c := e.client(t)
	ch := make(chan *client.SolveStatus)
	var logs string
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, logs = collectStatus(ch)
	}()
	_, err = c.Build(ctx, client.SolveOpt{LocalMounts: map[string]fsutil.FS{"flake": fs}}, "nixos2docker-integration",
		func(ctx context.Context, c gwclient.Client) (*gwclient.Result, error) {
			run := llb.Image(e.BuilderImage).Run(
				llb.Args([]string{"/bin/sh", "-c", script}),
				llb.Network(llb.NetModeNone),
				llb.AddMount("/src", llb.Local("flake", llb.SharedKeyHint("nixos2docker-integration-flake")), llb.Readonly),
			)
			def, err := run.AddMount("/out", llb.Scratch()).Marshal(ctx)
			if err != nil {
				return nil, fmt.Errorf("marshal: %w", err)
			}
			res, err := c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
			if err != nil {
				return nil, fmt.Errorf("nix build %s: %w", toyAttr, err)
			}
			ref, err := res.SingleRef()
			if err != nil {
				return nil, err
			}
			data, err = ref.ReadFile(ctx, gwclient.ReadRequest{Filename: "spec.json"})
			if err != nil {
				return nil, fmt.Errorf("reading spec.json: %w", err)
			}
			return gwclient.NewResult(), nil
		}, ch)
	<-done
	if err != nil {
		return nil, fmt.Errorf("building the expected spec of %s: %w\n--- log ---\n%s", dir, err, tail(logs, 30))
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("spec of %s: %w", dir, err)
	}
	return spec, nil
}

// layerOf maps every store path of img to the indexes of the layers holding any of it.
func layerOf(img *ociImage) map[string][]int {
	m := map[string][]int{}
	for i, l := range img.Layers {
		for _, p := range l.StorePaths() {
			m[p] = append(m[p], i)
		}
	}
	return m
}

// checkImage holds an exported image against the spec it was built from: every closure path in
// exactly one layer and its root entry exactly once, nothing else under /nix/store, at most
// maxLayers layers, the config and the skeleton from the spec, one history entry per layer.
func checkImage(t *testing.T, img *ociImage, spec *imagespec.Spec) {
	t.Helper()
	closure := map[string]bool{}
	for _, p := range spec.Closure {
		closure[p.Path] = true
	}
	if len(img.Layers) > spec.MaxLayers {
		t.Errorf("%d layers, more than maxLayers %d", len(img.Layers), spec.MaxLayers)
	}
	if len(img.Layers) < 2 {
		t.Errorf("%d layers: expected store layers and a skeleton layer", len(img.Layers))
	}

	roots := map[string]int{} // store path → number of root entries over all layers
	for _, l := range img.Layers {
		for _, en := range l.Entries {
			if p := storePathOf(en.Name); p != "" && "/"+en.Name == p {
				roots[p]++
			}
			if en.UID != 0 || en.GID != 0 {
				t.Errorf("layer %s: %s owned by %d:%d, want 0:0", short(l.Digest), en.Name, en.UID, en.GID)
			}
		}
	}
	where := layerOf(img)
	for _, p := range sortedKeys(closure) {
		switch {
		case len(where[p]) == 0:
			t.Errorf("closure path %s is in no layer", p)
		case len(where[p]) > 1:
			t.Errorf("closure path %s is spread over layers %v", p, where[p])
		case roots[p] != 1:
			t.Errorf("closure path %s has %d root entries, want exactly 1", p, roots[p])
		}
	}
	for _, p := range sortedKeys(where) {
		if !closure[p] {
			t.Errorf("%s is under /nix/store but not in the closure", p)
		}
	}

	cfg := img.Config.Config
	want := spec.Config
	eq := func(field string, got, want any) {
		if !reflect.DeepEqual(got, want) {
			t.Errorf("image config %s = %#v, want %#v (from the spec)", field, got, want)
		}
	}
	eq("Entrypoint", cfg.Entrypoint, want.Entrypoint)
	eq("Cmd", cfg.Cmd, want.Cmd)
	eq("Env", cfg.Env, want.Env)
	eq("StopSignal", cfg.StopSignal, want.StopSignal)
	eq("WorkingDir", cfg.WorkingDir, want.WorkingDir)
	eq("User", cfg.User, want.User)
	eq("ExposedPorts", sortedKeys(cfg.ExposedPorts), sortedKeys(want.ExposedPorts))
	eq("Volumes", sortedKeys(cfg.Volumes), sortedKeys(want.Volumes))
	for k, v := range want.Labels {
		if cfg.Labels[k] != v {
			t.Errorf("image label %s = %q, want %q", k, cfg.Labels[k], v)
		}
	}
	if want.Healthcheck != nil {
		if cfg.Healthcheck == nil {
			t.Errorf("image has no Healthcheck, the spec has %v", want.Healthcheck.Test)
		} else {
			eq("Healthcheck.Test", cfg.Healthcheck.Test, want.Healthcheck.Test)
		}
	}
	if img.Config.OS != "linux" || img.Config.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", img.Config.OS, img.Config.Architecture)
	}
	if n := len(img.Config.RootFS.DiffIDs); n != len(img.Layers) {
		t.Errorf("%d diff_ids for %d layers", n, len(img.Layers))
	}
	nonEmpty := 0
	for _, h := range img.Config.History {
		if !h.EmptyLayer {
			nonEmpty++
			if h.CreatedBy == "" && h.Comment == "" {
				t.Errorf("a history entry says neither created_by nor comment")
			}
		}
	}
	if nonEmpty != len(img.Layers) {
		t.Errorf("%d non-empty history entries for %d layers", nonEmpty, len(img.Layers))
	}

	// The skeleton: the last entry of a path over all layers is what the container sees.
	final := map[string]layerEntry{}
	for _, l := range img.Layers {
		for _, en := range l.Entries {
			final["/"+en.Name] = en
		}
	}
	for _, s := range spec.Skeleton {
		en, ok := final[s.Path]
		if !ok {
			t.Errorf("skeleton %s (%s) is not in the image", s.Path, s.Type)
			continue
		}
		switch s.Type {
		case imagespec.TypeSymlink:
			if en.Type != tar.TypeSymlink || en.Linkname != s.Target {
				t.Errorf("skeleton %s: type %q → %q, want symlink → %q", s.Path, en.Type, en.Linkname, s.Target)
			}
		case imagespec.TypeDir:
			if en.Type != tar.TypeDir || uint32(en.Mode)&0o7777 != s.FileMode() {
				t.Errorf("skeleton %s: type %q mode %o, want dir %o", s.Path, en.Type, en.Mode&0o7777, s.FileMode())
			}
		case imagespec.TypeFile:
			if en.Type != tar.TypeReg || uint32(en.Mode)&0o7777 != s.FileMode() || en.Size != int64(len(s.Content)) {
				t.Errorf("skeleton %s: type %q mode %o size %d, want file %o of %d bytes", s.Path, en.Type, en.Mode&0o7777, en.Size, s.FileMode(), len(s.Content))
			}
		}
	}
}

func short(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[i+1 : i+13]
	}
	return d
}

// toyContext returns a fresh build context for the toy: a temp tree with copies of examples/toy
// and nixos/ (what the toy flake reads), so tests can change it and nothing else of the
// repository is sent. The test fails if the toy is not there.
func (e *testEnv) toyContext(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(e.Repo, toyFlakeDir, "flake.nix")); err != nil {
		t.Fatalf("the toy example is missing (%v): examples/toy/flake.nix is part of issue 4", err)
	}
	dst := t.TempDir()
	for _, d := range []string{toyFlakeDir, "nixos"} {
		if err := os.CopyFS(filepath.Join(dst, d), os.DirFS(filepath.Join(e.Repo, d))); err != nil {
			t.Fatalf("copying %s into the toy context: %v", d, err)
		}
	}
	return dst
}

// toyFile is the `# syntax=` file that builds the toy flake of the context: no body.
func (e *testEnv) toyFile() string { return e.syntaxFile("# flake=.?dir=" + toyFlakeDir + "\n") }

// toyAttrs are the frontend attributes of a toy build: the configuration to build.
func toyAttrs(extra map[string]string) map[string]string {
	attrs := map[string]string{"target": toyTarget}
	for k, v := range extra {
		attrs[k] = v
	}
	return attrs
}

// describeLayers lists each layer's digest, size and store paths, for failure messages and logs.
func describeLayers(img *ociImage) string {
	var b strings.Builder
	for i, l := range img.Layers {
		paths := l.StorePaths()
		names := make([]string, len(paths))
		for j, p := range paths {
			names[j] = strings.TrimPrefix(p, "/nix/store/")
			if len(names[j]) > 33 {
				names[j] = names[j][33:] // drop the hash: the name says what it is
			}
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "  %2d %s %8d B  %s\n", i, short(l.Digest), l.Size, strings.Join(names, " "))
	}
	return b.String()
}

// buildToy builds the toy through the Go client into an OCI tarball and reads it back.
func (e *testEnv) buildToy(ctx context.Context, t *testing.T, dir string, attrs map[string]string) (*ociImage, *buildResult) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "image.oci.tar")
	res, err := e.solve(ctx, t, buildRequest{ContextDir: dir, File: e.toyFile(), Attrs: toyAttrs(attrs), OCIDest: dest})
	if err != nil {
		t.Fatalf("building %s: %v", dir, err)
	}
	img, err := readOCITar(dest)
	if err != nil {
		t.Fatalf("reading the exported image: %v", err)
	}
	if d := res.Digest(); d != "" && d != img.ManifestDigest {
		t.Errorf("exporter says %s, the OCI tarball holds %s", d, img.ManifestDigest)
	}
	t.Logf("built %s in %s: %d layers\n%s", short(img.ManifestDigest), res.Took.Round(time.Millisecond), len(img.Layers), describeLayers(img))
	return img, res
}
