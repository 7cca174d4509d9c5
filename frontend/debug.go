package frontend

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerui"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/apicaps"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/imagespec"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// DebugLLB is the `llb` command of the frontend binary: without a daemon, it
// prints the LLB of the builder stage for a file (one JSON op per line, as
// `buildctl debug dump-llb` prints them) and, given a spec the stage would
// have written, the LLB of the image and its config. Every line is a JSON
// object; a {"stage": …} line starts each definition.
//
// Options are given as the frontend receives them: --opt build-arg:K=V,
// --opt target=NAME, --opt platform=linux/amd64,linux/arm64, --opt label:K=V.
// With --opt build-arg:NIXOS2DOCKER_STORE=save it prints the store snapshot's
// LLB instead ({"stage": "save"}).
func DebugLLB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return debugLLB(ctx, args, stdout, stderr, nil)
}

// debugLLB is DebugLLB with the module files given (nil: the embedded ones).
func debugLLB(ctx context.Context, args []string, stdout, stderr io.Writer, module iofs.FS) error {
	fs := flag.NewFlagSet("llb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the nixos2docker file")
	specFile := fs.String("spec", "", "an image spec (spec.json) to build the image from")
	noMerge := fs.Bool("no-mergeop", false, "render the image for a builder without MergeOp (Docker's classic image store)")
	buildPlatform := fs.String("build-platform", platforms.Format(platforms.DefaultSpec()), "the builder's native platform (other target platforms are emulated there)")
	var opts optList
	fs.Var(&opts, "opt", "a frontend option key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || fs.NArg() != 0 {
		return errors.New("usage: nixos2docker-frontend llb -f FILE [--opt key=value]... [--build-platform P] [--spec SPEC.json [--no-mergeop]]")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	// The options go through dockerui, as the gateway's do.
	attrs, err := opts.attrs()
	if err != nil {
		return err
	}
	caps := pb.Caps.CapSet(pb.Caps.All())
	if *noMerge {
		caps = capsWithout("--no-mergeop", pb.CapMergeOp)
	}
	native, err := platforms.Parse(*buildPlatform)
	if err != nil {
		return fmt.Errorf("-build-platform: %w", err)
	}
	bc, err := dockerui.NewClient(optionsOnly{opts: attrs, caps: caps, native: platforms.Normalize(native)})
	if err != nil {
		return fmt.Errorf("--opt: %w", err)
	}
	o, err := ParseOptions(bc.BuildArgs)
	if err != nil {
		return err
	}
	f, err := ParseFile(*file, data, o)
	if err != nil {
		return err
	}
	var spec *imagespec.Spec
	if *specFile != "" {
		sd, err := os.ReadFile(*specFile)
		if err != nil {
			return err
		}
		if spec, err = imagespec.Parse(sd); err != nil {
			return fmt.Errorf("%s: %w", *specFile, err)
		}
	}
	// The layering the gateway would choose on a builder with these
	// capabilities: this BuildKit's, or those without MergeOp.
	layering, _, err := chooseLayering(ctx, bc.BuildOpts().LLBCaps)
	if err != nil {
		return err
	}
	targetPlatforms := bc.TargetPlatforms
	if len(targetPlatforms) == 0 {
		targetPlatforms = []ocispecs.Platform{platforms.DefaultSpec()}
	}

	enc := json.NewEncoder(stdout)
	for _, p := range targetPlatforms {
		p = platforms.Normalize(p)
		id := platforms.FormatAll(p)
		req := newRequest(bc, *file, f, o, p, *dockerui.DefaultMainContext(llb.LocalUniqueID("nixos2docker-llb")))
		req.Module, req.Layering = module, layering
		if o.SaveStore {
			// The store snapshot; its nonce, a time in a build, is fixed here.
			st, err := NewSaveStage(req, "llb")
			if err != nil {
				return err
			}
			if err := enc.Encode(map[string]string{"stage": "save", "platform": id}); err != nil {
				return err
			}
			if err := nix2llb.Dump(ctx, stdout, st, platformOpt(p)); err != nil {
				return err
			}
			continue
		}
		stage, err := NewStage(req)
		if err != nil {
			return err
		}
		if err := enc.Encode(map[string]string{"stage": "builder", "platform": id, "system": stage.Plan.System}); err != nil {
			return err
		}
		if err := nix2llb.Dump(ctx, stdout, stage.State, platformOpt(p)); err != nil {
			return err
		}
		if spec == nil {
			continue
		}
		img, err := stage.Image(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", *specFile, err)
		}
		if err := enc.Encode(map[string]string{"stage": "image", "platform": id, "layering": layering.String()}); err != nil {
			return err
		}
		if err := nix2llb.Dump(ctx, stdout, img.State, platformOpt(p)); err != nil {
			return err
		}
		if err := enc.Encode(map[string]any{"stage": "config", "platform": id, "config": img.Config}); err != nil {
			return err
		}
	}
	return nil
}

type optList []string

func (l *optList) String() string     { return strings.Join(*l, ",") }
func (l *optList) Set(v string) error { *l = append(*l, v); return nil }

// attrs are the --opt key=value pairs as the gateway passes frontend options;
// only those the debug command documents are taken, so a typo is an error
// rather than silently ignored.
func (l optList) attrs() (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range l {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok && k != "no-cache":
			return nil, fmt.Errorf("--opt %q: want key=value", kv)
		case strings.HasPrefix(k, "build-arg:"), strings.HasPrefix(k, "label:"), k == "target", k == "platform", k == "no-cache":
			m[k] = v
		default:
			return nil, fmt.Errorf("--opt %q: unknown option (build-arg:K, label:K, target, platform, no-cache)", k)
		}
	}
	return m, nil
}

// optionsOnly is a gateway client that only has options and capabilities:
// all dockerui.NewClient reads. Any other call would be a bug of the debug
// command (nil interface).
type optionsOnly struct {
	gwclient.Client
	opts map[string]string
	caps apicaps.CapSet
	// native is the worker's own platform, as a gateway reports it first.
	native ocispecs.Platform
}

func (c optionsOnly) BuildOpts() gwclient.BuildOpts {
	return gwclient.BuildOpts{Opts: c.opts, Product: "nixos2docker-llb", LLBCaps: c.caps,
		Workers: []gwclient.WorkerInfo{{ID: "llb", Platforms: []ocispecs.Platform{c.native}}}}
}

func platformOpt(p ocispecs.Platform) llb.ConstraintsOpt { return llb.Platform(p) }
