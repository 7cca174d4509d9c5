// Package archive writes an image model (package imagemodel) and its store
// paths as an image archive that `docker load` reads: the Nix-native face of
// nixos2docker (system.build.dockerImage). It only renders what the model
// decided (layers, skeleton, config, times), as the BuildKit frontend renders
// the same model as LLB, so both faces give the same layers.
//
// The archive is the one `docker save` writes since Docker 25: an OCI image
// layout (oci-layout, index.json, blobs/sha256/…) plus Docker's
// manifest.json, so `docker load`, `podman load` and OCI tools (skopeo
// oci-archive:) all read it. Layers are uncompressed tars.
//
// Output is reproducible: the same spec and store give the same bytes. Tar
// entries are in a fixed order (depth first, names sorted), owned by 0:0
// without user or group names, store files keep their mode, and times are
// the model's (StoreTime in the store, Created elsewhere).
//
// A layer's digest names its blob, and a tar entry's name comes before its
// bytes. WriteFile, into a file, reads each store layer once: every layer's
// tar size follows from the store's metadata (names, sizes, modes), so the
// archive's layout is fixed before any content is read; the layers are
// written at their places in parallel, hashed as they go, and the blob names
// filled in last. Write, into any stream, reads each store layer twice: once
// to hash it, once to write it. Either way a store that changes meanwhile
// is an error, and both give the same bytes.
package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/layers"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// Options tune Write.
type Options struct {
	// StoreDir is where the closure's store paths are read from; default
	// /nix/store. Paths keep their /nix/store name in the image.
	StoreDir string
	// Progress, if set, is told about each layer as it is hashed (layers
	// are hashed in parallel, so not in order) and written. It is never
	// called concurrently.
	Progress func(Event)
}

// Event reports progress on one layer.
type Event struct {
	// Phase is "hash" (first read) or "write" (second read, into the archive).
	Phase string
	// Layer counts from 1 to Layers, bottom to top.
	Layer, Layers int
	// Description names the layer: its largest store paths, or "root skeleton".
	Description string
	// Size is the layer's content size: NAR sizes for store layers.
	Size int64
}

func (e Event) String() string {
	return fmt.Sprintf("layer %d/%d: %s (%s)", e.Layer, e.Layers, e.Description, layers.HumanSize(e.Size))
}

// dockerManifest is one entry of Docker's manifest.json (the format
// `docker save` writes; no Go type for it exists outside moby's internals).
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// layer is one layer of the image, hashed.
type layer struct {
	imagemodel.Layer
	skeleton []byte // the skeleton's tar; nil for store layers
	blob     ocispec.Descriptor
}

// Write writes the image archive for m to w.
func Write(ctx context.Context, w io.Writer, m *imagemodel.Model, opts Options) error {
	if opts.StoreDir == "" {
		opts.StoreDir = imagespec.StoreDir
	}
	all, err := layersOf(m)
	if err != nil {
		return err
	}

	// First pass: digests and sizes (hashing is CPU-bound once the store is
	// in the page cache).
	if err := writeLayers(ctx, m, all, opts, "hash", nil, nil); err != nil {
		return err
	}

	tailFiles, err := metadataFiles(m, all)
	if err != nil {
		return err
	}
	if err := distinct(all); err != nil {
		return err
	}
	// Second pass: the archive.
	tw := tar.NewWriter(w)
	ow := outer{tw: tw, t: m.Created}
	if err := ow.dir("blobs/"); err != nil {
		return err
	}
	if err := ow.dir("blobs/sha256/"); err != nil {
		return err
	}
	for i, l := range all {
		report(opts, "write", i, len(all), l)
		if err := ow.header(blobPath(l.blob.Digest), l.blob.Size); err != nil {
			return err
		}
		dw := &digestWriter{h: sha256.New(), w: tw}
		if err := l.write(ctx, dw, opts.StoreDir, m.StoreTime); err != nil {
			return err
		}
		if dw.digest() != l.blob.Digest || dw.n != l.blob.Size {
			return fmt.Errorf("layer %d/%d (%s) changed while the image was written: the store must not change", i+1, len(all), l.Description)
		}
	}
	return writeTail(tw, ow, tailFiles)
}

// layersOf is the model's layers, the skeleton's tar made.
func layersOf(m *imagemodel.Model) ([]*layer, error) {
	all := make([]*layer, 0, len(m.Layers))
	for _, ml := range m.Layers {
		l := &layer{Layer: ml}
		if ml.Skeleton {
			var skel bytes.Buffer
			if err := writeSkeleton(&skel, m); err != nil {
				return nil, err
			}
			l.skeleton = skel.Bytes()
		}
		all = append(all, l)
	}
	return all, nil
}

