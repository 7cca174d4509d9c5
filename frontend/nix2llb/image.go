package nix2llb

import (
	"fmt"
	"os"
	"path"
	"time"

	"github.com/moby/buildkit/client/llb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
)

// ImageInput is what the image is rendered from.
type ImageInput struct {
	// Model is the image: layers, skeleton, config, times (imagemodel).
	Model *imagemodel.Model
	// Store is the builder stage; StoreDir is where the closure lies in its
	// root filesystem (OutDir/nix/store).
	Store    llb.State
	StoreDir string
	// IgnoreCache re-makes every layer (--no-cache).
	IgnoreCache bool
	// Layering is how the layers are combined (default Merged).
	Layering Layering
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

// NewImage renders an image model as one file op per layer, combined by the
// input's Layering.
func NewImage(in ImageInput) (*Image, error) {
	m := in.Model
	if m == nil {
		return nil, fmt.Errorf("image: no model")
	}
	if in.StoreDir == "" {
		return nil, fmt.Errorf("image: no store directory in the builder stage")
	}
	storeTime, created := m.StoreTime, m.Created
	// The directories above the store, to stamp each layer's with the store's time.
	stamp := llb.Scratch().File(llb.Mkdir(imagespec.StoreDir, 0o755, llb.WithParents(true), llb.WithCreatedTime(storeTime), llb.WithUIDGID(0, 0)),
		llb.WithCustomName("/nix/store, to stamp each layer's"))
	steps := make([]LayerStep, 0, len(m.Layers))
	names := make([]string, 0, len(m.Layers))
	for _, l := range m.Layers {
		var fa actions
		if l.Skeleton {
			// Made aside, then copied in one action that stamps every entry,
			// directories after their contents: the layer does not depend on
			// when it was made.
			made := llb.Scratch().File(skeletonActions(m.Skeleton, created), fileOpts("root skeleton entries", in.IgnoreCache)...)
			fa.copy(made, "/", "/", &llb.CopyInfo{CopyDirContentsOnly: true, CreatedTime: &created, ChownOpt: rootOwner})
		} else {
			// One copy per store path, keeping the store's time.
			for _, p := range l.Paths {
				base := path.Base(p)
				fa.copy(in.Store, path.Join(in.StoreDir, base), path.Join(imagespec.StoreDir, base), &llb.CopyInfo{
					CreateDestPath: true,
					CreatedTime:    &storeTime,
					ChownOpt:       rootOwner,
				})
			}
		}
		// Each copy leaves the time of its own making on /nix/store (a new
		// entry changes a directory's mtime), so the last action copies an
		// empty /nix/store over it: a copy stamps existing directories it
		// walks with the copy's time. (A single copy with include patterns
		// would avoid that, but BuildKit then walks the whole store for
		// every layer.)
		fa.copy(stamp, "/", "/", &llb.CopyInfo{CopyDirContentsOnly: true, CreatedTime: &storeTime, ChownOpt: rootOwner})
		action, opts := fa.fa, fileOpts(l.Name, in.IgnoreCache)
		steps = append(steps, func(base llb.State) llb.State { return base.File(action, opts...) })
		names = append(names, l.Name)
	}
	cfg := m.Config
	return &Image{State: Combine(steps, in.Layering), Config: &cfg, Names: names}, nil
}

// fileOpts names a file op and, for --no-cache, makes BuildKit redo it.
func fileOpts(name string, ignoreCache bool) []llb.ConstraintsOpt {
	opts := []llb.ConstraintsOpt{llb.WithCustomName(name)}
	if ignoreCache {
		opts = append(opts, llb.IgnoreCache)
	}
	return opts
}

// skeletonActions creates the completed skeleton's entries, in its order
// (parents first). Modes with setuid/setgid/sticky bits are applied through a
// copy: BuildKit's mkdir and mkfile keep only the permission bits.
func skeletonActions(entries []imagespec.Entry, t time.Time) *llb.FileAction {
	var fa actions
	for _, e := range entries {
		mode := e.FileMode()
		switch e.Type {
		case imagespec.TypeDir:
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
			fa.symlink(e.Target, e.Path, t)
		}
	}
	return fa.fa
}
