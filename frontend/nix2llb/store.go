package nix2llb

import (
	"fmt"
	"path"
	"strings"

	"github.com/moby/buildkit/client/llb"
)

// SaveStage returns a store snapshot: the builder's persistent Nix store
// (the same cache mount BuilderStage uses: b's image, system and cache
// namespace name it) copied into a state of its own, /nix at its root. A
// cache mount is never part of BuildKit's exported cache, so this is how the
// store leaves a builder: exported as an image or a directory and mounted
// into a later build's Nix step as Builder.StoreFrom, it restores a fresh
// builder's store (a CI runner's), which then builds or fetches only what
// changed since.
//
// b.Invocation must be nixeval's Save. The step never comes from BuildKit's
// cache: the store changes under a cache mount without the step's key
// changing, so a cached snapshot would be a stale one. (IgnoreCache would
// also empty the cache mount, hence a per-build nonce instead.)
func SaveStage(b Builder, nonce string) (llb.State, error) {
	inv := b.Invocation
	if inv == nil {
		return llb.State{}, fmt.Errorf("store snapshot: no invocation")
	}
	if b.Image == "" {
		return llb.State{}, fmt.Errorf("store snapshot: no builder image")
	}
	if len(inv.Args) == 0 || !path.IsAbs(inv.Dir) || !path.IsAbs(inv.OutDir) {
		return llb.State{}, fmt.Errorf("store snapshot: incomplete invocation")
	}
	files, err := invocationFiles(inv.Files)
	if err != nil {
		return llb.State{}, err
	}
	img := b.image()
	desc := b.Description
	if desc == "" {
		desc = "nix: save the store (" + b.System + ")"
	}
	runOpts := []llb.RunOption{
		llb.Args(inv.Args),
		llb.WithCustomName(desc),
		llb.AddMount(inv.Dir, files, llb.Readonly),
		b.storeCache(img),
		llb.Dir(inv.Dir),
		llb.Network(llb.NetModeNone),
		llb.AddEnv("NIXOS2DOCKER_SAVE_NONCE", nonce),
	}
	for _, e := range inv.Env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			return llb.State{}, fmt.Errorf("store snapshot: environment entry %q is not KEY=VALUE", e)
		}
		runOpts = append(runOpts, llb.AddEnv(k, v))
	}
	runOpts = append(runOpts, b.RunOptions...)
	if inv.RunDir != "" {
		runOpts = append(runOpts, llb.AddMount(inv.RunDir, llb.Scratch(), llb.Tmpfs()))
	}
	run := img.Run(runOpts...)
	return run.AddMount(inv.OutDir, llb.Scratch()), nil
}
