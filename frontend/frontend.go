// Package frontend is the nixos2docker BuildKit gateway frontend: it reads the
// user's file through dockerui (the options layer the Dockerfile frontend
// uses), runs the Nix builder stage for each target platform, reads the image
// spec the stage wrote, and returns the layered image with its config.
//
// Build is the gateway entry point; the pieces it is made of (ParseFile,
// NewStage, NewImage) are also what the daemon-free `llb` debug command uses.
//
// What a build reads:
//   - build arguments NIXOS_FLAKE, NIXPKGS (override the file's directives),
//     NIXOS2DOCKER_BUILDER (the image that runs Nix; default DefaultBuilder),
//     NIX_CONFIG, NIXOS2DOCKER_SUBSTITUTERS (default true; false runs Nix
//     with no network unless the flake itself is remote), SOURCE_DATE_EPOCH;
//   - --target (nixosConfigurations.<name>), --platform (linux/amd64,
//     linux/arm64; several at once), --label, --no-cache, --add-host;
//   - optional secrets netrc, nixconf, github_token (see nixeval.Secrets),
//     mounted into the Nix step only;
//   - NIXOS2DOCKER_STORE=save: the result is a snapshot of the builder's Nix
//     store (its cache mount) instead of the image, and the named context
//     nixos2docker-store (such a snapshot, e.g. docker-image://…) restores
//     a fresh builder's store before the Nix step: how the store follows a
//     CI from runner to runner (a cache mount is never in the exported
//     cache);
//   - subrequests --call targets, --call outline, --check;
//   - --sbom: an SPDX document of the closure, attached like a scanner's;
//   - the builder's LLB capabilities: layers are merged where it has MergeOp,
//     stacked where it has not (Docker's classic image store), with a
//     warning at the `# syntax=` line saying what that costs (layering.go).
package frontend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/frontend/subrequests/lint"
	"github.com/moby/buildkit/frontend/subrequests/outline"
	"github.com/moby/buildkit/frontend/subrequests/targets"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/nixeval"
	"github.com/nixos2docker/nixos2docker/nixfile"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Language names the file in BuildKit source maps.
const Language = "nixos2docker"

// Build is the frontend's entry point (grpcclient.RunFromEnvironment, or a
// client-side c.Build in tests).
func Build(ctx context.Context, c client.Client) (_ *client.Result, err error) {
	bc, err := dockerui.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("frontend options: %w", err)
	}
	src, err := bc.ReadEntrypoint(ctx, Language)
	if err != nil {
		return nil, err
	}
	// Every error located in the file is shown against it from here on.
	defer func() { err = withLocation(err, src.SourceMap) }()

	opts, err := ParseOptions(bc.BuildArgs)
	if err != nil {
		return nil, err
	}
	file, err := ParseFile(src.Filename, src.Data, opts)
	if err != nil {
		return nil, err
	}
	mainContext, err := bc.MainContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}

	b := &build{c: c, bc: bc, src: src, opts: opts, file: file, context: *mainContext}

	if res, ok, err := bc.HandleSubrequest(ctx, dockerui.RequestHandler{
		Outline:     b.outline,
		ListTargets: b.listTargets,
		Lint:        b.lint,
	}); err != nil {
		return nil, err
	} else if ok {
		return res, nil
	}

	// Decided before the Nix step runs: a builder that cannot make the
	// layers must not spend a Nix build on finding that out. (A store
	// snapshot has no layers of its own.)
	if !opts.SaveStore {
		if b.layers, err = b.layering(ctx); err != nil {
			return nil, err
		}
	}
	sboms := newSBOMs()
	rb, err := bc.Build(ctx, func(ctx context.Context, platform *ocispecs.Platform, idx int) (*dockerui.BuildResult, error) {
		p := platforms.DefaultSpec()
		if platform != nil {
			p = *platform
		}
		p = platforms.Normalize(p)
		if opts.SaveStore {
			return b.saveStore(ctx, p)
		}
		res, spec, err := b.image(ctx, p, false)
		if err != nil {
			return nil, err
		}
		sboms.store(platforms.FormatAll(p), spec)
		return res, nil
	})
	if err != nil {
		return nil, err
	}
	if bc.SBOM != nil && !opts.SaveStore {
		if err := sboms.attach(ctx, c, rb, opts.Epoch); err != nil {
			return nil, err
		}
	}
	return rb.Finalize()
}

// build is one invocation of the frontend.
type build struct {
	c       client.Client
	bc      *dockerui.Client
	src     *dockerui.Source
	opts    Options
	file    *nixfile.File
	context llb.State
	// layers is how the image's layers are combined on this builder.
	layers nix2llb.Layering
}

