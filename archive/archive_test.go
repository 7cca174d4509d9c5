package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	glibc  = "/nix/store/0c5f4r5s1mz9ls2ls5y7qh2b4l2mq5nn-glibc-2.42"
	hello  = "/nix/store/1b8m03r63zqhnjf7l5wnldhh7c134ap5-hello-2.12"
	motd   = "/nix/store/2y1mqvfnwqjy7qqx5w6g3wdys5k8r3f1-motd.conf"
	etc    = "/nix/store/3wq1l2mwq8p1xjvm3iwx8k6lr1d0b2nz-etc"
	system = "/nix/store/4lf3lxc5rwb1s6r1wwr4vkwh3z9xgy9d-nixos-system-toy-26.05"
)

// fakeStore builds a tiny store: directories, a single-file store path,
// symlinks inside and across store paths, executables, and returns its
// directory and a spec for it.
func fakeStore(t *testing.T, maxLayers int) (string, *imagespec.Spec) {
	t.Helper()
	dir := t.TempDir()
	type file struct {
		mode    os.FileMode
		content string
		link    string
	}
	tree := map[string]file{
		glibc + "/lib/libc.so.6":            {mode: 0o444, content: strings.Repeat("libc", 5000)},
		glibc + "/lib/ld-linux-x86-64.so.2": {mode: 0o555, content: "ld"},
		glibc + "/lib/libc.so":              {link: "libc.so.6"},
		hello + "/bin/hello":                {mode: 0o555, content: "#!hello"},
		hello + "/share/doc/hello/README":   {mode: 0o444, content: "hello docs"},
		motd:                                {mode: 0o444, content: "welcome\n"},
		etc + "/etc/motd":                   {link: motd},
		system + "/init":                    {mode: 0o555, content: "#!init"},
		system + "/etc":                     {link: etc + "/etc"},
		system + "/sw/bin/hello":            {link: hello + "/bin/hello"},
		system + "/a-very-long-name" + strings.Repeat("x", 120) + "/file": {mode: 0o444, content: "long"},
	}
	for p, f := range tree {
		dst := filepath.Join(dir, strings.TrimPrefix(p, "/nix/store/"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if f.link != "" {
			if err := os.Symlink(f.link, dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(dst, []byte(f.content), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dst, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	// Store directories are read-only, as Nix makes them.
	if err := os.Chmod(filepath.Join(dir, filepath.Base(hello), "bin"), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, filepath.Base(hello), "bin"), 0o755) })

	p := func(path string, size int64, refs ...string) imagespec.Path {
		return imagespec.Path{Path: path, NarHash: "sha256:0000000000000000000000000000000000000000000000000000", NarSize: size, References: refs}
	}
	s := &imagespec.Spec{
		Version: 1, ImageName: "toy", ImageTag: "latest", MaxLayers: maxLayers, System: "x86_64-linux",
		Toplevel: system,
		Closure: []imagespec.Path{
			p(glibc, 30<<20, glibc),
			p(hello, 2<<20, glibc),
			p(motd, 8),
			p(etc, 4096, motd),
			p(system, 20480, etc, hello, glibc),
		},
		Skeleton: []imagespec.Entry{
			{Path: "/init", Type: imagespec.TypeSymlink, Target: system + "/init"},
			{Path: "/tmp", Type: imagespec.TypeDir, Mode: "1777"},
			{Path: "/etc", Type: imagespec.TypeDir},
			{Path: "/etc/machine-id", Type: imagespec.TypeFile, Mode: "0444", Content: ""},
			{Path: "/etc/hostname", Type: imagespec.TypeFile, Content: "toy\n"},
			{Path: "/usr/bin/env", Type: imagespec.TypeSymlink, Target: hello + "/bin/hello"},
		},
	}
	s.Config.Entrypoint = []string{"/init"}
	s.Config.Env = []string{"container=docker"}
	s.Config.StopSignal = "SIGRTMIN+3"
	s.Config.Healthcheck = &dockerspec.HealthcheckConfig{Test: []string{"CMD", "true"}, Interval: 30 * time.Second}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	return dir, s
}

func model(t *testing.T, s *imagespec.Spec, epoch *time.Time) *imagemodel.Model {
	t.Helper()
	m, err := imagemodel.New(s, imagemodel.Options{Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func write(t *testing.T, store string, s *imagespec.Spec, opts Options) []byte {
	t.Helper()
	return writeModel(t, store, model(t, s, nil), opts)
}

func writeModel(t *testing.T, store string, m *imagemodel.Model, opts Options) []byte {
	t.Helper()
	opts.StoreDir = store
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, m, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type entry struct {
	hdr     *tar.Header
	content []byte
}

func untar(t *testing.T, data []byte) ([]string, map[string]entry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var names []string
	files := map[string]entry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, files
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[h.Name]; dup {
			t.Errorf("%s twice in one tar", h.Name)
		}
		names = append(names, h.Name)
		files[h.Name] = entry{h, c}
	}
}

func TestWriteReproducible(t *testing.T) {
	store, s := fakeStore(t, 125)
	a := write(t, store, s, Options{})
	b := write(t, store, s, Options{})
	if !bytes.Equal(a, b) {
		t.Fatal("two writes of the same spec and store differ")
	}
	// Another creation time changes the skeleton and config, nothing else.
	epoch := time.Unix(1700000000, 0)
	c := writeModel(t, store, model(t, s, &epoch), Options{})
	if bytes.Equal(a, c) {
		t.Fatal("Created has no effect")
	}
}

func TestWriteContents(t *testing.T) {
	store, s := fakeStore(t, 125)
	var events []Event
	data := write(t, store, s, Options{Progress: func(e Event) { events = append(events, e) }})
	_, outer := untar(t, data)

	var dm []dockerManifest
	if err := json.Unmarshal(outer["manifest.json"].content, &dm); err != nil {
		t.Fatal(err)
	}
	if len(dm) != 1 || !reflect.DeepEqual(dm[0].RepoTags, []string{"toy:latest"}) {
		t.Fatalf("manifest.json: %+v", dm)
	}
	var img dockerspec.DockerOCIImage
	if err := json.Unmarshal(outer[dm[0].Config].content, &img); err != nil {
		t.Fatal(err)
	}
	if img.Architecture != "amd64" || img.OS != "linux" || !img.Created.Equal(imagemodel.NixTime) {
		t.Errorf("platform %s/%s, created %v", img.OS, img.Architecture, img.Created)
	}
	if !reflect.DeepEqual(img.Config.Entrypoint, []string{"/init"}) || img.Config.StopSignal != "SIGRTMIN+3" ||
		img.Config.Healthcheck == nil || img.Config.Healthcheck.Interval != 30*time.Second {
		t.Errorf("config not carried over: %+v", img.Config)
	}
	if len(dm[0].Layers) != len(img.RootFS.DiffIDs) || len(img.History) != len(dm[0].Layers) {
		t.Fatalf("%d layers, %d diff IDs, %d history entries", len(dm[0].Layers), len(img.RootFS.DiffIDs), len(img.History))
	}
	if len(events) != 2*len(dm[0].Layers) || events[0].Phase != "hash" || events[len(events)-1].Phase != "write" {
		t.Errorf("progress events: %v", events)
	}

	// Every store path's files exactly once; the skeleton last.
	seen := map[string]int{}
	for i, l := range dm[0].Layers {
		blob := outer[l].content
		sum := sha256.Sum256(blob)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != string(img.RootFS.DiffIDs[i]) || l != "blobs/sha256/"+got[7:] {
			t.Errorf("layer %d: blob %s, sha256 %s, diff ID %s", i, l, got, img.RootFS.DiffIDs[i])
		}
		names, files := untar(t, blob)
		if !slices.IsSortedFunc(names, func(a, b string) int {
			return strings.Compare(strings.ReplaceAll(a, "/", "\x00"), strings.ReplaceAll(b, "/", "\x00"))
		}) {
			t.Errorf("layer %d entries are not in depth-first name order: %v", i, names)
		}
		for _, n := range names {
			h := files[n].hdr
			if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
				t.Errorf("%s: owner %d:%d %q:%q", n, h.Uid, h.Gid, h.Uname, h.Gname)
			}
			if len(n) < 100 && h.Format&tar.FormatPAX != 0 {
				t.Errorf("%s: PAX header for a short name", n)
			}
			if n == "nix/" || n == "nix/store/" {
				continue
			}
			seen[n]++
			if strings.HasPrefix(n, "nix/store/") && !h.ModTime.Equal(imagemodel.NixTime) {
				t.Errorf("%s: mtime %v", n, h.ModTime)
			}
		}
		if i == len(dm[0].Layers)-1 {
			if !strings.HasPrefix(img.History[i].CreatedBy, "nixos2docker: root skeleton") {
				t.Errorf("last history entry: %q", img.History[i].CreatedBy)
			}
			checkSkeleton(t, files)
		} else if !strings.HasPrefix(img.History[i].CreatedBy, "nixos2docker: /nix/store/") {
			t.Errorf("history %d: %q", i, img.History[i].CreatedBy)
		}
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("%s is in %d layers", n, c)
		}
	}
	want := map[string]struct {
		typ  byte
		mode int64
		link string
	}{
		"nix/store/0c5f4r5s1mz9ls2ls5y7qh2b4l2mq5nn-glibc-2.42/lib/libc.so.6":            {tar.TypeReg, 0o444, ""},
		"nix/store/0c5f4r5s1mz9ls2ls5y7qh2b4l2mq5nn-glibc-2.42/lib/ld-linux-x86-64.so.2": {tar.TypeReg, 0o555, ""},
		"nix/store/0c5f4r5s1mz9ls2ls5y7qh2b4l2mq5nn-glibc-2.42/lib/libc.so":              {tar.TypeSymlink, 0o777, "libc.so.6"},
		"nix/store/1b8m03r63zqhnjf7l5wnldhh7c134ap5-hello-2.12/bin/":                     {tar.TypeDir, 0o555, ""},
		"nix/store/1b8m03r63zqhnjf7l5wnldhh7c134ap5-hello-2.12/bin/hello":                {tar.TypeReg, 0o555, ""},
		"nix/store/2y1mqvfnwqjy7qqx5w6g3wdys5k8r3f1-motd.conf":                           {tar.TypeReg, 0o444, ""},
		"nix/store/3wq1l2mwq8p1xjvm3iwx8k6lr1d0b2nz-etc/etc/motd":                        {tar.TypeSymlink, 0o777, motd},
		"nix/store/4lf3lxc5rwb1s6r1wwr4vkwh3z9xgy9d-nixos-system-toy-26.05/sw/bin/hello": {tar.TypeSymlink, 0o777, hello + "/bin/hello"},
	}
	all := map[string]*tar.Header{}
	for _, l := range dm[0].Layers {
		_, files := untar(t, outer[l].content)
		for n, e := range files {
			all[n] = e.hdr
		}
	}
	for n, w := range want {
		h := all[n]
		if h == nil {
			t.Errorf("%s missing", n)
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link {
			t.Errorf("%s: type %c mode %o link %q, want %c %o %q", n, h.Typeflag, h.Mode, h.Linkname, w.typ, w.mode, w.link)
		}
	}
	if len(seen) < 20 {
		t.Errorf("only %d entries in the layers", len(seen))
	}

	// The OCI layout points at the same blobs.
	var index ocispec.Index
	if err := json.Unmarshal(outer["index.json"].content, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %+v", err, index)
	}
	if index.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/toy:latest" {
		t.Errorf("index annotations %v", index.Manifests[0].Annotations)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(outer["blobs/sha256/"+index.Manifests[0].Digest.Encoded()].content, &m); err != nil {
		t.Fatal(err)
	}
	if "blobs/sha256/"+m.Config.Digest.Encoded() != dm[0].Config || len(m.Layers) != len(dm[0].Layers) {
		t.Errorf("OCI manifest %+v disagrees with manifest.json %+v", m, dm[0])
	}
	for i, l := range m.Layers {
		if "blobs/sha256/"+l.Digest.Encoded() != dm[0].Layers[i] || l.Size != int64(len(outer[dm[0].Layers[i]].content)) {
			t.Errorf("OCI layer %d: %+v", i, l)
		}
	}
	if _, ok := outer["oci-layout"]; !ok {
		t.Error("no oci-layout")
	}
}

func checkSkeleton(t *testing.T, files map[string]entry) {
	t.Helper()
	checks := []struct {
		name string
		typ  byte
		mode int64
		link string
	}{
		{"init", tar.TypeSymlink, 0o777, system + "/init"},
		{"tmp/", tar.TypeDir, 0o1777, ""},
		{"etc/machine-id", tar.TypeReg, 0o444, ""},
		{"etc/hostname", tar.TypeReg, 0o644, ""},
		{"usr/", tar.TypeDir, 0o755, ""}, // implied by /usr/bin/env
		{"usr/bin/", tar.TypeDir, 0o755, ""},
		{"usr/bin/env", tar.TypeSymlink, 0o777, hello + "/bin/hello"},
		{"nix/", tar.TypeDir, 0o755, ""},
		{"nix/store/", tar.TypeDir, 0o755, ""},
	}
	for _, c := range checks {
		e, ok := files[c.name]
		if !ok {
			t.Errorf("skeleton: %s missing", c.name)
			continue
		}
		if e.hdr.Typeflag != c.typ || e.hdr.Mode != c.mode || e.hdr.Linkname != c.link {
			t.Errorf("skeleton: %s: type %c mode %o link %q", c.name, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Linkname)
		}
	}
	if got := string(files["etc/hostname"].content); got != "toy\n" {
		t.Errorf("etc/hostname: %q", got)
	}
}

func TestWriteMaxLayers(t *testing.T) {
	for _, max := range []int{2, 3, 4, 125} {
		store, s := fakeStore(t, max)
		_, outer := untar(t, write(t, store, s, Options{}))
		var dm []dockerManifest
		if err := json.Unmarshal(outer["manifest.json"].content, &dm); err != nil {
			t.Fatal(err)
		}
		if n := len(dm[0].Layers); n > max || n < 2 {
			t.Errorf("maxLayers %d: %d layers", max, n)
		}
		if max == 125 && len(dm[0].Layers) != 4 { // glibc, hello, configuration, skeleton
			t.Errorf("maxLayers 125: %d layers, want 4", len(dm[0].Layers))
		}
	}
}

func TestWriteErrors(t *testing.T) {
	store, s := fakeStore(t, 125)
	ctx := context.Background()

	// A closure path missing from the store.
	if err := os.RemoveAll(filepath.Join(store, filepath.Base(motd))); err != nil {
		t.Fatal(err)
	}
	err := Write(ctx, io.Discard, model(t, s, nil), Options{StoreDir: store})
	if err == nil || !strings.Contains(err.Error(), "store path") || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing store path: %v", err)
	}

	store, s = fakeStore(t, 125)
	bad := *s
	bad.System = "mips-linux"
	if _, err := imagemodel.New(&bad, imagemodel.Options{}); err == nil || !strings.Contains(err.Error(), "mips-linux") {
		t.Errorf("unsupported system: %v", err)
	}
	bad = *s
	bad.MaxLayers = 1
	if _, err := imagemodel.New(&bad, imagemodel.Options{}); err == nil || !strings.Contains(err.Error(), "maxLayers") {
		t.Errorf("maxLayers 1: %v", err)
	}

	// The store changes between hashing and writing.
	f := filepath.Join(store, filepath.Base(glibc), "lib", "libc.so.6")
	err = Write(ctx, io.Discard, model(t, s, nil), Options{StoreDir: store, Progress: func(e Event) {
		if e.Phase == "write" && e.Layer == 1 {
			os.Chmod(f, 0o644)
			os.WriteFile(f, []byte("changed"), 0o444)
		}
	}})
	if err == nil || !strings.Contains(err.Error(), "changed while") && !strings.Contains(err.Error(), "libc.so.6") {
		t.Errorf("changed store: %v", err)
	}

	// Cancelled.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Write(cctx, io.Discard, model(t, s, nil), Options{StoreDir: store}); err == nil {
		t.Error("cancelled context: no error")
	}
}

func TestFullName(t *testing.T) {
	for in, want := range map[string]string{
		"web:latest":            "docker.io/library/web:latest",
		"me/web:1":              "docker.io/me/web:1",
		"localhost:5000/web:1":  "localhost:5000/web:1",
		"ghcr.io/me/web:latest": "ghcr.io/me/web:latest",
		"localhost/web:latest":  "localhost/web:latest",
	} {
		if got := fullName(in); got != want {
			t.Errorf("fullName(%q) = %q, want %q", in, got, want)
		}
	}
}

// WriteFile reads each layer once and lays the archive out in a file: the
// same bytes as Write's two passes, whatever the layers' sizes.
func TestWriteFileIsWrite(t *testing.T) {
	for _, maxLayers := range []int{2, 3, 125} {
		store, s := fakeStore(t, maxLayers)
		m := model(t, s, nil)
		want := writeModel(t, store, m, Options{StoreDir: store})
		f, err := os.CreateTemp(t.TempDir(), "image-*.tar")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("left over from before"); err != nil {
			t.Fatal(err)
		}
		var phases []string
		n, err := WriteFile(context.Background(), f, m, Options{StoreDir: store, Progress: func(e Event) { phases = append(phases, e.Phase) }})
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(len(got)) || !bytes.Equal(got, want) {
			t.Errorf("maxLayers %d: WriteFile wrote %d bytes (says %d), Write %d; equal: %v", maxLayers, len(got), n, len(want), bytes.Equal(got, want))
		}
		if len(phases) != len(m.Layers) || slices.Contains(phases, "hash") {
			t.Errorf("maxLayers %d: progress %v, want one write per layer and no hashing pass", maxLayers, phases)
		}
		f.Close()
	}
}

// bigStore is a store of n paths of random data, size bytes in all, and a
// spec for it.
func bigStore(b *testing.B, n int, size int64) (string, *imagespec.Spec) {
	b.Helper()
	dir := b.TempDir()
	s := &imagespec.Spec{Version: imagespec.Version, ImageName: "big", ImageTag: "latest", MaxLayers: 125, System: "x86_64-linux"}
	buf := make([]byte, size/int64(n))
	for i := range n {
		p := fmt.Sprintf("/nix/store/%032d-data-%d", i, i)
		if err := os.MkdirAll(filepath.Join(dir, filepath.Base(p)), 0o755); err != nil {
			b.Fatal(err)
		}
		rand.Read(buf)
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p), "data"), buf, 0o444); err != nil {
			b.Fatal(err)
		}
		s.Closure = append(s.Closure, imagespec.Path{Path: p, NarHash: "sha256:0", NarSize: int64(len(buf))})
	}
	s.Toplevel = s.Closure[n-1].Path
	s.Config.Entrypoint = []string{"/init"}
	return dir, s
}

// BenchmarkWrite times both ways of writing a 256 MiB, 200-path image into
// a file: Write (each layer read and hashed twice) and WriteFile (once).
func BenchmarkWrite(b *testing.B) {
	store, s := bigStore(b, 200, 256<<20)
	m, err := imagemodel.New(s, imagemodel.Options{})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if d := os.Getenv("ARCHIVE_BENCH_DIR"); d != "" {
		dir = d
	}
	out := filepath.Join(dir, "image.tar")
	opts := Options{StoreDir: store}
	b.Run("Write", func(b *testing.B) {
		for b.Loop() {
			f, err := os.Create(out)
			if err != nil {
				b.Fatal(err)
			}
			bw := bufio.NewWriterSize(f, 1<<20)
			if err := Write(context.Background(), bw, m, opts); err != nil {
				b.Fatal(err)
			}
			if err := bw.Flush(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		b.SetBytes(256 << 20)
	})
	b.Run("WriteFile", func(b *testing.B) {
		for b.Loop() {
			f, err := os.Create(out)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := WriteFile(context.Background(), f, m, opts); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		b.SetBytes(256 << 20)
	})
}
