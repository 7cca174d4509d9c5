// Package imagemodel decides what the image built from a spec is, once, for
// both faces of nixos2docker: the BuildKit frontend renders a Model as LLB
// (frontend/nix2llb) and the Nix-native assembler renders it as a tar archive
// (archive). Neither renderer decides anything the other could decide
// differently: layer groups and their order, each layer's description,
// progress name and history entry, the completed root skeleton, the image
// config (labels, created time, platform) and the time stamped on every file
// all come from here.
//
// What: New takes a validated spec (imagespec.Parse validates) and the build's
// options (SOURCE_DATE_EPOCH, extra labels) and returns a Model: the closure
// grouped by the layers package into at most maxLayers-1 store layers, bottom
// to top, then always one skeleton layer (the spec's entries, their missing
// parents, and /nix and /nix/store so that the layer unpacks on its own). A
// spec with nixRegistration gets the closure's Nix registration as one more
// skeleton file (NixRegistration), which the image's Nix loads at first boot.
//
// Why one time policy for store files: a store path's content never depends on
// when it was built, and Nix gives every store file mtime 1. Store layers keep
// that time whatever SOURCE_DATE_EPOCH says, so a layer's digest is a function
// of its store paths alone: a CI that sets SOURCE_DATE_EPOCH to the commit time
// still reuses every unchanged layer. The epoch (default: Nix's time 1) stamps
// what the build makes: the skeleton's entries, the config's created time and
// the history.
//
// Cost: one layers.Assign (linear in the closure's paths and references) and
// a sort of the skeleton; no file is read.
package imagemodel

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/layers"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// NixTime is the mtime Nix gives every file in the store, and the image's
// time when no SOURCE_DATE_EPOCH is given.
var NixTime = time.Unix(1, 0).UTC()

// maxEpoch is the last second of year 9999: later times do not fit the
// RFC 3339 timestamps of the image config.
const maxEpoch = 253402300799

// ParseEpoch reads a SOURCE_DATE_EPOCH value: whole seconds since 1970, at
// most the end of year 9999.
func ParseEpoch(v string) (time.Time, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("%q is not a number of seconds since 1970 (a non-negative integer)", v)
	}
	if n > maxEpoch {
		return time.Time{}, fmt.Errorf("%q is after the year 9999 (at most %d)", v, maxEpoch)
	}
	return time.Unix(n, 0).UTC(), nil
}

// Options are what a build adds to the spec.
type Options struct {
	// Epoch is SOURCE_DATE_EPOCH; nil means NixTime.
	Epoch *time.Time
	// Labels are added to the spec's config labels, and win over them
	// (docker buildx build --label).
	Labels map[string]string
}

// Layer is one layer of the image, bottom to top.
type Layer struct {
	// Paths are the layer's store paths, sorted; empty for the skeleton.
	Paths []string
	// Size is the NAR size of the store paths, or the skeleton's content.
	Size int64
	// Skeleton marks the root skeleton layer (always the last one).
	Skeleton bool
	// Description names the layer for people: its largest store paths, or
	// "root skeleton (N entries)".
	Description string
	// Name is the progress name: "layer 3/12: glibc-2.42, … (31 MiB)".
	Name string
	// History is the layer's entry in the image config's history.
	History ocispec.History
}

// Model is the image a spec and its options make.
type Model struct {
	Spec *imagespec.Spec
	// Created is the config's creation time and the time of every skeleton
	// entry: SOURCE_DATE_EPOCH, else NixTime.
	Created time.Time
	// StoreTime is the time of every store file and of /nix and /nix/store
	// in every layer: always NixTime (see the package doc).
	StoreTime time.Time
	// Layers are the store layers then the skeleton layer.
	Layers []Layer
	// Skeleton is the skeleton layer's content: the spec's entries, their
	// missing parent directories, /nix and /nix/store; parents before
	// children, siblings by name (the order a tar of it takes).
	Skeleton []imagespec.Entry
	// Config is the image config without the layers' diff IDs, which only a
	// renderer knows.
	Config dockerspec.DockerOCIImage
}

