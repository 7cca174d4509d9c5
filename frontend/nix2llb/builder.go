// Package nix2llb turns a nixos2docker build into BuildKit LLB: the Nix
// builder stage that evaluates and builds the image spec, and, from an image
// model, the image itself (one step per layer of store paths, plus the
// root-filesystem skeleton, merged or stacked: layering.go) with its image
// config.
//
// The closure stays in the builder's Nix store, a BuildKit cache mount: each
// layer is a run step that mounts that store read-only and copies its own
// paths into its output. A store path's name fixes its content, so a layer
// step is fully described by its sorted store paths: BuildKit's cache key
// for it is that list (with the builder image), and an unchanged layer is a
// cache hit without a byte of it being read. Only the layers holding a new
// path run; the Nix step copies nothing.
//
// It knows nothing about files or options: the frontend parses those and
// hands over plain values, so the same code serves the gateway frontend, the
// daemon-free `llb` debug command and the tests.
package nix2llb

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	"github.com/nixos2docker/nixos2docker/nixeval"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// NixDir is where the builder stage's persistent Nix store (a cache mount)
// lives. Its contents are not part of the stage's output: the layer steps
// mount it themselves.
const NixDir = "/nix"

// Mount is a read-only input of the builder step.
type Mount struct {
	Dest  string
	State llb.State
}

// Builder describes the builder stage.
type Builder struct {
	// Image is the builder image reference (Nix on PATH).
	Image string
	// Platform is the target platform: the stage runs on it, so Nix builds
	// natively (or under emulation), never cross.
	Platform ocispecs.Platform
	// System is the Nix system of Platform; it names the store cache.
	System string
	// Invocation is what the step runs (nixeval's): its files, command, the
	// context and output directories, whether it needs the network, and the
	// optional secrets it may read (mounted into this step only: secret
	// mounts are tmpfs files that never reach a snapshot or a cache key).
	Invocation *nixeval.Invocation
	// Context is the build context, mounted read-only at Invocation.ContextDir.
	Context llb.State
	// NetworkMode, when not UNSET, is a network mode forced by the client.
	NetworkMode pb.NetMode
	// Mounts are further read-only inputs (named contexts), by destination.
	Mounts []Mount
	// StoreFrom, if not nil, is a store snapshot (SaveStage's output, from
	// an earlier build, e.g. on another machine) mounted read-only at
	// Invocation.StoreFromDir: the step restores it into a fresh store.
	StoreFrom *llb.State
	// Constraints are added to the Nix step, e.g. the source location of
	// the user's file so a failing step points at it.
	Constraints []llb.ConstraintsOpt
	// RunOptions are the client's sandbox settings (--add-host, hostname,
	// cgroup parent, ulimits), passed through to the Nix step.
	RunOptions []llb.RunOption
	// CacheNamespace prefixes the cache mount id (BUILDKIT_CACHE_MOUNT_NS).
	CacheNamespace string
	// IgnoreCache re-runs the step even when BuildKit has it cached.
	IgnoreCache bool
	// Description names the step in progress output.
	Description  string
	ResolveMode  llb.ResolveMode
	MetaResolver llb.ImageMetaResolver
}

// CacheID is the id of the Nix store cache mount for a Nix system.
func CacheID(namespace, system string) string {
	id := "nixos2docker-nix-" + system
	if namespace != "" {
		id = namespace + "/" + id
	}
	return id
}

// filesTime is the mtime of the generated files: fixed, so the invocation
// files' snapshot never depends on when it was made.
var filesTime = time.Unix(1, 0).UTC()

// Stage is the builder stage and what the layer steps share with it.
type Stage struct {
	// State is the root filesystem after the Nix step: Invocation.OutDir
	// holds the result files (nixeval.StatusFile, SpecFile, ClosureFile).
	State llb.State
	// Tools is the builder image, which the layer steps run in.
	Tools llb.State
	// Store mounts the stage's Nix store cache read-only on NixDir.
	Store llb.RunOption
}

