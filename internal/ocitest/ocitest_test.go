package ocitest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCompare(t *testing.T) {
	t1 := time.Unix(1, 0).UTC()
	dir := func(name string) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: 0o755, ModTime: t1} }
	file := func(name, sum string) Entry {
		return Entry{Name: name, Type: tar.TypeReg, Mode: 0o444, ModTime: t1, Size: 1, SHA256: sum}
	}
	layers := func(ls ...[]Entry) []Layer {
		out := make([]Layer, len(ls))
		for i, es := range ls {
			out[i] = Layer{Entries: es}
		}
		return out
	}
	// Two layers made on their own: each repeats /nix and /nix/store.
	own := &Image{Layers: layers(
		[]Entry{dir("nix"), dir("nix/store"), dir("nix/store/a"), file("nix/store/a/f", "1")},
		[]Entry{dir("nix"), dir("nix/store"), dir("nix/store/b"), file("nix/store/b/f", "2")},
	)}
	// The same, the second layer made on the first: its unchanged parents left out.
	stacked := &Image{Layers: layers(
		[]Entry{dir("nix"), dir("nix/store"), dir("nix/store/a"), file("nix/store/a/f", "1")},
		[]Entry{dir("nix/store/b"), file("nix/store/b/f", "2")},
	)}
	if d := Compare(own, own, Leeway{}); len(d) != 0 {
		t.Errorf("an image differs from itself: %q", d)
	}
	if d := Compare(own, stacked, Leeway{NoopDirs: true}); len(d) != 0 {
		t.Errorf("with NoopDirs, unchanged parents left out: %q", d)
	}
	if d := Compare(own, stacked, Leeway{}); len(d) != 2 || !strings.Contains(d[0], "layer 2/2: only in the first:  nix type=5") {
		t.Errorf("strict: want the two parents reported, got %q", d)
	}

	// A parent that is not a no-op (another mode than below) is a difference.
	changed := &Image{Layers: layers(own.Layers[0].Entries, []Entry{{Name: "nix", Type: tar.TypeDir, Mode: 0o700, ModTime: t1}, dir("nix/store/b"), file("nix/store/b/f", "2")})}
	if d := Compare(changed, stacked, Leeway{NoopDirs: true}); len(d) != 1 || !strings.Contains(d[0], "only in the first:  nix type=5 mode=0700") {
		t.Errorf("a changing directory: got %q", d)
	}
	// Other content, another layer count, another config.
	other := &Image{Layers: layers(own.Layers[0].Entries, []Entry{dir("nix/store/b"), file("nix/store/b/f", "3")})}
	if d := Compare(stacked, other, Leeway{NoopDirs: true}); len(d) != 1 || !strings.Contains(d[0], "nix/store/b/f differs") {
		t.Errorf("other content: got %q", d)
	}
	if d := Compare(own, &Image{Layers: own.Layers[:1]}, Leeway{}); len(d) != 1 || d[0] != "2 layers, 1 layers" {
		t.Errorf("layer count: got %q", d)
	}
	withEnv := &Image{Layers: own.Layers}
	withEnv.Config.Config.Env = []string{"A=1"}
	if d := Compare(own, withEnv, Leeway{}); len(d) == 0 || !strings.HasPrefix(d[0], "config: ") {
		t.Errorf("config: got %q", d)
	}
}

// TestReadFollowsIndex: `docker save` with the containerd image store (and a
// multi-platform result) names an index in index.json; Read follows it to
// the image, past an attestation manifest.
func TestReadFollowsIndex(t *testing.T) {
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	if err := lw.WriteHeader(&tar.Header{Name: "hello", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}); err != nil {
		t.Fatal(err)
	}
	lw.Write([]byte("hi"))
	lw.Close()

	blobs := map[string][]byte{}
	put := func(data []byte) digest.Digest {
		d := digest.FromBytes(data)
		blobs["blobs/sha256/"+d.Encoded()] = data
		return d
	}
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := put([]byte(`{"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"rootfs":{"type":"layers"}}`))
	l := put(layer.Bytes())
	manifest := js(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: l}}})
	m := put(manifest)
	att := put(js(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}))
	idx := put(js(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageManifest, Digest: att, Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}},
		{MediaType: ocispec.MediaTypeImageManifest, Digest: m},
	}}))
	blobs["index.json"] = js(ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: idx}}})

	var out bytes.Buffer
	w := tar.NewWriter(&out)
	for name, data := range blobs {
		if err := w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	w.Close()
	img, err := Read(&out)
	if err != nil {
		t.Fatal(err)
	}
	if img.ManifestDigest != m.String() || len(img.Layers) != 1 || img.Layers[0].Entries[0].Name != "hello" || img.Config.Config.Env[0] != "A=1" {
		t.Errorf("read %s, %d layers %v, config %+v", img.ManifestDigest, len(img.Layers), img.Layers, img.Config.Config)
	}
}
