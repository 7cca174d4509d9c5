package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// ociImage is one platform's image read from an OCI layout tarball (buildctl's type=oci, or
// buildx's --output type=oci).
type ociImage struct {
	ManifestDigest string
	Manifest       ocispecs.Manifest
	Config         dockerspec.DockerOCIImage
	Layers         []ociLayer
}

// ociLayer is one layer blob with the entries of its tar stream.
type ociLayer struct {
	Digest  string
	Size    int64
	Entries []layerEntry
}

type layerEntry struct {
	Name     string // cleaned, relative, no trailing slash ("nix/store/…-x/bin/sh")
	Type     byte
	Linkname string
	Mode     int64
	UID, GID int
	ModTime  int64
	Size     int64
}

// storePathOf returns "/nix/store/<name>" for an entry at or below a store path, or "".
func storePathOf(name string) string {
	rest, ok := strings.CutPrefix(name, "nix/store/")
	if !ok || rest == "" {
		return ""
	}
	top, _, _ := strings.Cut(rest, "/")
	return "/nix/store/" + top
}

// StorePaths returns the store paths this layer holds anything of, sorted.
func (l ociLayer) StorePaths() []string {
	seen := map[string]bool{}
	for _, e := range l.Entries {
		if p := storePathOf(e.Name); p != "" {
			seen[p] = true
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// readOCITar reads the image in an OCI layout tarball. A multi-platform or attested index is
// followed to its one linux/amd64 image manifest.
func readOCITar(file string) (*ociImage, error) {
	blobs, index, err := loadOCITar(file)
	if err != nil {
		return nil, err
	}
	desc, err := pickManifest(blobs, index.Manifests)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	img := &ociImage{ManifestDigest: desc.Digest.String()}
	if err := json.Unmarshal(blobs[desc.Digest.String()], &img.Manifest); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", file, desc.Digest, err)
	}
	cfg, ok := blobs[img.Manifest.Config.Digest.String()]
	if !ok {
		return nil, fmt.Errorf("%s: config blob %s missing", file, img.Manifest.Config.Digest)
	}
	if err := json.Unmarshal(cfg, &img.Config); err != nil {
		return nil, fmt.Errorf("%s: config: %w", file, err)
	}
	for i, l := range img.Manifest.Layers {
		data, ok := blobs[l.Digest.String()]
		if !ok {
			return nil, fmt.Errorf("%s: layer %d blob %s missing", file, i, l.Digest)
		}
		entries, err := readLayer(data, l.MediaType)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %d (%s): %w", file, i, l.Digest, err)
		}
		img.Layers = append(img.Layers, ociLayer{Digest: l.Digest.String(), Size: l.Size, Entries: entries})
	}
	return img, nil
}

func loadOCITar(file string) (map[string][]byte, *ocispecs.Index, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, fmt.Errorf("opening OCI tarball: %w", err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	var index *ocispecs.Index
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", file, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s: %s: %w", file, h.Name, err)
		}
		name := path.Clean(h.Name)
		switch {
		case name == "index.json":
			index = &ocispecs.Index{}
			if err := json.Unmarshal(data, index); err != nil {
				return nil, nil, fmt.Errorf("%s: index.json: %w", file, err)
			}
		case strings.HasPrefix(name, "blobs/"):
			parts := strings.Split(name, "/") // blobs/<alg>/<hex>
			if len(parts) == 3 {
				blobs[parts[1]+":"+parts[2]] = data
			}
		}
	}
	if index == nil {
		return nil, nil, fmt.Errorf("%s: no index.json: not an OCI layout tarball", file)
	}
	return blobs, index, nil
}

func pickManifest(blobs map[string][]byte, descs []ocispecs.Descriptor) (ocispecs.Descriptor, error) {
	var found []ocispecs.Descriptor
	for _, d := range descs {
		switch d.MediaType {
		case ocispecs.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var sub ocispecs.Index
			if err := json.Unmarshal(blobs[d.Digest.String()], &sub); err != nil {
				return d, fmt.Errorf("index %s: %w", d.Digest, err)
			}
			m, err := pickManifest(blobs, sub.Manifests)
			if err != nil {
				return d, err
			}
			found = append(found, m)
		case ocispecs.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			// Attestation manifests (provenance, SBOM) have platform unknown/unknown.
			if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" {
				continue
			}
			if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != "amd64") {
				continue
			}
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		return ocispecs.Descriptor{}, fmt.Errorf("expected one linux/amd64 image manifest, found %d", len(found))
	}
	return found[0], nil
}

func readLayer(data []byte, mediaType string) ([]layerEntry, error) {
	var r io.Reader = bytes.NewReader(data)
	switch {
	case strings.HasSuffix(mediaType, "gzip"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(mediaType, "zstd"):
		return nil, fmt.Errorf("zstd layers are not read by this test (media type %s)", mediaType)
	}
	var out []layerEntry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("tar: %w", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		out = append(out, layerEntry{
			Name: name, Type: h.Typeflag, Linkname: h.Linkname, Mode: h.Mode,
			UID: h.Uid, GID: h.Gid, ModTime: h.ModTime.Unix(), Size: h.Size,
		})
	}
}