// New decides the image for a spec that passed imagespec's validation.
func New(s *imagespec.Spec, o Options) (*Model, error) {
	if s == nil {
		return nil, fmt.Errorf("image model: no spec")
	}
	if s.MaxLayers < 2 || s.MaxLayers > imagespec.MaxLayers {
		return nil, fmt.Errorf("image model: maxLayers %d is outside 2…%d (validate the spec first)", s.MaxLayers, imagespec.MaxLayers)
	}
	platform, err := imagespec.Platform(s.System)
	if err != nil {
		return nil, err
	}
	created := NixTime
	if o.Epoch != nil {
		created = o.Epoch.UTC().Truncate(time.Second)
	}
	// The skeleton takes one layer of maxLayers.
	groups, err := layers.Assign(layers.FromSpec(s), layers.Options{MaxLayers: s.MaxLayers - 1, Toplevel: s.Toplevel})
	if err != nil {
		return nil, fmt.Errorf("grouping the closure into layers: %w", err)
	}
	if err := checkGroups(s, groups); err != nil {
		return nil, err
	}
	entries := s.Skeleton
	if s.NixRegistration != "" {
		entries = append(slices.Clone(s.Skeleton), imagespec.Entry{
			Path:    s.NixRegistration,
			Type:    imagespec.TypeFile,
			Mode:    "0644",
			Content: NixRegistration(s.Closure),
		})
	}
	m := &Model{Spec: s, Created: created, StoreTime: NixTime, Skeleton: completeSkeleton(entries)}

	sizes := make(map[string]int64, len(s.Closure))
	for _, p := range s.Closure {
		sizes[p.Path] = p.NarSize
	}
	total := len(groups) + 1
	for i, g := range groups {
		paths := slices.Sorted(slices.Values(g.Paths))
		desc := layers.Describe(paths, sizes)
		m.Layers = append(m.Layers, Layer{
			Paths:       paths,
			Size:        g.Size,
			Description: desc,
			Name:        fmt.Sprintf("layer %d/%d: %s (%s)", i+1, total, desc, layers.HumanSize(g.Size)),
			History: ocispec.History{
				Created:   &m.Created,
				CreatedBy: "nixos2docker: " + strings.Join(paths, " "),
				Comment:   fmt.Sprintf("store paths, layer %d/%d, %s", i+1, total, layers.HumanSize(g.Size)),
			},
		})
	}
	var skelSize int64
	for _, e := range m.Skeleton {
		skelSize += int64(len(e.Content))
	}
	desc := fmt.Sprintf("root skeleton (%d entries)", len(entries))
	m.Layers = append(m.Layers, Layer{
		Size:        skelSize,
		Skeleton:    true,
		Description: desc,
		Name:        fmt.Sprintf("layer %d/%d: %s", total, total, desc),
		History: ocispec.History{
			Created:   &m.Created,
			CreatedBy: "nixos2docker: root skeleton: " + strings.Join(imagespec.EntryPaths(entries), " "),
			Comment:   "root filesystem outside the store",
		},
	})

	cfg := s.Config
	if len(s.Config.Labels) > 0 || len(o.Labels) > 0 {
		cfg.Labels = make(map[string]string, len(s.Config.Labels)+len(o.Labels))
		maps.Copy(cfg.Labels, s.Config.Labels)
		maps.Copy(cfg.Labels, o.Labels)
	}
	m.Config = dockerspec.DockerOCIImage{
		Image: ocispec.Image{
			Created:  &m.Created,
			Platform: platform,
			RootFS:   ocispec.RootFS{Type: "layers"},
		},
		Config: cfg,
	}
	for _, l := range m.Layers {
		m.Config.History = append(m.Config.History, l.History)
	}
	return m, nil
}

