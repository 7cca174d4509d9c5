package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/nixos2docker/nixos2docker/e2e/harness"
	"github.com/nixos2docker/nixos2docker/internal/ocitest"
)

// TestToyDockerDriver: `docker buildx build --builder default --load` on the real Docker
// engine, i.e. the `docker` driver (the BuildKit inside dockerd), the builder most users have,
// in both of its image stores:
//   - classic (overlay2 graph driver): no MergeOp, so the frontend stacks the layers and warns
//     at the `# syntax=` line what that costs;
//   - containerd (containerd-snapshotter): MergeOp, layers merged as on the remote builder.
//
// The engine cannot reach the local registry (it has its own network namespace), so the
// frontend and builder images go in with `docker load`, exported from the remote builder. In
// each store the toy is built, `docker save`d and compared layer by layer and file by file with
// the remote-driver build of the same input, run with the three --tmpfs flags, then rebuilt
// after a one-line change to a derivation in the middle of the stack (toy-extra); the test
// reports which layers were re-created and holds each layering to its promise (merged: only the
// changed layer; stacked: it and every layer above it).
func TestToyDockerDriver(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	orig := e.toyContext(t)
	changed := e.toyContext(t)
	changeToyExtra(t, changed)
	spec, err := e.expectedSpec(ctx, t, orig)
	if err != nil {
		t.Fatal(err)
	}
	// The reference: the remote driver's builds of both inputs.
	want := e.remoteImage(ctx, t, orig)
	wantChanged := e.remoteImage(ctx, t, changed)
	images := e.exportForEngine(ctx, t, e.FrontendImage, e.BuilderImage)

	for _, store := range []string{harness.StoreClassic, harness.StoreContainerd} {
		t.Run(store, func(t *testing.T) {
			start := time.Now()
			eng, err := harness.StartEngineStore(ctx, testWriter{t}, store)
			if err != nil {
				t.Fatalf("starting the Docker engine with the %s image store: %v", store, err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := eng.Stop(ctx, testWriter{t}); err != nil {
					t.Errorf("stopping the Docker engine: %v", err)
				}
			})
			t.Logf("engine up with the %s image store in %s", store, time.Since(start).Round(time.Millisecond))
			loadImages(ctx, t, eng, images)

			first := e.dockerDriverBuild(ctx, t, eng, orig)
			t.Logf("%s: built and loaded in %s", store, first.took.Round(time.Millisecond))
			checkLayering(t, store, first)
			for _, d := range ocitest.Compare(want, first.image, ocitest.Leeway{NoopDirs: true}) {
				t.Errorf("%s: differs from the remote driver's build (first) and the docker driver's (second): %s", store, d)
			}
			// After the builds: what the engine's BuildKit keeps (its cgroup) is not the
			// container's.
			before, err := eng.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkToyRuns(ctx, t, eng, first.tag, spec, nil)
			if _, diff, err := eng.WaitNoLeftovers(ctx, before, 30*time.Second); err != nil || diff != "" {
				t.Errorf("%s: leftovers after the container: %s (%v)", store, diff, err)
			}

			second := e.dockerDriverBuild(ctx, t, eng, changed)
			checkLayering(t, store, second)
			for _, d := range ocitest.Compare(wantChanged, second.image, ocitest.Leeway{NoopDirs: true}) {
				t.Errorf("%s: after the change, differs from the remote driver's build (first) and the docker driver's (second): %s", store, d)
			}
			reportRebuild(t, store, first, second)
		})
	}
}

