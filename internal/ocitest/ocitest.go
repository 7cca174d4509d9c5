// Package ocitest reads images the way the tests compare them: an OCI image
// layout as a tar (what BuildKit's oci exporter and `docker save` write, and
// what the archive package writes for `docker load`), down to every layer's
// entries with their metadata and a digest of their content. Layers may be
// plain or gzip-compressed tars. One reader for every suite, so that a test
// comparing the two faces compares like with like.
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
	"os"
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

// Image is one image of a layout.
type Image struct {
	Manifest       ocispec.Manifest
	ManifestDigest string
	Config         dockerspec.DockerOCIImage
	// Layers are the layers' entries, bottom to top, in tar order.
	Layers [][]Entry
}

// ReadFile reads the first image of an OCI layout tar file.
func ReadFile(p string) (*Image, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(bufio.NewReader(f))
}

// Read reads the first image of an OCI layout tar.
func Read(r io.Reader) (*Image, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the layout: %w", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", h.Name, err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = data
	}
	blob := func(d string) ([]byte, error) {
		b, ok := files["blobs/"+strings.Replace(d, ":", "/", 1)]
		if !ok {
			return nil, fmt.Errorf("blob %s missing from the layout", d)
		}
		return b, nil
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) == 0 {
		return nil, fmt.Errorf("index.json: no manifest (%v)", err)
	}
	img := &Image{ManifestDigest: idx.Manifests[0].Digest.String()}
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
	for _, l := range img.Manifest.Layers {
		data, err := blob(l.Digest.String())
		if err != nil {
			return nil, err
		}
		entries, err := LayerEntries(data)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		img.Layers = append(img.Layers, entries)
	}
	return img, nil
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
			Name:     strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/"),
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