// maxBlob is the largest layer WriteFile lays out: a larger size needs a
// longer tar header than the one reserved for it.
const maxBlob = 1<<33 - 1

// WriteFile writes the image archive for m into f, from its start (f is
// truncated), and returns its size: the bytes Write gives, each store layer
// read once.
func WriteFile(ctx context.Context, f *os.File, m *imagemodel.Model, opts Options) (int64, error) {
	if opts.StoreDir == "" {
		opts.StoreDir = imagespec.StoreDir
	}
	all, err := layersOf(m)
	if err != nil {
		return 0, err
	}
	if err := f.Truncate(0); err != nil {
		return 0, fmt.Errorf("writing the archive: %w", err)
	}
	// Every layer's size, from the store's metadata.
	sizes := make([]int64, len(all))
	for i, l := range all {
		cw := &digestWriter{h: nopHash{}}
		if err := l.writeSized(ctx, cw, opts.StoreDir, m.StoreTime); err != nil {
			return 0, err
		}
		if sizes[i] = cw.n; cw.n > maxBlob {
			// Out of the layout's reach: stream it instead.
			bw := bufio.NewWriterSize(f, 1<<20)
			if err := Write(ctx, bw, m, opts); err != nil {
				return 0, err
			}
			if err := bw.Flush(); err != nil {
				return 0, fmt.Errorf("writing the archive: %w", err)
			}
			return f.Seek(0, io.SeekCurrent)
		}
	}
	// The layout: the two directories, then each blob (a header block, the
	// layer, padding to a block), then the metadata files.
	const block = 512
	header := make([]int64, len(all))
	off := int64(2 * block)
	for i, n := range sizes {
		header[i] = off
		off += block + (n+block-1)/block*block
	}
	// The layers, in parallel, each where the layout puts it.
	at := func(i int) io.Writer { return io.NewOffsetWriter(f, header[i]+block) }
	if err := writeLayers(ctx, m, all, opts, "write", at, sizes); err != nil {
		return 0, err
	}
	if err := distinct(all); err != nil {
		return 0, err
	}
	// The headers, now that the digests name the blobs.
	headers := &blockWriter{}
	ow := outer{tw: tar.NewWriter(headers), t: m.Created}
	if err := ow.dir("blobs/"); err != nil {
		return 0, err
	}
	if err := ow.dir("blobs/sha256/"); err != nil {
		return 0, err
	}
	if _, err := f.WriteAt(headers.take(), 0); err != nil {
		return 0, fmt.Errorf("writing the archive: %w", err)
	}
	for i, l := range all {
		if err := (outer{tw: tar.NewWriter(headers), t: m.Created}).header(blobPath(l.blob.Digest), l.blob.Size); err != nil {
			return 0, err
		}
		h := headers.take()
		if len(h) != block {
			return 0, fmt.Errorf("layer %d/%d: a %d-byte tar header where %d were laid out", i+1, len(all), len(h), block)
		}
		if _, err := f.WriteAt(h, header[i]); err != nil {
			return 0, fmt.Errorf("writing the archive: %w", err)
		}
	}
	tailFiles, err := metadataFiles(m, all)
	if err != nil {
		return 0, err
	}
	tail := io.NewOffsetWriter(f, off)
	tw := tar.NewWriter(tail)
	if err := writeTail(tw, outer{tw: tw, t: m.Created}, tailFiles); err != nil {
		return 0, err
	}
	end, err := tail.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	return off + end, nil
}

// blockWriter collects what a tar writer writes, to take it out.
type blockWriter struct{ buf bytes.Buffer }

func (b *blockWriter) Write(p []byte) (int, error) { return b.buf.Write(p) }
func (b *blockWriter) take() []byte {
	out := bytes.Clone(b.buf.Bytes())
	b.buf.Reset()
	return out
}

// nopHash counts nothing and hashes nothing: sizing a layer.
type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
func (nopHash) Reset()                      {}
func (nopHash) Size() int                   { return 0 }
func (nopHash) BlockSize() int              { return 1 }

// namedFile is one of the archive's own files.
type namedFile struct {
	name string
	data []byte
}

