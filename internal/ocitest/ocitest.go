// Package ocitest reads images the way the tests compare them: an OCI image
// layout as a tar (what BuildKit's oci exporter and `docker save` write, and
// what the archive package writes for `docker load`), down to every layer's
// entries with their metadata and a digest of their content. Layers may be
// plain or gzip-compressed tars. One reader and one comparison (Compare) for
// every suite, so that a test comparing two renderings of an image (the two
// faces, two builders, two layerings) compares like with like.
package ocitest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Entry is one tar entry of a layer.
type Entry struct {
	Name     string // without a leading "./" or a trailing "/"
	Type     byte   // tar.TypeDir, TypeReg, TypeSymlink…
	Mode     int64  // permission and setuid/setgid/sticky bits
	UID, GID int
	ModTime  time.Time
	Linkname string
	Size     int64
	SHA256   string // of the content, for regular files
}

// String is a one-line description, for diffs in test failures.
func (e Entry) String() string {
	return fmt.Sprintf("%s type=%c mode=%04o owner=%d:%d mtime=%d link=%q size=%d sha256=%.12s",
		e.Name, e.Type, e.Mode, e.UID, e.GID, e.ModTime.Unix(), e.Linkname, e.Size, e.SHA256)
}

// Layer is one layer blob with the entries of its tar stream.
type Layer struct {
	Digest  string
	Size    int64
	Entries []Entry
}

// StorePaths returns the store paths this layer holds anything of, sorted.
func (l Layer) StorePaths() []string {
	seen := map[string]bool{}
	for _, e := range l.Entries {
		if p := StorePathOf(e.Name); p != "" {
			seen[p] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// StorePathOf returns "/nix/store/<name>" for an entry at or below a store
// path, or "".
func StorePathOf(name string) string {
	rest, ok := strings.CutPrefix(name, "nix/store/")
	if !ok || rest == "" {
		return ""
	}
	top, _, _ := strings.Cut(rest, "/")
	return "/nix/store/" + top
}

// Image is one platform's image of a layout.
type Image struct {
	Manifest       ocispec.Manifest
	ManifestDigest string
	Config         dockerspec.DockerOCIImage
	// Layers are bottom to top, entries in tar order.
	Layers []Layer
	// Blobs are every file of the layout by name ("index.json",
	// "blobs/sha256/…"), for tests that look further.
	Blobs map[string][]byte
}

// ReadFile reads the linux/amd64 image of an OCI layout tar file.
func ReadFile(p string) (*Image, error) {
	return ReadFilePlatform(p, "linux", "amd64")
}

// ReadFilePlatform reads the image for os/arch of an OCI layout tar file.
func ReadFilePlatform(p, os_, arch string) (*Image, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := read(bufio.NewReader(f), os_, arch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return img, nil
}

// Read reads the linux/amd64 image of an OCI layout tar.
func Read(r io.Reader) (*Image, error) { return read(r, "linux", "amd64") }

// read reads an OCI layout tar; a multi-platform or attested index is
// followed to its one image manifest for os/arch.
func read(r io.Reader, os_, arch string) (*Image, error) {
	files, err := Files(r)
	if err != nil {
		return nil, err
	}
	blob := func(d string) ([]byte, error) {
		b, ok := files["blobs/"+strings.Replace(d, ":", "/", 1)]
		if !ok {
			return nil, fmt.Errorf("blob %s missing from the layout", d)
		}
		return b, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		return nil, fmt.Errorf("index.json: not an OCI layout (%v)", err)
	}
	desc, err := pickManifest(blob, idx.Manifests, os_, arch)
	if err != nil {
		return nil, err
	}
	img := &Image{ManifestDigest: desc.Digest.String(), Blobs: files}
	data, err := blob(img.ManifestDigest)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &img.Manifest); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if data, err = blob(img.Manifest.Config.Digest.String()); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &img.Config); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for i, l := range img.Manifest.Layers {
		data, err := blob(l.Digest.String())
		if err != nil {
			return nil, err
		}
		entries, err := LayerEntries(data)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		img.Layers = append(img.Layers, Layer{Digest: l.Digest.String(), Size: l.Size, Entries: entries})
	}
	return img, nil
}

// FilesOf reads every file of a layout tar file by name ("index.json",
// "blobs/sha256/…").
func FilesOf(p string) (map[string][]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Files(bufio.NewReader(f))
}

// Files reads every regular file of a tar by its cleaned name.
func Files(r io.Reader) (map[string][]byte, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the layout: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", h.Name, err)
		}
		files[path.Clean(h.Name)] = data
	}
}

