package nix2llb

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/layers"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Layer is one group of store paths, as the layers package assigns them.
type Layer struct {
	Paths []string
	Size  int64
}

// ImageInput is everything the image is made of.
type ImageInput struct {
	Spec *imagespec.Spec
	// Layers are the store-path groups, bottom to top; the skeleton layer
	// goes on top of them.
	Layers []Layer
	// Store is the builder stage; StoreDir is where the closure lies in its
	// root filesystem (OutDir/nix/store).
	Store    llb.State
	StoreDir string
	Platform ocispecs.Platform
	// Epoch is SOURCE_DATE_EPOCH: the time of every file and of the config.
	Epoch *time.Time
	// Labels are added to (and override) the spec's labels.
	Labels map[string]string
	// IgnoreCache re-makes every layer (--no-cache).
	IgnoreCache bool
}

// Image is the built image: the root filesystem and its config.
type Image struct {
	State  llb.State
	Config *dockerspec.DockerOCIImage
	// Names are the progress names of the layers, bottom to top.
	Names []string
}

// rootOwner makes copied files root's, whoever owned them in the stage.
var rootOwner = &llb.ChownOpt{User: &llb.UserOpt{UID: 0}, Group: &llb.UserOpt{UID: 0}}

// nixTime is the mtime Nix gives every store file; used when no epoch is set
// so that layers never depend on when they were made.
var nixTime = time.Unix(1, 0).UTC()