func (b *build) request(p ocispecs.Platform) Request {
	r := newRequest(b.bc, b.src.Filename, b.file, b.opts, p, b.context)
	r.SourceMap, r.MetaResolver, r.Layering = b.src.SourceMap, b.c, b.layers
	return r
}

// solve runs a stage and returns its result reference.
func (b *build) solve(ctx context.Context, st llb.State, p ocispecs.Platform) (client.Reference, error) {
	def, err := st.Marshal(ctx, llb.Platform(p), llb.WithCaps(b.bc.BuildOpts().LLBCaps))
	if err != nil {
		return nil, fmt.Errorf("marshal LLB: %w", err)
	}
	res, err := b.c.Solve(ctx, client.SolveRequest{Definition: def.ToPB(), CacheImports: b.bc.CacheImports})
	if err != nil {
		return nil, err
	}
	return res.SingleRef()
}

// result runs the builder stage and reads what it reported.
func (b *build) result(ctx context.Context, stage *Stage, p ocispecs.Platform) (client.Reference, *nixeval.Result, error) {
	ref, err := b.solve(ctx, stage.State, p)
	if err != nil {
		return nil, nil, err
	}
	r, err := stage.Invocation.ReadResult(func(name string) ([]byte, error) {
		return ref.ReadFile(ctx, client.ReadRequest{Filename: name})
	})
	if err != nil {
		return nil, nil, err
	}
	if r.Status != nixeval.StatusOK {
		return nil, nil, stage.ResultError(b.src.Filename, r)
	}
	return ref, r, nil
}

