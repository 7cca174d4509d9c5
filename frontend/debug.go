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
func DebugLLB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return debugLLB(ctx, args, stdout, stderr, nil)
}

// debugLLB is DebugLLB with the module files given (nil: the embedded ones).
func debugLLB(ctx context.Context, args []string, stdout, stderr io.Writer, module iofs.FS) error {
	fs := flag.NewFlagSet("llb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the nixos2docker file")
	specFile := fs.String("spec", "", "an image spec (spec.json) to build the image from")
	var opts optList
	fs.Var(&opts, "opt", "a frontend option key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || fs.NArg() != 0 {
		return errors.New("usage: nixos2docker-frontend llb -f FILE [--opt key=value]... [--spec SPEC.json]")
	}
	data, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	d, err := parseDebugOpts(opts)
	if err != nil {
		return err
	}
	o, err := ParseOptions(d.buildArgs)
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

	enc := json.NewEncoder(stdout)
	for _, p := range d.platforms {
		id := platforms.FormatAll(p)
		stage, err := NewStage(Request{
			FileName: *file, File: f, Options: o, Target: d.target, Platform: p,
			Context: *dockerui.DefaultMainContext(llb.LocalUniqueID("nixos2docker-llb")), IgnoreCache: d.noCache, Module: module,
		})
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
		if spec.System != stage.Plan.System {
			return fmt.Errorf("%s: the spec is for %s, but platform %s needs %s", *specFile, spec.System, id, stage.Plan.System)
		}
		img, err := stage.Image(spec, ImageOptions{Epoch: o.Epoch, Labels: d.labels, IgnoreCache: stage.IgnoreCache})
		if err != nil {
			return fmt.Errorf("%s: %w", *specFile, err)
		}
		if err := enc.Encode(map[string]string{"stage": "image", "platform": id}); err != nil {
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

type debugOpts struct {
	buildArgs map[string]string
	labels    map[string]string
	target    string
	platforms []ocispecs.Platform
	noCache   bool
}

func parseDebugOpts(opts []string) (debugOpts, error) {
	d := debugOpts{buildArgs: map[string]string{}, labels: map[string]string{}}
	for _, kv := range opts {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok && k != "no-cache":
			return d, fmt.Errorf("--opt %q: want key=value", kv)
		case strings.HasPrefix(k, "build-arg:"):
			d.buildArgs[strings.TrimPrefix(k, "build-arg:")] = v
		case strings.HasPrefix(k, "label:"):
			d.labels[strings.TrimPrefix(k, "label:")] = v
		case k == "target":
			d.target = v
		case k == "no-cache":
			d.noCache = true
		case k == "platform":
			for s := range strings.SplitSeq(v, ",") {
				p, err := platforms.Parse(strings.TrimSpace(s))
				if err != nil {
					return d, fmt.Errorf("--opt platform: %w", err)
				}
				d.platforms = append(d.platforms, platforms.Normalize(p))
			}
		default:
			return d, fmt.Errorf("--opt %q: unknown option (build-arg:K, label:K, target, platform, no-cache)", k)
		}
	}
	if len(d.platforms) == 0 {
		d.platforms = []ocispecs.Platform{platforms.Normalize(platforms.DefaultSpec())}
	}
	return d, nil
}

func platformOpt(p ocispecs.Platform) llb.ConstraintsOpt { return llb.Platform(p) }
