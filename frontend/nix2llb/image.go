package nix2llb

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/moby/buildkit/client/llb"
	gatewayapi "github.com/moby/buildkit/frontend/gateway/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
)

// ImageInput is what the image is rendered from.
type ImageInput struct {
	// Model is the image: layers, skeleton, config, times (imagemodel).
	Model *imagemodel.Model
	// Tools is the image the layer steps run in: a POSIX sh and GNU
	// coreutils and findutils on its PATH; the builder image.
	Tools llb.State
	// Store makes the Nix store readable at /nix/store in a layer step: the
	// builder stage's store cache (Stage.Store), or a directory in tests.
	Store llb.RunOption
	// IgnoreCache re-makes every layer (--no-cache).
	IgnoreCache bool
	// Layering is how the layers are combined (default Merged).
	Layering Layering
}

// LayerDir is where a layer step writes its layer: its output mount, the
// layer's base (empty, or the layer below when stacked) mounted there.
const LayerDir = "/nixos2docker-layer"

// A layer step whose paths are not in the store cache (pruned while the Nix
// step stayed cached) says so and exits with MissingExit; BuildKit's error
// carries the code (IsMissing), and the frontend then runs the Nix step again.
const MissingExit = 3

// IsMissing says whether err is a layer step's exit for paths missing from
// the store cache: BuildKit's typed exit error, kept through the gateway.
func IsMissing(err error) bool {
	var exit *gatewayapi.ExitError
	return errors.As(err, &exit) && exit.ExitCode == MissingExit
}

// layerScript copies the store paths it is given into the layer with their
// modes, not following symbolic links, hard links (nix-store --optimise) as
// separate files as the archive face writes them, everything root's and of
// the store's time (Nix gives every store file mtime 1 already), /nix and
// /nix/store included. It touches only what it copies: on a stacked base,
// the layers below stay as they are.
//
//	sh -c layerScript nixos2docker-layer LAYERDIR STORETIME PATH…
var layerScript = `set -eu
out=$1 t=$2
shift 2
missing=
for p in "$@"; do
	[ -e "$p" ] || [ -L "$p" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "nixos2docker: not in the Nix store cache (pruned while the Nix step stayed cached; the frontend runs it again):$missing" >&2
	exit ` + strconv.Itoa(MissingExit) + `
fi
echo "nixos2docker: copying $# store paths:" "$@" >&2
mkdir -p "$out/nix/store"
cp -RPp -- "$@" "$out/nix/store/"
cd "$out/nix/store"
for p; do
	set -- "$@" "${p##*/}"
	shift
done
chown -hR 0:0 -- "$@"
chown -h 0:0 . ..
chmod 0755 . ..
find "$@" -depth -exec touch -h -d "@$t" {} +
touch -h -d "@$t" . ..
`

// BuildKit empties a cache mount for every step that has it and ignores the
// cache (--no-cache), when it loads the step's definition: the layer steps,
// solved after the Nix step filled the store, would find it empty. So with
// IgnoreCache they are made new by a random value in their environment
// instead, which reaches no layer: only the skeleton's file ops carry the
// flag.
func noCacheEnv() (llb.RunOption, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return llb.AddEnv("NIXOS2DOCKER_NO_CACHE", hex.EncodeToString(nonce[:])), nil
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

// NewImage renders an image model as one step per layer, combined by the
// input's Layering: a run step per store layer, which copies the layer's
// paths from the store (see the package doc), and a file op for the
// skeleton.
func NewImage(in ImageInput) (*Image, error) {
	m := in.Model
	if m == nil {
		return nil, fmt.Errorf("image: no model")
	}
	if in.Store == nil {
		return nil, fmt.Errorf("image: no store to copy the layers from")
	}
	storeTime, created := m.StoreTime, m.Created
	steps := make([]LayerStep, 0, len(m.Layers))
	names := make([]string, 0, len(m.Layers))
	for _, l := range m.Layers {
		names = append(names, l.Name)
		if l.Skeleton {
			steps = append(steps, skeletonStep(m, storeTime, created, l.Name, in.IgnoreCache))
			continue
		}
		// The step's definition is its sorted store paths (with the tools
		// image): BuildKit finds an unchanged layer in its cache by it,
		// without reading the store.
		args := append([]string{"/bin/sh", "-c", layerScript, "nixos2docker-layer", LayerDir, strconv.FormatInt(storeTime.Unix(), 10)}, l.Paths...)
		opts := []llb.RunOption{
			llb.Args(args),
			llb.WithCustomName(l.Name),
			llb.Network(llb.NetModeNone),
			llb.ReadonlyRootFS(),
			in.Store,
		}
		if in.IgnoreCache {
			nonce, err := noCacheEnv()
			if err != nil {
				return nil, err
			}
			opts = append(opts, nonce)
		}
		tools := in.Tools
		steps = append(steps, func(base llb.State) llb.State { return tools.Run(opts...).AddMount(LayerDir, base) })
	}
	cfg := m.Config
	return &Image{State: Combine(steps, in.Layering), Config: &cfg, Names: names}, nil
}

// skeletonStep makes the root skeleton aside, then copies it in one action
// that stamps every entry, directories after their contents, so the layer
// does not depend on when it was made; /nix/store keeps the store's time.
func skeletonStep(m *imagemodel.Model, storeTime, created time.Time, name string, ignoreCache bool) LayerStep {
	var fa actions
	made := llb.Scratch().File(skeletonActions(m.Skeleton, created), fileOpts("root skeleton entries", ignoreCache)...)
	fa.copy(made, "/", "/", &llb.CopyInfo{CopyDirContentsOnly: true, CreatedTime: &created, ChownOpt: rootOwner})
	// The copy leaves the time of its own making on /nix/store (created as
	// a parent), so the last action copies an empty /nix/store over it: a
	// copy stamps existing directories it walks with the copy's time.
	stamp := llb.Scratch().File(llb.Mkdir(imagespec.StoreDir, 0o755, llb.WithParents(true), llb.WithCreatedTime(storeTime), llb.WithUIDGID(0, 0)),
		llb.WithCustomName("/nix/store, to stamp the skeleton's"))
	fa.copy(stamp, "/", "/", &llb.CopyInfo{CopyDirContentsOnly: true, CreatedTime: &storeTime, ChownOpt: rootOwner})
	action, opts := fa.fa, fileOpts(name, ignoreCache)
	return func(base llb.State) llb.State { return base.File(action, opts...) }
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
