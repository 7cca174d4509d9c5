package integration

// The toy example built end to end through the frontend image, the way users build: a
// `# syntax=` file, buildctl and `docker buildx build`. These tests fail (never skip) while the
// frontend or the toy example is not there yet.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestToyBuildctl: buildctl with the `# syntax=` file exports an OCI image that holds the toy's
// closure exactly, with the spec's config.
func TestToyBuildctl(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	spec, err := e.expectedSpec(ctx, t, dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "Dockerfile"), []byte(e.toyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(tmp, "toy.oci.tar")
	args := []string{"build", "--progress=plain",
		"--frontend", "dockerfile.v0",
		"--local", "context=" + dir, "--local", "dockerfile=" + tmp,
		"--opt", "target=" + toyTarget}
	for _, kv := range e.buildArgFlags("--opt") {
		if kv != "--opt" {
			kv = "build-arg:" + kv
		}
		args = append(args, kv)
	}
	res, err := e.buildctl(ctx, append(args, "--output", "type=oci,dest="+dest)...)
	if err != nil {
		t.Fatalf("buildctl build of the toy: %v", err)
	}
	t.Logf("buildctl build took %s", res.Took.Round(time.Millisecond))
	img, err := readOCITar(dest)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s, %d layers:\n%s", img.ManifestDigest, len(img.Layers), describeLayers(img))
	checkImage(t, img, spec)
}

// TestToyBuildx: `docker buildx build` on the remote-driver builder gives an image with the
// same checks, and the same image manifest as a build through the Go client.
func TestToyBuildx(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	spec, err := e.expectedSpec(ctx, t, dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	file := filepath.Join(tmp, "toy.nix2docker")
	if err := os.WriteFile(file, []byte(e.toyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(tmp, "toy.oci.tar")
	args := append([]string{"buildx", "build", "--builder", e.BuildxBuilder,
		"--progress=plain", "--provenance=false", "-f", file, "--target", toyTarget},
		e.buildArgFlags("--build-arg")...)
	res, err := run(ctx, nil, "docker", append(args, "--output", "type=oci,dest="+dest, dir)...)
	if err != nil {
		t.Fatalf("docker buildx build of the toy: %v", err)
	}
	t.Logf("docker buildx build took %s", res.Took.Round(time.Millisecond))
	img, err := readOCITar(dest)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img, spec)

	again, _ := e.buildToy(ctx, t, dir, nil)
	if again.ManifestDigest != img.ManifestDigest {
		t.Errorf("buildx gave %s, the Go client %s for the same input", img.ManifestDigest, again.ManifestDigest)
	}

	// --push: the image lands in the registry under the same manifest digest.
	ref := e.Registry + "/nixos2docker/toy:integration"
	if _, err := run(ctx, nil, "docker", append(args, "--output", "type=image,name="+ref+",push=true", dir)...); err != nil {
		t.Fatalf("docker buildx build --push: %v", err)
	}
	pushed, err := e.registryDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	if pushed != img.ManifestDigest {
		t.Errorf("pushed %s as %s, the OCI export was %s", ref, pushed, img.ManifestDigest)
	}
}

// TestToyColdBuildsAreReproducible: two cold builds, BuildKit's cache pruned before each, give
// the same manifest digest.
// Both without SOURCE_DATE_EPOCH (the default a user gets) and with it.
func TestToyColdBuildsAreReproducible(t *testing.T) {
	e := requireEnv(t)
	dir := e.toyContext(t)
	for _, tc := range []struct {
		name  string
		attrs map[string]string
	}{
		{"default", nil},
		{"SOURCE_DATE_EPOCH", map[string]string{"build-arg:SOURCE_DATE_EPOCH": "1700000000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			e.prune(ctx, t)
			first, r1 := e.buildToy(ctx, t, dir, tc.attrs)
			e.prune(ctx, t)
			second, r2 := e.buildToy(ctx, t, dir, tc.attrs)
			t.Logf("cold builds: %s and %s", r1.Took.Round(time.Millisecond), r2.Took.Round(time.Millisecond))
			if first.ManifestDigest == second.ManifestDigest {
				return
			}
			t.Errorf("cold builds differ: %s vs %s", first.ManifestDigest, second.ManifestDigest)
			for i := range min(len(first.Layers), len(second.Layers)) {
				if first.Layers[i].Digest != second.Layers[i].Digest {
					t.Errorf("layer %d: %s vs %s", i, first.Layers[i].Digest, second.Layers[i].Digest)
				}
			}
			if !reflect.DeepEqual(first.Config, second.Config) {
				a, _ := json.Marshal(first.Config)
				b, _ := json.Marshal(second.Config)
				t.Errorf("image configs differ:\n  %s\n  %s", a, b)
			}
		})
	}
}

// layerStep says whether a vertex makes image content: the Nix build of the closure, a layer,
// the skeleton's entries, the merge (named so by the frontend, llb/). Other vertices (sources,
// metadata, the one-entry scratch states the skeleton copies from — BuildKit re-runs such
// input-less file ops — and the export) may run on every build.
func layerStep(name string) bool {
	for _, p := range []string{"nix: build ", "layer ", "root skeleton entries", "merge "} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// TestToyNoopRebuild: building the same input again re-creates no layer: every step that is
// not a source is cached, and the manifest is the same.
func TestToyNoopRebuild(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	first, _ := e.buildToy(ctx, t, dir, nil)
	second, res := e.buildToy(ctx, t, dir, nil)
	if first.ManifestDigest != second.ManifestDigest {
		t.Errorf("rebuild with nothing changed: %s, then %s", first.ManifestDigest, second.ManifestDigest)
	}
	var layerSteps, worked, other []string
	for _, v := range res.Vertices {
		if layerStep(v.Name) {
			layerSteps = append(layerSteps, v.Name)
		}
	}
	for _, name := range res.Worked() {
		if layerStep(name) {
			worked = append(worked, name)
		} else {
			other = append(other, name)
		}
	}
	if len(layerSteps) == 0 {
		t.Fatalf("no Nix build, layer or merge step among the rebuild's vertices %v: the step names changed", vertexNames(res))
	}
	if len(worked) > 0 {
		t.Errorf("rebuild with nothing changed re-ran %d of %d layer steps (want all cached):\n  %s", len(worked), len(layerSteps), strings.Join(worked, "\n  "))
	}
	t.Logf("%d layer steps, all cached; other steps that ran: %v", len(layerSteps), other)
	t.Logf("no-op rebuild took %s", res.Took.Round(time.Millisecond))
}

// TestToyOneChangeRebuild: after changing one toy derivation, the layers holding only unchanged
// store paths keep their digests and the layers holding changed paths get new ones.
func TestToyOneChangeRebuild(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	orig := e.toyContext(t)
	changed := e.toyContext(t)
	changeToy(t, changed)

	before, _ := e.buildToy(ctx, t, orig, nil)
	after, res := e.buildToy(ctx, t, changed, nil)
	t.Logf("one-change rebuild took %s", res.Took.Round(time.Millisecond))

	oldPaths := layerOf(before)
	oldLayers := map[string]bool{}
	for _, l := range before.Layers {
		oldLayers[l.Digest] = true
	}
	newPaths := 0
	for i, l := range after.Layers {
		var fresh []string
		for _, p := range l.StorePaths() {
			if _, ok := oldPaths[p]; !ok {
				fresh = append(fresh, p)
			}
		}
		newPaths += len(fresh)
		switch {
		case len(l.StorePaths()) == 0:
			// The skeleton points at the toplevel, which changed: it may change too.
		case len(fresh) == 0 && !oldLayers[l.Digest]:
			t.Errorf("layer %d (%s) holds only unchanged paths but was re-created", i, short(l.Digest))
		case len(fresh) > 0 && oldLayers[l.Digest]:
			t.Errorf("layer %d (%s) holds changed paths %v but kept its digest", i, short(l.Digest), fresh)
		}
	}
	if newPaths == 0 {
		t.Fatalf("the change to the toy changed no store path: the test did not change a derivation")
	}
}

// changeToy changes one derivation of the toy in the context dir: the text of toy-message.
func changeToy(t *testing.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, toyChangeFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("changing the toy: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString("\nchanged by the integration test at " + time.Now().UTC().Format(time.RFC3339Nano) + "\n"); err != nil {
		t.Fatalf("changing the toy: %v", err)
	}
}