// NixRegistration renders the closure as `nix-store --load-db` reads it (the
// format `nix-store --dump-db` writes and nixpkgs' closureInfo makes for its
// images): for each store path, sorted, one line each for the path, its
// narHash, its narSize, its deriver (empty: unknown, as for paths copied
// from a binary cache), the number of its references, then the references,
// sorted. Loaded into an empty database it makes every path of the image
// valid with the hashes Nix computed when it built the spec, so
// `nix-store --verify-path` checks the image's bytes against them. About 130
// bytes per path plus 60 per reference.
func NixRegistration(closure []imagespec.Path) string {
	paths := slices.Clone(closure)
	slices.SortFunc(paths, func(a, b imagespec.Path) int { return strings.Compare(a.Path, b.Path) })
	var b strings.Builder
	for _, p := range paths {
		refs := slices.Sorted(slices.Values(p.References))
		fmt.Fprintf(&b, "%s\n%s\n%d\n\n%d\n", p.Path, p.NarHash, p.NarSize, len(refs))
		for _, r := range refs {
			b.WriteString(r + "\n")
		}
	}
	return b.String()
}

// StoreLayers are the layers holding store paths (all but the skeleton).
func (m *Model) StoreLayers() []Layer { return m.Layers[:len(m.Layers)-1] }

// EntryTime is the mtime of a completed skeleton entry: the store's parents
// keep the store's time, as in every store layer.
func (m *Model) EntryTime(e imagespec.Entry) time.Time {
	if IsStoreParent(e.Path) {
		return m.StoreTime
	}
	return m.Created
}

// StoreParents are the directories above the store paths, in every layer so
// that each layer unpacks on its own.
var StoreParents = []string{"/nix", imagespec.StoreDir}

// IsStoreParent tells whether p is /nix or /nix/store.
func IsStoreParent(p string) bool { return slices.Contains(StoreParents, p) }

// checkGroups makes sure the layering kept its promise: every closure path in
// exactly one non-empty group, and room left for the skeleton.
func checkGroups(s *imagespec.Spec, groups []layers.Layer) error {
	if len(groups) == 0 {
		return fmt.Errorf("image model: no layers for the closure")
	}
	if len(groups)+1 > s.MaxLayers {
		return fmt.Errorf("image model: %d store-path layers plus the skeleton exceed maxLayers %d", len(groups), s.MaxLayers)
	}
	in := make(map[string]bool, len(s.Closure))
	for _, p := range s.Closure {
		in[p.Path] = true
	}
	seen := make(map[string]int, len(s.Closure))
	for i, g := range groups {
		if len(g.Paths) == 0 {
			return fmt.Errorf("image model: layer %d is empty", i+1)
		}
		for _, p := range g.Paths {
			if !in[p] {
				return fmt.Errorf("image model: layer %d holds %s, which is not in the closure", i+1, p)
			}
			if j, dup := seen[p]; dup {
				return fmt.Errorf("image model: %s is in layers %d and %d", p, j+1, i+1)
			}
			seen[p] = i
		}
	}
	if len(seen) != len(in) {
		for _, p := range s.Closure {
			if _, ok := seen[p.Path]; !ok {
				return fmt.Errorf("image model: %s is in no layer", p.Path)
			}
		}
	}
	return nil
}

// completeSkeleton adds the missing parent directories and the store's
// parents to the entries, and sorts them parents first, siblings by name.
func completeSkeleton(entries []imagespec.Entry) []imagespec.Entry {
	all := make(map[string]imagespec.Entry, len(entries)+len(StoreParents))
	for _, e := range entries {
		all[e.Path] = e
	}
	for _, d := range StoreParents {
		if _, ok := all[d]; !ok {
			all[d] = imagespec.Entry{Path: d, Type: imagespec.TypeDir}
		}
	}
	for p := range maps.Clone(all) {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = imagespec.Entry{Path: d, Type: imagespec.TypeDir}
			}
		}
	}
	out := slices.Collect(maps.Values(all))
	// Parents before children, siblings by name: compare with "/" lowest.
	slices.SortFunc(out, func(a, b imagespec.Entry) int {
		return strings.Compare(strings.ReplaceAll(a.Path, "/", "\x00"), strings.ReplaceAll(b.Path, "/", "\x00"))
	})
	return out
}