// changeToyExtra changes one line of the toy in the context dir: the text of toy-extra, a
// store path that is neither at the bottom of the layers nor near the top, and that nothing
// else refers to (it enters through extraContents).
func changeToyExtra(t *testing.T, dir string) {
	t.Helper()
	file := filepath.Join(dir, toyFlakeDir, "toy.nix")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const line = `echo "extra contents" > "$out"`
	if strings.Count(string(data), line) != 1 {
		t.Fatalf("%s: the line %s of toy-extra is not there once: the test's change needs updating", file, line)
	}
	data = []byte(strings.Replace(string(data), line, `echo "extra contents, changed by the test" > "$out"`, 1))
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// remoteImage builds the toy in dir on the remote builder (hack/env's buildkitd) and reads it.
func (e *testEnv) remoteImage(ctx context.Context, t *testing.T, dir string) *ocitest.Image {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "remote.oci.tar")
	if _, err := e.solve(ctx, t, buildRequest{ContextDir: dir, File: e.toyFile(), Attrs: toyAttrs(nil), OCIDest: dest}); err != nil {
		t.Fatalf("remote build of %s: %v", dir, err)
	}
	img, err := ocitest.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// exportForEngine exports images from the registry as `docker load` tarballs, by building
// `FROM ref` with `--output type=docker` on the remote builder.
func (e *testEnv) exportForEngine(ctx context.Context, t *testing.T, refs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i, ref := range refs {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM "+ref+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(dir, fmt.Sprintf("image-%d.tar", i))
		res, err := run(ctx, nil, "docker", "buildx", "build", "--builder", e.BuildxBuilder, "--progress=plain",
			"--provenance=false", "--output", "type=docker,name="+ref+",dest="+dest, dir)
		if err != nil {
			t.Fatalf("exporting %s for docker load: %v", ref, err)
		}
		t.Logf("exported %s in %s", ref, res.Took.Round(time.Millisecond))
		out[ref] = dest
	}
	return out
}

// loadImages `docker load`s the tarballs into the engine; those it did not hold before are
// removed again when the test ends.
func loadImages(ctx context.Context, t *testing.T, eng *harness.Engine, images map[string]string) {
	t.Helper()
	for _, ref := range sortedKeys(images) {
		_, inspectErr := eng.Docker(ctx, "image", "inspect", "--format", "{{.Id}}", ref)
		start := time.Now()
		if _, err := eng.Docker(ctx, "load", "-q", "-i", images[ref]); err != nil {
			t.Fatalf("docker load of %s: %v", ref, err)
		}
		t.Logf("docker load %s: %s", ref, time.Since(start).Round(time.Millisecond))
		if inspectErr != nil {
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if _, err := eng.Docker(ctx, "rmi", ref); err != nil {
					t.Errorf("removing %s: %v", ref, err)
				}
			})
		}
	}
}

// driverBuild is one `docker buildx build --builder default --load` of the toy.
type driverBuild struct {
	tag      string
	took     time.Duration
	image    *ocitest.Image // as `docker save` writes it
	vertices []*client.Vertex
	warnings []*client.VertexWarning
}

// layerSteps are the 1-based indexes of the layer steps of the build, all of them and those
// that ran rather than came from the cache.
func (b *driverBuild) layerSteps() (all, made []int) {
	for _, v := range b.vertices {
		var i, n int
		if _, err := fmt.Sscanf(v.Name, "layer %d/%d", &i, &n); err != nil {
			continue
		}
		all = append(all, i)
		if v.Started != nil && !v.Cached {
			made = append(made, i)
		}
	}
	slices.Sort(all)
	slices.Sort(made)
	return slices.Compact(all), slices.Compact(made)
}

// dockerDriverBuild builds the toy in dir with Docker's default builder into the engine's image
// store (--load), and reads the image back with `docker save`.
func (e *testEnv) dockerDriverBuild(ctx context.Context, t *testing.T, eng *harness.Engine, dir string) *driverBuild {
	t.Helper()
	tmp := t.TempDir()
	file := filepath.Join(tmp, "toy.nix2docker")
	if err := os.WriteFile(file, []byte(e.toyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &driverBuild{tag: fmt.Sprintf("nixos2docker-toy:driver-%d", time.Now().UnixNano())}
	args := append([]string{"buildx", "build", "--builder", "default", "--progress=rawjson", "--provenance=false",
		"-f", file, "--target", toyTarget, "--load", "-t", b.tag}, e.buildArgFlags("--build-arg")...)
	res, err := run(ctx, []string{"DOCKER_HOST=" + eng.Host}, "docker", append(args, dir)...)
	b.took = res.Took
	b.vertices, b.warnings = readRawJSON(t, res.Stderr)
	if err != nil {
		t.Fatalf("docker buildx build --builder default: %v\n%s", err, vertexErrors(b.vertices))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := eng.Docker(ctx, "rmi", b.tag); err != nil {
			t.Errorf("removing %s: %v", b.tag, err)
		}
	})
	start := time.Now()
	saved := filepath.Join(tmp, "saved.tar")
	if _, err := eng.Docker(ctx, "save", "-o", saved, b.tag); err != nil {
		t.Fatal(err)
	}
	if b.image, err = ocitest.ReadFile(saved); err != nil {
		t.Fatalf("reading docker save's output: %v", err)
	}
	t.Logf("docker save and read in %s", time.Since(start).Round(time.Millisecond))
	return b
}

// readRawJSON reads `--progress=rawjson` output: the final state of every vertex, in order of
// first appearance, and the warnings.
func readRawJSON(t *testing.T, out string) ([]*client.Vertex, []*client.VertexWarning) {
	t.Helper()
	byDigest := map[string]*client.Vertex{}
	var order []string
	var warnings []*client.VertexWarning
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // buildx's own lines (e.g. errors)
		}
		var s client.SolveStatus
		if err := json.Unmarshal(line, &s); err != nil {
			t.Fatalf("rawjson progress line: %v: %.200s", err, line)
		}
		for _, v := range s.Vertexes {
			d := v.Digest.String()
			if _, ok := byDigest[d]; !ok {
				order = append(order, d)
			}
			byDigest[d] = v
		}
		warnings = append(warnings, s.Warnings...)
	}
	vs := make([]*client.Vertex, len(order))
	for i, d := range order {
		vs[i] = byDigest[d]
	}
	return vs, warnings
}

