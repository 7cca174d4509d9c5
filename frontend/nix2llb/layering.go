package nix2llb

import (
	"context"
	"fmt"
	"slices"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/util/apicaps"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
)

// Layering is how the layers' states are combined into the image's root
// filesystem. It changes nothing in what a layer holds (NewImage makes each
// layer's op the same way in both): only what each op is applied to, and so
// what its cache key includes.
type Layering int

const (
	// Merged makes every layer on an empty state, on its own, and combines
	// them with one MergeOp: a layer's cache key is its own store paths, so
	// a change re-creates only the layers holding what changed. Needs
	// BuildKit's MergeOp, which Docker's built-in BuildKit only has with the
	// containerd image store.
	Merged Layering = iota
	// Stacked applies every layer's op to the result of the layer below, as
	// the steps of a Dockerfile are, so that each op is one layer without a
	// MergeOp (Docker's classic image store). Same layers, same files, same
	// config; but a layer's cache key includes every layer below it, so a
	// change low in the stack re-creates every layer above it.
	Stacked
)

// Layerings are the ways to combine layers, best first.
var Layerings = []Layering{Merged, Stacked}

func (l Layering) String() string {
	switch l {
	case Merged:
		return "merged"
	case Stacked:
		return "stacked"
	}
	return fmt.Sprintf("Layering(%d)", int(l))
}

// Cost says in one line what the layering gives and costs on a rebuild.
func (l Layering) Cost() string {
	if l == Stacked {
		return "each layer is built on the one below it, so a change in a layer re-creates every layer above it"
	}
	return "each layer is built and cached on its own, so a change re-creates only the layers holding it"
}

// LayerStep makes one layer: its base plus the layer's content, in one op
// (a run step that copies store paths, or the skeleton's file op), so that
// the op's result minus its base is the layer.
type LayerStep func(base llb.State) llb.State

// Combine makes the root filesystem from the layers' steps, bottom to top.
// The bottom layer's op is the same in both layerings (its base is empty).
func Combine(steps []LayerStep, l Layering) llb.State {
	if l == Stacked {
		st := llb.Scratch()
		for _, step := range steps {
			st = step(st)
		}
		return st
	}
	states := make([]llb.State, len(steps))
	for i, step := range steps {
		states[i] = step(llb.Scratch())
	}
	// The merge's progress name is the line that says which layering the
	// build took (a stacked build says it in a warning: it has no op of its own).
	return llb.Merge(states, llb.WithCustomNamef("merge %d layers: %s", len(states), Merged.Cost()))
}

// Caps are the LLB capabilities a builder must have for NewImage's LLB with
// this layering, sorted: those BuildKit's client declares in the LLB, which
// are what the builder checks when it loads it. They are read off the LLB of
// a small image that uses every kind of action NewImage makes (store layers,
// a skeleton with a directory, a file and a symlink, special modes), so they
// follow the code.
func (l Layering) Caps(ctx context.Context) ([]apicaps.CapID, error) {
	skeleton := []imagespec.Entry{
		{Path: "/bin", Type: imagespec.TypeDir},
		{Path: "/bin/sh", Type: imagespec.TypeSymlink, Target: "/nix/store/00000000000000000000000000000000-b/bin/sh"},
		{Path: "/etc", Type: imagespec.TypeDir},
		{Path: "/etc/f", Type: imagespec.TypeFile, Content: "f"},
		{Path: "/etc/s", Type: imagespec.TypeFile, Mode: "4755"},
		{Path: "/tmp", Type: imagespec.TypeDir, Mode: "1777"},
	}
	m := &imagemodel.Model{
		Created:   imagemodel.NixTime,
		StoreTime: imagemodel.NixTime,
		Layers: []imagemodel.Layer{
			{Paths: []string{"/nix/store/00000000000000000000000000000000-a"}, Name: "a"},
			{Paths: []string{"/nix/store/00000000000000000000000000000000-b"}, Name: "b"},
			{Skeleton: true, Name: "skeleton"},
		},
		Skeleton: skeleton,
	}
	// The store as the builder stage mounts it: a read-only cache mount.
	store := llb.AddMount(NixDir, llb.Scratch(), llb.Readonly, llb.AsPersistentCacheDir("caps", storeSharing))
	img, err := NewImage(ImageInput{Model: m, Tools: llb.Image("caps"), Store: store, Layering: l})
	if err != nil {
		return nil, fmt.Errorf("%s layering: %w", l, err)
	}
	def, err := img.State.Marshal(ctx, llb.LinuxAmd64)
	if err != nil {
		return nil, fmt.Errorf("%s layering: marshal LLB: %w", l, err)
	}
	var caps []apicaps.CapID
	for _, md := range def.Metadata {
		for c := range md.Caps {
			if !slices.Contains(caps, c) {
				caps = append(caps, c)
			}
		}
	}
	slices.Sort(caps)
	return caps, nil
}