func (b *build) image(ctx context.Context, p ocispecs.Platform, rerun bool) (*dockerui.BuildResult, *imagespec.Spec, error) {
	req := b.request(p)
	req.RerunNix = rerun
	storeFrom, err := b.storeFrom(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	req.StoreFrom = storeFrom
	stage, err := NewStage(req)
	if err != nil {
		return nil, nil, err
	}
	ref, r, err := b.result(ctx, stage, p)
	if err != nil {
		return nil, nil, err
	}
	data, err := ref.ReadFile(ctx, client.ReadRequest{Filename: r.Spec})
	if err != nil {
		return nil, nil, fmt.Errorf("read the builder stage's spec.json: %w", err)
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		return nil, nil, err
	}
	if err := inClosure(spec, r.Closure); err != nil {
		return nil, nil, err
	}
	img, err := stage.Image(spec)
	if err != nil {
		return nil, nil, err
	}
	out, err := b.solve(ctx, img.State, p)
	if err == nil && out != nil {
		// A gateway solve is lazy: without this, the layer steps would run
		// only when BuildKit exports the result, after Build returned, and
		// a missing store path could no longer be answered below.
		err = out.Evaluate(ctx)
	}
	if nix2llb.IsMissing(err) && !rerun {
		// A layer step found the store cache without its paths: the cache
		// was pruned while the Nix step stayed cached. Run it again, once.
		return b.image(ctx, p, true)
	}
	if err != nil {
		return nil, nil, err
	}
	return &dockerui.BuildResult{Reference: out, Image: img.Config, Epoch: b.opts.Epoch}, spec, nil
}

// inClosure checks that the spec lists only paths of its own closure as Nix
// knows it: the layer steps copy what the spec lists from the shared store
// cache, which may hold other builds' paths, and the spec is a document a
// derivation wrote.
func inClosure(spec *imagespec.Spec, closure []string) error {
	known := make(map[string]bool, len(closure))
	for _, p := range closure {
		known[p] = true
	}
	for i, p := range spec.Closure {
		if !known[p.Path] {
			return fmt.Errorf("the image spec's closure[%d] is %s, which the spec does not reference (Nix's closure of it does not hold it): refusing to copy it", i, p.Path)
		}
	}
	return nil
}

// storeFrom loads the named context StoreContext for p, if the build has
// one. A snapshot that cannot be found (the first build of a CI, whose save
// step has not run yet) is a warning, not an error: the build then starts
// from the builder's own store.
func (b *build) storeFrom(ctx context.Context, p ocispecs.Platform) (*llb.State, error) {
	nc, err := b.bc.NamedContext(StoreContext, dockerui.ContextOpt{Platform: &p, ResolveMode: b.bc.ImageResolveMode.String()})
	if err != nil {
		return nil, fmt.Errorf("named context %s: %w", StoreContext, err)
	}
	if nc == nil {
		return nil, nil
	}
	st, _, err := nc.Load(ctx)
	if err != nil {
		msg := fmt.Sprintf("store snapshot %s not loaded, building from the builder's own store: %v", StoreContext, err)
		if b.src.Warn != nil {
			b.src.Warn(ctx, msg, client.WarnOpts{})
		}
		return nil, nil
	}
	return st, nil
}

// saveStore answers NIXOS2DOCKER_STORE=save: a snapshot of the Nix store of
// this builder for p, as a one-layer image with /nix at its root.
func (b *build) saveStore(ctx context.Context, p ocispecs.Platform) (*dockerui.BuildResult, error) {
	st, err := NewSaveStage(b.request(p), strconv.FormatInt(time.Now().UnixNano(), 10))
	if err != nil {
		return nil, err
	}
	ref, err := b.solve(ctx, st, p)
	if err != nil {
		return nil, err
	}
	created := imagemodel.NixTime
	if b.opts.Epoch != nil {
		created = *b.opts.Epoch
	}
	system, _ := imagespec.SystemFor(p)
	img := &dockerspec.DockerOCIImage{
		Image: ocispecs.Image{
			Created:  &created,
			Platform: p,
			RootFS:   ocispecs.RootFS{Type: "layers"},
		},
		Config: dockerspec.DockerOCIImageConfig{ImageConfig: ocispecs.ImageConfig{
			Labels: map[string]string{
				"org.opencontainers.image.description": "Nix store snapshot of a nixos2docker builder (" + system + "): --build-context " + StoreContext + "=… restores it",
			},
		}},
	}
	return &dockerui.BuildResult{Reference: ref, Image: img, Epoch: b.opts.Epoch}, nil
}

// listTargets answers `--call targets`: the flake's nixosConfigurations.
func (b *build) listTargets(ctx context.Context) (*targets.List, error) {
	p := platforms.Normalize(platforms.DefaultSpec())
	if len(b.bc.TargetPlatforms) > 0 {
		p = b.bc.TargetPlatforms[0]
	}
	stage, err := NewTargetsStage(b.request(p))
	if err != nil {
		return nil, err
	}
	if stage.Plan.Flake == "" {
		return nil, errors.New("no flake: targets are a flake's nixosConfigurations, and this file's body is the whole configuration")
	}
	_, r, err := b.result(ctx, stage, p)
	if err != nil {
		return nil, err
	}
	flake, _, _ := strings.Cut(stage.Plan.Flake, "#")
	list := &targets.List{Sources: [][]byte{b.src.Data}}
	for i, name := range r.Targets {
		list.Targets = append(list.Targets, targets.Target{
			Name:        name,
			Default:     len(r.Targets) == 1 && i == 0,
			Description: "nixosConfigurations." + name + " of " + flake,
		})
	}
	return list, nil
}

// lint answers `--check`: the file parsed (a broken one has already failed
// with its location); Nix's own checks need the build.
func (b *build) lint(ctx context.Context) (*lint.LintResults, error) {
	return &lint.LintResults{
		Warnings: []lint.Warning{},
		Sources: []*pb.SourceInfo{{
			Filename: b.src.Filename,
			Data:     b.src.Data,
			Language: b.src.Language,
		}},
	}, nil
}

// outline answers `--call outline`: the build arguments and secrets the
// build reads.
func (b *build) outline(ctx context.Context) (*outline.Outline, error) {
	o := &outline.Outline{
		Name:        b.bc.Target,
		Description: "NixOS image built by nixos2docker",
		Sources:     [][]byte{b.src.Data},
		Args: []outline.Arg{
			{Name: ArgFlake, Description: "flake reference of the NixOS configuration (overrides # flake=)", Value: b.file.Flake},
			{Name: ArgNixpkgs, Description: "nixpkgs flake reference for a body that is the whole configuration (overrides # nixpkgs=)", Value: b.file.Nixpkgs},
			{Name: ArgBuilder, Description: "image that runs Nix", Value: DefaultBuilder},
			{Name: ArgNixConfig, Description: "extra nix.conf settings"},
			{Name: ArgSubstituters, Description: "use binary caches and the network (true/false)", Value: "true"},
			{Name: ArgEpoch, Description: "time of every file and of the image config (seconds since 1970)"},
			{Name: ArgStore, Description: "save: the result is a snapshot of the builder's Nix store (restore it with --build-context " + StoreContext + "=…)"},
		},
	}
	for _, s := range nixeval.Secrets {
		o.Secrets = append(o.Secrets, outline.Secret{Name: s.ID})
	}
	return o, nil
}