func vertexErrors(vs []*client.Vertex) string {
	var b strings.Builder
	for _, v := range vs {
		if v.Error != "" {
			fmt.Fprintf(&b, "  %s: %s\n", v.Name, v.Error)
		}
	}
	return b.String()
}

// checkLayering holds the build's progress to the layering its store allows: merged layers
// (a merge step, no warning) with the containerd store, stacked ones (no merge step, one
// warning at the `# syntax=` line saying what it costs) with the classic one.
func checkLayering(t *testing.T, store string, b *driverBuild) {
	t.Helper()
	var merges []string
	for _, v := range b.vertices {
		if strings.HasPrefix(v.Name, "merge ") {
			merges = append(merges, v.Name)
		}
	}
	var stacked []string
	for _, w := range b.warnings {
		if strings.Contains(string(w.Short), "layers stacked") {
			stacked = append(stacked, string(w.Short))
			if len(w.Range) == 0 || w.Range[0].Start.Line != 1 {
				t.Errorf("%s: the warning is not located at the # syntax= line: %+v", store, w.Range)
			}
		}
	}
	switch store {
	case harness.StoreClassic:
		if len(merges) != 0 || len(stacked) != 1 {
			t.Errorf("%s: merge steps %q, stacked warnings %q: want none and one", store, merges, stacked)
		}
	default:
		if len(merges) != 1 || len(stacked) != 0 {
			t.Errorf("%s: merge steps %q, stacked warnings %q: want one and none", store, merges, stacked)
		}
	}
	for _, l := range append(merges, stacked...) {
		t.Logf("%s: %s", store, l)
	}
}

// reportRebuild says which layers the rebuild after the change re-created, and holds it to the
// layering: merged re-creates exactly the layers whose content changed, stacked every layer from
// the lowest changed one up.
func reportRebuild(t *testing.T, store string, before, after *driverBuild) {
	t.Helper()
	all, made := after.layerSteps()
	var changed []int
	var changedBytes, madeBytes, total int64
	for i, l := range after.image.Layers {
		size := layerSize(l.Entries)
		total += size
		if i >= len(before.image.Layers) || !slices.Equal(ocitest.Lines(before.image.Layers[i].Entries), ocitest.Lines(l.Entries)) {
			changed = append(changed, i+1)
			changedBytes += size
		}
		if slices.Contains(made, i+1) {
			madeBytes += size
		}
	}
	if len(all) != len(after.image.Layers) {
		t.Errorf("%s: %d layer steps for %d layers", store, len(all), len(after.image.Layers))
	}
	if len(changed) == 0 {
		t.Fatalf("%s: the change changed no layer", store)
	}
	want := changed
	if store == harness.StoreClassic {
		want = nil
		for i := changed[0]; i <= len(after.image.Layers); i++ {
			want = append(want, i)
		}
	}
	t.Logf("%s: one-line change in layer %d/%d: rebuild took %s, re-created layers %v (%s of %s), layers whose content changed %v (%s)",
		store, changed[0], len(all), after.took.Round(time.Millisecond), made, human(madeBytes), human(total), changed, human(changedBytes))
	if !slices.Equal(made, want) {
		t.Errorf("%s: re-created layers %v, want %v", store, made, want)
	}
}

// layerSize is the bytes of a layer's regular files.
func layerSize(es []ocitest.Entry) int64 {
	var n int64
	for _, e := range es {
		n += e.Size
	}
	return n
}

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