func pickManifest(blob func(string) ([]byte, error), descs []ocispec.Descriptor, os_, arch string) (ocispec.Descriptor, error) {
	var found []ocispec.Descriptor
	for _, d := range descs {
		switch d.MediaType {
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			data, err := blob(d.Digest.String())
			if err != nil {
				return d, err
			}
			var sub ocispec.Index
			if err := json.Unmarshal(data, &sub); err != nil {
				return d, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			m, err := pickManifest(blob, sub.Manifests, os_, arch)
			if err != nil {
				return d, err
			}
			found = append(found, m)
		default:
			// Attestation manifests (provenance, SBOM) have platform unknown/unknown.
			if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
				continue
			}
			if d.Platform != nil && (d.Platform.OS != os_ || d.Platform.Architecture != arch) {
				continue
			}
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		return ocispec.Descriptor{}, fmt.Errorf("expected one %s/%s image manifest, found %d", os_, arch, len(found))
	}
	return found[0], nil
}

// LayerEntries reads a layer blob, plain or gzip-compressed.
func LayerEntries(data []byte) ([]Entry, error) {
	var r io.Reader = bytes.NewReader(data)
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	tr := tar.NewReader(r)
	var out []Entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		e := Entry{
			Name:     strings.TrimPrefix(path.Clean("/"+h.Name), "/"),
			Type:     h.Typeflag,
			Mode:     h.Mode & 0o7777,
			UID:      h.Uid,
			GID:      h.Gid,
			ModTime:  h.ModTime.UTC(),
			Linkname: h.Linkname,
			Size:     h.Size,
		}
		if h.Typeflag == tar.TypeReg {
			sum := sha256.New()
			if _, err := io.Copy(sum, tr); err != nil {
				return nil, err
			}
			e.SHA256 = hex.EncodeToString(sum.Sum(nil))
		}
		out = append(out, e)
	}
}

// Lines describes a layer's entries, one line each (Entry.String), sorted by
// name: tar order is each writer's own, the entries are what a container sees.
func Lines(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.String()
	}
	slices.Sort(out)
	return out
}

// Leeway loosens Compare where two correct renderings may differ.
type Leeway struct {
	// NoopDirs lets a directory entry that changes nothing (it equals the
	// directory the layers below leave) be in one rendering's layer and not
	// the other's: differs differ there (BuildKit's overlay differ leaves
	// such a parent out of a layer made on top of another, Docker's overlay2
	// graph driver keeps it, a layer made on its own has it).
	NoopDirs bool
}

// Compare holds two renderings of the same image against each other: the
// same number of layers, each with the same entries (name, type, mode,
// owner, time, link, content; tar order aside), and the same config but for
// the diff IDs, which hash each writer's own tar bytes. It returns the
// differences, one line each, the first image's side first; none when they
// match.
func Compare(a, b *Image, leeway Leeway) []string {
	var diffs []string
	if len(a.Layers) != len(b.Layers) {
		diffs = append(diffs, fmt.Sprintf("%d layers, %d layers", len(a.Layers), len(b.Layers)))
	}
	// What each image's layers so far leave at a path (whiteouts aside:
	// renderings of one image delete nothing).
	viewA, viewB := map[string]string{}, map[string]string{}
	noop := func(e Entry, view map[string]string) bool {
		return leeway.NoopDirs && e.Type == tar.TypeDir && view[e.Name] == e.String()
	}
	for i := range min(len(a.Layers), len(b.Layers)) {
		la, lb := byName(a.Layers[i].Entries), byName(b.Layers[i].Entries)
		for _, name := range sortedNames(la, lb) {
			ea, inA := la[name]
			eb, inB := lb[name]
			switch {
			case inA && inB && ea.String() == eb.String():
			case inA && inB:
				diffs = append(diffs, fmt.Sprintf("layer %d/%d: %s differs:\n  first:  %s\n  second: %s", i+1, len(a.Layers), name, ea, eb))
			case inA && !noop(ea, viewA):
				diffs = append(diffs, fmt.Sprintf("layer %d/%d: only in the first:  %s", i+1, len(a.Layers), ea))
			case inB && !noop(eb, viewB):
				diffs = append(diffs, fmt.Sprintf("layer %d/%d: only in the second: %s", i+1, len(a.Layers), eb))
			}
		}
		for name, e := range la {
			viewA[name] = e.String()
		}
		for name, e := range lb {
			viewB[name] = e.String()
		}
	}
	ac, bc := a.Config, b.Config
	ac.RootFS.DiffIDs, bc.RootFS.DiffIDs = nil, nil
	aj, _ := json.MarshalIndent(ac, "", " ")
	bj, _ := json.MarshalIndent(bc, "", " ")
	for _, d := range lineDiff(strings.Split(string(aj), "\n"), strings.Split(string(bj), "\n")) {
		diffs = append(diffs, "config: "+d)
	}
	return diffs
}

func byName(es []Entry) map[string]Entry {
	m := make(map[string]Entry, len(es))
	for _, e := range es {
		m[e.Name] = e
	}
	return m
}

func sortedNames(ms ...map[string]Entry) []string {
	var out []string
	for _, m := range ms {
		for n := range m {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// lineDiff lists the lines only one side has, in each side's order.
func lineDiff(a, b []string) []string {
	in := func(ls []string) map[string]bool {
		m := make(map[string]bool, len(ls))
		for _, l := range ls {
			m[l] = true
		}
		return m
	}
	inA, inB := in(a), in(b)
	var out []string
	for _, l := range a {
		if !inB[l] {
			out = append(out, "only in the first:  "+l)
		}
	}
	for _, l := range b {
		if !inA[l] {
			out = append(out, "only in the second: "+l)
		}
	}
	return out
}