// NewImage returns the image for a spec whose closure was assigned to layers.
func NewImage(in ImageInput) (*Image, error) {
	s := in.Spec
	if s == nil {
		return nil, fmt.Errorf("image: no spec")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := checkLayers(s, in.Layers); err != nil {
		return nil, err
	}
	t := nixTime
	if in.Epoch != nil {
		t = in.Epoch.UTC()
	}
	storeDir := in.StoreDir
	if storeDir == "" {
		return nil, fmt.Errorf("image: no store directory in the builder stage")
	}

	sizes := make(map[string]int64, len(s.Closure))
	for _, p := range s.Closure {
		sizes[p.Path] = p.NarSize
	}
	skeleton, skelCount := skeletonActions(s.Skeleton, t)
	total := len(in.Layers)
	if skelCount > 0 {
		total++
	}
	// The directories above the store, to stamp each layer's with t.
	stamp := llb.Scratch().File(llb.Mkdir(imagespec.StoreDir, 0o755, llb.WithParents(true), llb.WithCreatedTime(t), llb.WithUIDGID(0, 0)),
		llb.WithCustomName("/nix/store, to stamp each layer's"))
	states := make([]llb.State, 0, total)
	names := make([]string, 0, total)
	history := make([]ocispecs.History, 0, total)
	for i, l := range in.Layers {
		// One copy per store path. Each copy leaves the time of its own
		// making on /nix/store (a new entry changes a directory's mtime), so
		// the last action copies an empty /nix/store over it: a copy stamps
		// existing directories it walks with the copy's time. (A single copy
		// with include patterns would avoid that, but BuildKit then walks the
		// whole store for every layer.)
		var fa actions
		for _, p := range l.Paths {
			base := path.Base(p)
			fa.copy(in.Store, path.Join(storeDir, base), path.Join(imagespec.StoreDir, base), &llb.CopyInfo{
				CreateDestPath: true,
				CreatedTime:    &t,
				ChownOpt:       rootOwner,
			})
		}
		fa.copy(stamp, "/", "/", &llb.CopyInfo{CopyDirContentsOnly: true, CreatedTime: &t, ChownOpt: rootOwner})
		name := fmt.Sprintf("layer %d/%d: %s", i+1, total, summary(l, sizes))
		states = append(states, llb.Scratch().File(fa.fa, fileOpts(name, in.IgnoreCache)...))
		names = append(names, name)
		history = append(history, ocispecs.History{
			Created:   &t,
			CreatedBy: "nixos2docker: " + strings.Join(l.Paths, " "),
			Comment:   fmt.Sprintf("store paths, layer %d/%d, %s", i+1, total, layers.HumanSize(l.Size)),
		})
	}
	if skelCount > 0 {
		name := fmt.Sprintf("layer %d/%d: root skeleton (%d entries)", total, total, skelCount)
		// Made aside, then copied in one action that stamps every entry,
		// directories after their contents: the layer does not depend on
		// when it was made.
		made := llb.Scratch().File(skeleton, fileOpts("root skeleton entries", in.IgnoreCache)...)
		states = append(states, llb.Scratch().File(llb.Copy(made, "/", "/", &llb.CopyInfo{
			CopyDirContentsOnly: true,
			CreatedTime:         &t,
			ChownOpt:            rootOwner,
		}), fileOpts(name, in.IgnoreCache)...))
		names = append(names, name)
		history = append(history, ocispecs.History{
			Created:   &t,
			CreatedBy: "nixos2docker: root skeleton: " + strings.Join(imagespec.EntryPaths(s.Skeleton), " "),
			Comment:   "root filesystem outside the store",
		})
	}
	st := llb.Merge(states, llb.WithCustomNamef("merge %d layers", len(states)))

	p := platforms.Normalize(in.Platform)
	cfg := s.Config
	cfg.Labels = mergeLabels(s.Config.Labels, in.Labels)
	img := &dockerspec.DockerOCIImage{
		Image: ocispecs.Image{
			Created:  &t,
			Platform: p,
			RootFS:   ocispecs.RootFS{Type: "layers"},
			History:  history,
		},
		Config: cfg,
	}
	return &Image{State: st, Config: img, Names: names}, nil
}

// fileOpts names a file op and, for --no-cache, makes BuildKit redo it.
func fileOpts(name string, ignoreCache bool) []llb.ConstraintsOpt {
	opts := []llb.ConstraintsOpt{llb.WithCustomName(name)}
	if ignoreCache {
		opts = append(opts, llb.IgnoreCache)
	}
	return opts
}

// checkLayers makes sure every closure path is in exactly one layer and the
// layer count, skeleton included, is within the spec's maxLayers.
func checkLayers(s *imagespec.Spec, layers []Layer) error {
	if len(layers) == 0 {
		return fmt.Errorf("image: no layers for the closure")
	}
	if len(layers)+1 > s.MaxLayers {
		return fmt.Errorf("image: %d store-path layers plus the skeleton exceed maxLayers %d", len(layers), s.MaxLayers)
	}
	in := make(map[string]bool, len(s.Closure))
	for _, p := range s.Closure {
		in[p.Path] = true
	}
	seen := make(map[string]int, len(s.Closure))
	for i, l := range layers {
		if len(l.Paths) == 0 {
			return fmt.Errorf("image: layer %d is empty", i+1)
		}
		for _, p := range l.Paths {
			if !in[p] {
				return fmt.Errorf("image: layer %d holds %s, which is not in the closure", i+1, p)
			}
			if j, dup := seen[p]; dup {
				return fmt.Errorf("image: %s is in layers %d and %d", p, j+1, i+1)
			}
			seen[p] = i
		}
	}
	for _, p := range s.Closure {
		if _, ok := seen[p.Path]; !ok {
			return fmt.Errorf("image: %s is in no layer", p.Path)
		}
	}
	return nil
}

// skeletonActions creates the skeleton entries, parents first. Modes with
// setuid/setgid/sticky bits are applied through a copy: BuildKit's mkdir and
// mkfile keep only the permission bits.
func skeletonActions(entries []imagespec.Entry, t time.Time) (*llb.FileAction, int) {
	sorted := append([]imagespec.Entry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var fa actions
	dirs := map[string]bool{"/": true}
	parent := func(p string) {
		if d := path.Dir(p); !dirs[d] {
			fa.mkdir(d, 0o755, t)
			for ; !dirs[d]; d = path.Dir(d) {
				dirs[d] = true
			}
		}
	}
	for _, e := range sorted {
		mode := e.FileMode()
		switch e.Type {
		case imagespec.TypeDir:
			parent(e.Path)
			dirs[e.Path] = true
			if mode&^0o777 != 0 {
				src := llb.Scratch().File(llb.Mkdir("/d", 0o755, llb.WithCreatedTime(t), llb.WithUIDGID(0, 0)),
					llb.WithCustomName("root skeleton: a directory to copy with mode "+e.Mode))
				fa.copy(src, "/d", e.Path, &llb.CopyInfo{
					CreateDestPath: true,
					CreatedTime:    &t,
					Mode:           &llb.ChmodOpt{ModeStr: fmt.Sprintf("%04o", mode)},
				})
				continue
			}
			fa.mkdir(e.Path, os.FileMode(mode), t)
		case imagespec.TypeFile:
			parent(e.Path)
			if mode&^0o777 != 0 {
				src := llb.Scratch().File(llb.Mkfile("/f", 0o644, []byte(e.Content), llb.WithCreatedTime(t), llb.WithUIDGID(0, 0)),
					llb.WithCustomName("root skeleton: "+e.Path))
				fa.copy(src, "/f", e.Path, &llb.CopyInfo{
					CreatedTime: &t,
					Mode:        &llb.ChmodOpt{ModeStr: fmt.Sprintf("%04o", mode)},
				})
				continue
			}
			fa.mkfile(e.Path, os.FileMode(mode), []byte(e.Content), t)
		case imagespec.TypeSymlink:
			parent(e.Path)
			fa.symlink(e.Target, e.Path, t)
		}
	}
	return fa.fa, len(sorted)
}

func mergeLabels(base, extra map[string]string) map[string]string {
	if len(base) == 0 && len(extra) == 0 {
		return base
	}
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// summary names a layer by its biggest store paths, e.g.
// "glibc-2.42, libidn2-2.3.8, … (31 MiB)".
func summary(l Layer, sizes map[string]int64) string {
	return layers.Describe(l.Paths, sizes) + " (" + layers.HumanSize(l.Size) + ")"
}