// storeSharing lets the Nix steps of concurrent builds and the layer steps
// use the store cache at once. Nix itself serialises what must be (each
// path is built under a lock, the database has its own), as it does for the
// processes of a nix-daemon. With "locked" a layer step would wait for any
// build's Nix step, and BuildKit gives a "shared" or "private" user of a
// cache that a "locked" one holds a fresh, empty copy instead of waiting.
const storeSharing = llb.CacheMountShared

// BuilderStage returns the builder stage: the builder image with the Nix step
// run on it, and the builder image and store cache for the layer steps.
func BuilderStage(b Builder) (*Stage, error) {
	inv := b.Invocation
	if inv == nil {
		return nil, fmt.Errorf("builder stage: no invocation")
	}
	if b.Image == "" {
		return nil, fmt.Errorf("builder stage: no builder image")
	}
	if len(inv.Args) == 0 {
		return nil, fmt.Errorf("builder stage: empty command")
	}
	for _, d := range []string{inv.Dir, inv.ContextDir, inv.OutDir} {
		if !path.IsAbs(d) {
			return nil, fmt.Errorf("builder stage: %q is not an absolute path", d)
		}
	}
	img := b.image()

	files, err := invocationFiles(inv.Files)
	if err != nil {
		return nil, err
	}

	desc := b.Description
	if desc == "" {
		desc = "nix: build the docker image spec"
	}
	runOpts := []llb.RunOption{
		llb.Args(inv.Args),
		llb.WithCustomName(desc),
		llb.AddMount(inv.Dir, files, llb.Readonly),
		llb.AddMount(inv.ContextDir, b.Context, llb.Readonly),
		b.storeCache(img),
		llb.Dir(inv.Dir),
	}
	for _, e := range inv.Env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("builder stage: environment entry %q is not KEY=VALUE", e)
		}
		runOpts = append(runOpts, llb.AddEnv(k, v))
	}
	for _, m := range b.Mounts {
		runOpts = append(runOpts, llb.AddMount(m.Dest, m.State, llb.Readonly))
	}
	if b.StoreFrom != nil {
		if !path.IsAbs(inv.StoreFromDir) {
			return nil, fmt.Errorf("builder stage: a store snapshot but no absolute directory to mount it at (%q)", inv.StoreFromDir)
		}
		runOpts = append(runOpts, llb.AddMount(inv.StoreFromDir, *b.StoreFrom, llb.Readonly),
			llb.AddEnv("NIXOS2DOCKER_STORE_FROM", inv.StoreFromDir))
	}
	for _, c := range b.Constraints {
		runOpts = append(runOpts, c)
	}
	runOpts = append(runOpts, b.RunOptions...)
	// Secrets are root's alone (0400): the derivations Nix builds run as
	// unprivileged build users. What the step makes from them goes to a
	// tmpfs, so it never reaches the stage's snapshot or a cache export.
	for _, s := range inv.Secrets {
		runOpts = append(runOpts, llb.AddSecret(s.Path, llb.SecretID(s.ID), llb.SecretOptional, llb.SecretFileOpt(0, 0, 0o400)))
	}
	if inv.RunDir != "" {
		runOpts = append(runOpts, llb.AddMount(inv.RunDir, llb.Scratch(), llb.Tmpfs()))
	}
	switch {
	case b.NetworkMode != pb.NetMode_UNSET:
		runOpts = append(runOpts, llb.Network(b.NetworkMode))
	case !inv.Network:
		runOpts = append(runOpts, llb.Network(pb.NetMode_NONE))
	}
	if b.IgnoreCache {
		runOpts = append(runOpts, llb.IgnoreCache)
	}
	// The same seed and id: BuildKit keys a cache by both, so the layer
	// steps see the store the Nix step built into.
	store := b.storeCache(img, llb.Readonly)
	return &Stage{State: img.Run(runOpts...).Root(), Tools: img, Store: store}, nil
}

// image is the builder image on the target platform.
func (b Builder) image() llb.State {
	imgOpts := []llb.ImageOption{
		llb.Platform(b.Platform),
		llb.WithCustomName("nix: builder image " + b.Image),
	}
	if b.ResolveMode != llb.ResolveModeDefault {
		imgOpts = append(imgOpts, b.ResolveMode)
	}
	if b.MetaResolver != nil {
		// Apply the image's ENV (PATH, NIX_SSL_CERT_FILE, …) to the step.
		imgOpts = append(imgOpts, llb.WithMetaResolver(b.MetaResolver))
	}
	return llb.Image(b.Image, imgOpts...)
}