// metadataFiles are the files after the layers: the config and manifest
// blobs, index.json, Docker's manifest.json and oci-layout.
func metadataFiles(m *imagemodel.Model, all []*layer) ([]namedFile, error) {
	s := m.Spec
	config, err := imageConfig(m, all)
	if err != nil {
		return nil, err
	}
	configDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
	}
	for _, l := range all {
		manifest.Layers = append(manifest.Layers, l.blob)
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	ref := s.ImageName + ":" + s.ImageTag
	manifestDesc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest,
		Digest:    digest.FromBytes(manifestJSON),
		Size:      int64(len(manifestJSON)),
		Annotations: map[string]string{
			// What docker save writes: containerd's full name and the tag.
			"io.containerd.image.name": fullName(ref),
			ocispec.AnnotationRefName:  s.ImageTag,
		},
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	})
	if err != nil {
		return nil, fmt.Errorf("encoding the index: %w", err)
	}
	dm := dockerManifest{Config: blobPath(configDesc.Digest), RepoTags: []string{ref}}
	for _, l := range all {
		dm.Layers = append(dm.Layers, blobPath(l.blob.Digest))
	}
	dockerJSON, err := json.Marshal([]dockerManifest{dm})
	if err != nil {
		return nil, fmt.Errorf("encoding manifest.json: %w", err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, fmt.Errorf("encoding oci-layout: %w", err)
	}

	return []namedFile{
		{blobPath(configDesc.Digest), config},
		{blobPath(manifestDesc.Digest), manifestJSON},
		{"index.json", index},
		{"manifest.json", dockerJSON},
		{ocispec.ImageLayoutFile, layout},
	}, nil
}

// writeTail writes the metadata files and ends the archive.
func writeTail(tw *tar.Writer, ow outer, files []namedFile) error {
	for _, f := range files {
		if err := ow.file(f.name, f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finishing the archive: %w", err)
	}
	return nil
}

// distinct checks that no two layers have the same digest: the archive
// holds each layer's blob once per layer. Store layers hold disjoint,
// non-empty sets of store paths and the skeleton holds no store path, so
// two equal layers would mean a broken model.
func distinct(all []*layer) error {
	seen := map[digest.Digest]int{}
	for i, l := range all {
		if j, ok := seen[l.blob.Digest]; ok {
			return fmt.Errorf("layers %d and %d are identical (%s)", j+1, i+1, l.blob.Digest)
		}
		seen[l.blob.Digest] = i
	}
	return nil
}

// writeLayers renders every layer, a layer per core, into to(i) (nil: only
// hashed) and records its blob. With sizes, a layer must come out at the size
// measured before: the store must not change under the archive.
func writeLayers(ctx context.Context, m *imagemodel.Model, all []*layer, opts Options, phase string, to func(i int) io.Writer, sizes []int64) error {
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(runtime.GOMAXPROCS(0))
	for i, l := range all {
		eg.Go(func() error {
			mu.Lock()
			report(opts, phase, i, len(all), l)
			mu.Unlock()
			dw := &digestWriter{h: sha256.New()}
			if to != nil {
				dw.w = to(i)
			}
			if err := l.write(ectx, dw, opts.StoreDir, m.StoreTime); err != nil {
				return err
			}
			if sizes != nil && dw.n != sizes[i] {
				return fmt.Errorf("layer %d/%d (%s) changed while the image was written: the store must not change", i+1, len(all), l.Description)
			}
			l.blob = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dw.digest(), Size: dw.n}
			return nil
		})
	}
	return eg.Wait()
}

func report(opts Options, phase string, i, n int, l *layer) {
	if opts.Progress != nil {
		opts.Progress(Event{Phase: phase, Layer: i + 1, Layers: n, Description: l.Description, Size: l.Size})
	}
}

func (l *layer) write(ctx context.Context, w io.Writer, storeDir string, t time.Time) error {
	if l.Skeleton {
		_, err := w.Write(l.skeleton)
		return err
	}
	return WriteStoreLayer(ctx, w, storeDir, l.Paths, t)
}

// writeSized writes a tar of the layer's size to w without reading a file's
// content: the same headers, placeholder content.
func (l *layer) writeSized(ctx context.Context, w io.Writer, storeDir string, t time.Time) error {
	if l.Skeleton {
		_, err := w.Write(l.skeleton)
		return err
	}
	return storeLayer(ctx, w, storeDir, l.Paths, t, true)
}

func blobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// fullName is a reference as containerd names it: docker.io/library/web:latest.
func fullName(ref string) string {
	first, _, _ := strings.Cut(ref, "/")
	switch {
	case !strings.Contains(ref, "/"):
		return "docker.io/library/" + ref
	case strings.ContainsAny(first, ".:") || first == "localhost":
		return ref
	default:
		return "docker.io/" + ref
	}
}

// imageConfig is the model's config with the layers' diff IDs.
func imageConfig(m *imagemodel.Model, all []*layer) ([]byte, error) {
	img := m.Config
	img.RootFS.DiffIDs = nil
	for _, l := range all {
		// Uncompressed layers: the diff ID is the blob digest.
		img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, l.blob.Digest)
	}
	data, err := json.Marshal(img)
	if err != nil {
		return nil, fmt.Errorf("encoding the image config: %w", err)
	}
	return data, nil
}

// digestWriter hashes and counts what goes through it.
type digestWriter struct {
	h hash.Hash
	w io.Writer // nil: hash only
	n int64
}

