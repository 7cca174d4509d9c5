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
// the model's (StoreTime in the store, Created elsewhere). A layer's digest must
// be known before its bytes are written (it names the blob), so each store
// layer is read twice: once to hash it, once to write it, and a store that
// changed in between is an error.
package archive

import (
	"archive/tar"
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
	s := m.Spec
	all := make([]*layer, 0, len(m.Layers))
	for _, ml := range m.Layers {
		l := &layer{Layer: ml}
		if ml.Skeleton {
			var skel bytes.Buffer
			if err := writeSkeleton(&skel, m); err != nil {
				return err
			}
			l.skeleton = skel.Bytes()
		}
		all = append(all, l)
	}

	// First pass: digests and sizes, a layer per core (hashing is CPU-bound
	// once the store is in the page cache).
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(runtime.GOMAXPROCS(0))
	for i, l := range all {
		eg.Go(func() error {
			mu.Lock()
			report(opts, "hash", i, len(all), l)
			mu.Unlock()
			dw := &digestWriter{h: sha256.New()}
			if err := l.write(ectx, dw, opts.StoreDir, m.StoreTime); err != nil {
				return err
			}
			l.blob = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dw.digest(), Size: dw.n}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}

	config, err := imageConfig(m, all)
	if err != nil {
		return err
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
		return fmt.Errorf("encoding the manifest: %w", err)
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
		return fmt.Errorf("encoding the index: %w", err)
	}
	dm := dockerManifest{Config: blobPath(configDesc.Digest), RepoTags: []string{ref}}
	for _, l := range all {
		dm.Layers = append(dm.Layers, blobPath(l.blob.Digest))
	}
	dockerJSON, err := json.Marshal([]dockerManifest{dm})
	if err != nil {
		return fmt.Errorf("encoding manifest.json: %w", err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return fmt.Errorf("encoding oci-layout: %w", err)
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
	written := map[digest.Digest]bool{}
	for i, l := range all {
		if written[l.blob.Digest] {
			continue // two identical layers (an empty skeleton twice, say) share a blob
		}
		written[l.blob.Digest] = true
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
	for _, f := range []struct {
		name string
		data []byte
	}{
		{blobPath(configDesc.Digest), config},
		{blobPath(manifestDesc.Digest), manifestJSON},
		{"index.json", index},
		{"manifest.json", dockerJSON},
		{ocispec.ImageLayoutFile, layout},
	} {
		if err := ow.file(f.name, f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finishing the archive: %w", err)
	}
	return nil
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
		if err := addTree(ctx, tw, filepath.Join(storeDir, base), "nix/store/"+base, t); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finishing a layer: %w", err)
	}
	return nil
}

// addTree adds src as name, and below it everything in it, depth first
// with names sorted.
func addTree(ctx context.Context, tw *tar.Writer, src, name string, t time.Time) error {
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
			if err := addTree(ctx, tw, filepath.Join(src, e.Name()), name+"/"+e.Name(), t); err != nil {
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