// storeCache mounts the persistent Nix store, a cache mount on NixDir, with
// opts (llb.Readonly for the layer steps). It starts as a copy of the image's
// own /nix (the official nixos/nix image keeps Nix itself there; a
// Debian-based one has none, hence the mkdir). BuildKit keys a cache by its
// id and its seed, and gives a user with another sharing mode a copy, so
// every step that mounts it (the Nix step, the layer steps, the store
// snapshot) makes it here, the same way.
func (b Builder) storeCache(img llb.State, opts ...llb.MountOption) llb.RunOption {
	seed := img.File(llb.Mkdir(NixDir, 0o755, llb.WithParents(true), llb.WithCreatedTime(filesTime)),
		llb.WithCustomName("nix: prepare the store cache"))
	opts = append([]llb.MountOption{llb.SourcePath(NixDir)}, opts...)
	return llb.AddMount(NixDir, seed, append(opts, llb.AsPersistentCacheDir(CacheID(b.CacheNamespace, b.System), storeSharing))...)
}

// invocationFiles writes the generated files into a scratch state, sorted so
// the same files always give the same LLB.
func invocationFiles(files map[string][]byte) (llb.State, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		if n == "" || path.IsAbs(n) || path.Clean(n) != n || strings.HasPrefix(n, "../") || n == ".." || n == "." {
			return llb.State{}, fmt.Errorf("builder stage: invocation file name %q is not a clean relative path", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return llb.Scratch(), nil
	}
	var fa actions
	dirs := map[string]bool{"/": true}
	for _, n := range names {
		p := "/" + n
		if d := path.Dir(p); !dirs[d] {
			fa.mkdir(d, 0o755, filesTime)
			for x := d; !dirs[x]; x = path.Dir(x) {
				dirs[x] = true
			}
		}
		fa.mkfile(p, 0o644, files[n], filesTime)
	}
	return llb.Scratch().File(fa.fa, llb.WithCustomName("nix: write the nixos2docker expression and module")), nil
}

// actions chains file actions into one FileOp.
type actions struct {
	fa *llb.FileAction
	n  int
}

func (a *actions) add(first func() *llb.FileAction, next func(*llb.FileAction) *llb.FileAction) {
	if a.fa == nil {
		a.fa = first()
	} else {
		a.fa = next(a.fa)
	}
	a.n++
}

func (a *actions) mkdir(p string, mode os.FileMode, t time.Time) {
	opts := []llb.MkdirOption{llb.WithParents(true), llb.WithCreatedTime(t), llb.WithUIDGID(0, 0)}
	a.add(func() *llb.FileAction { return llb.Mkdir(p, mode, opts...) },
		func(fa *llb.FileAction) *llb.FileAction { return fa.Mkdir(p, mode, opts...) })
}

func (a *actions) mkfile(p string, mode os.FileMode, data []byte, t time.Time) {
	opts := []llb.MkfileOption{llb.WithCreatedTime(t), llb.WithUIDGID(0, 0)}
	a.add(func() *llb.FileAction { return llb.Mkfile(p, mode, data, opts...) },
		func(fa *llb.FileAction) *llb.FileAction { return fa.Mkfile(p, mode, data, opts...) })
}

func (a *actions) symlink(target, p string, t time.Time) {
	opts := []llb.SymlinkOption{llb.WithCreatedTime(t), llb.WithUIDGID(0, 0)}
	a.add(func() *llb.FileAction { return llb.Symlink(target, p, opts...) },
		func(fa *llb.FileAction) *llb.FileAction { return fa.Symlink(target, p, opts...) })
}

func (a *actions) copy(src llb.State, from, to string, info *llb.CopyInfo) {
	a.add(func() *llb.FileAction { return llb.Copy(src, from, to, info) },
		func(fa *llb.FileAction) *llb.FileAction { return fa.Copy(src, from, to, info) })
}