func (d *digestWriter) Write(p []byte) (int, error) {
	if d.w != nil {
		if n, err := d.w.Write(p); err != nil {
			d.h.Write(p[:n])
			d.n += int64(n)
			return n, err
		}
	}
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

func (d *digestWriter) digest() digest.Digest {
	return digest.NewDigest(digest.SHA256, d.h)
}

// outer writes the archive's own entries.
type outer struct {
	tw *tar.Writer
	t  time.Time
}

func (o outer) dir(name string) error {
	return o.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: o.t})
}

func (o outer) header(name string, size int64) error {
	if err := o.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: o.t}); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func (o outer) file(name string, data []byte) error {
	if err := o.header(name, int64(len(data))); err != nil {
		return err
	}
	if _, err := o.tw.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// WriteStoreLayer writes the tar of one layer holding the given store paths,
// read from storeDir, to w: /nix and /nix/store (so that the layer unpacks on
// its own), then the paths, every entry with mtime t.
func WriteStoreLayer(ctx context.Context, w io.Writer, storeDir string, paths []string, t time.Time) error {
	return storeLayer(ctx, w, storeDir, paths, t, false)
}

func storeLayer(ctx context.Context, w io.Writer, storeDir string, paths []string, t time.Time, sizeOnly bool) error {
	tw := tar.NewWriter(w)
	for _, p := range imagemodel.StoreParents {
		d := strings.TrimPrefix(p, "/") + "/"
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: t}); err != nil {
			return fmt.Errorf("writing %s: %w", d, err)
		}
	}
	sorted := slices.Clone(paths)
	slices.Sort(sorted)
	for _, p := range sorted {
		if !strings.HasPrefix(p, imagespec.StoreDir+"/") {
			return fmt.Errorf("%s is not in %s", p, imagespec.StoreDir)
		}
		base := path.Base(p)
		if err := addTree(ctx, tw, filepath.Join(storeDir, base), "nix/store/"+base, t, sizeOnly); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finishing a layer: %w", err)
	}
	return nil
}

// addTree adds src as name, and below it everything in it, depth first
// with names sorted; with sizeOnly, files' content is not read (placeholder
// bytes of the same length).
func addTree(ctx context.Context, tw *tar.Writer, src, name string, t time.Time, sizeOnly bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store path %s is missing (is the closure in the store?): %w", src, err)
		}
		return err
	}
	hdr := &tar.Header{Name: name, Mode: tarMode(fi.Mode()), ModTime: t}
	switch m := fi.Mode(); {
	case m.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("adding %s: %w", src, err)
		}
		entries, err := os.ReadDir(src) // sorted by name
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := addTree(ctx, tw, filepath.Join(src, e.Name()), name+"/"+e.Name(), t, sizeOnly); err != nil {
				return err
			}
		}
		return nil
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, target, 0o777
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("adding %s: %w", src, err)
		}
		return nil
	case m.IsRegular():
		// Hard links (nix-store --optimise) become regular files: each
		// layer stands alone.
		if sizeOnly {
			hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("adding %s: %w", src, err)
			}
			_, err := io.CopyN(tw, placeholder{}, fi.Size())
			return err
		}
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer f.Close()
		hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("adding %s: %w", src, err)
		}
		if n, err := io.Copy(tw, f); err != nil {
			return fmt.Errorf("adding %s (%d of %d bytes): %w", src, n, fi.Size(), err)
		}
		return nil
	default:
		return fmt.Errorf("%s is a %v, which a store path cannot hold", src, m.Type())
	}
}

// tarMode converts permission and setuid/setgid/sticky bits to tar's.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// writeSkeleton writes the model's completed skeleton as a tar.
func writeSkeleton(w io.Writer, m *imagemodel.Model) error {
	tw := tar.NewWriter(w)
	for _, e := range m.Skeleton {
		name := strings.TrimPrefix(e.Path, "/")
		hdr := &tar.Header{Name: name, Mode: int64(e.FileMode()), ModTime: m.EntryTime(e)}
		switch e.Type {
		case imagespec.TypeDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		case imagespec.TypeFile:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.Content))
		case imagespec.TypeSymlink:
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.Target, 0o777
		default:
			return fmt.Errorf("skeleton: %s has unknown type %q", e.Path, e.Type)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("skeleton: %s: %w", e.Path, err)
		}
		if e.Type == imagespec.TypeFile {
			if _, err := io.WriteString(tw, e.Content); err != nil {
				return fmt.Errorf("skeleton: %s: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("skeleton: %w", err)
	}
	return nil
}

// placeholder reads as any bytes: sizing a tar without reading files.
type placeholder struct{}

func (placeholder) Read(p []byte) (int, error) { return len(p), nil }
