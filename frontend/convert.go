package frontend

import (
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerui"
	nixos2docker "github.com/nixos2docker/nixos2docker"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/nixeval"
	"github.com/nixos2docker/nixos2docker/nixfile"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Request is one platform's build, everything known before any solve. The
// gateway (Build) and the daemon-free debug command (DebugLLB) make it the
// same way (newRequest) and convert it with the same two pure steps:
// NewStage, then Stage.Image once the stage's spec is known.
type Request struct {
	// Client is dockerui's reading of the frontend options (build args,
	// --target, --label, --no-cache, network, cache namespace, hosts…):
	// held, not copied.
	Client   *dockerui.Client
	FileName string
	File     *nixfile.File
	// Options are the build arguments the frontend reads itself.
	Options  Options
	Platform ocispecs.Platform
	Context  llb.State
	// Module is the nixos2docker module files (nil: the embedded ones).
	Module fs.FS
	// SourceMap is the user's file, for locations (nil in the debug command).
	SourceMap *llb.SourceMap
	// MetaResolver resolves the builder image's config (nil: LLB's default).
	MetaResolver llb.ImageMetaResolver
	// Layering is how the image's layers are combined on this builder
	// (chooseLayering, from its capabilities).
	Layering nix2llb.Layering
	// RerunNix runs the Nix step even when it is cached (the store cache
	// lost what it built), without re-making the cached layers.
	RerunNix bool
	// StoreFrom is a store snapshot to restore before the Nix step (the
	// named context StoreContext), nil for none.
	StoreFrom *llb.State
}

// newRequest is one platform's request from what every build has read.
func newRequest(bc *dockerui.Client, fileName string, file *nixfile.File, o Options, p ocispecs.Platform, context llb.State) Request {
	return Request{Client: bc, FileName: fileName, File: file, Options: o, Platform: p, Context: context}
}

// ignoreCache is --no-cache for the whole build or for the Nix step.
func (r Request) ignoreCache() bool {
	return r.Client.IsNoCache(r.Client.Target) || r.Client.IsNoCache("nix")
}

// runOptions carries the client's sandbox settings to the Nix step: an
// --add-host can be what makes a private binary cache reachable.
func (r Request) runOptions() []llb.RunOption {
	bc := r.Client
	var opts []llb.RunOption
	for _, h := range bc.ExtraHosts {
		opts = append(opts, llb.AddExtraHost(h.Host, h.IP))
	}
	if bc.Hostname != "" {
		opts = append(opts, llb.Hostname(bc.Hostname))
	}
	if bc.CgroupParent != "" {
		opts = append(opts, llb.WithCgroupParent(bc.CgroupParent))
	}
	for _, u := range bc.Ulimits {
		opts = append(opts, llb.AddUlimit(llb.UlimitName(u.Name), u.Soft, u.Hard))
	}
	return opts
}

// Stage is the builder stage of one build.
type Stage struct {
	Request    Request
	Plan       nixeval.Plan
	Invocation *nixeval.Invocation
	State      llb.State
	// Builder is the stage's LLB and what the layer steps share with it
	// (the builder image, the store cache).
	Builder *nix2llb.Stage
}

// ParseFile parses the user's file; its errors are *nixfile.Error.
func ParseFile(name string, data []byte, o Options) (*nixfile.File, error) {
	var opts []nixfile.Option
	if o.Flake != "" {
		opts = append(opts, nixfile.WithFlakeOverride(o.Flake))
	}
	return nixfile.Parse(name, data, opts...)
}

// plan combines the file's directives with the build arguments (which win);
// its errors are located in the file.
func plan(req Request) (nixeval.Plan, error) {
	return nixeval.NewPlan(req.File, nixeval.Options{
		Flake:        req.Options.Flake,
		Nixpkgs:      req.Options.Nixpkgs,
		Target:       req.Client.Target,
		NixConfig:    req.Options.NixConfig,
		Platform:     req.Platform,
		Substituters: req.Options.Substituters,
		Emulated:     emulated(req.Client.BuildPlatforms, req.Platform),
	})
}

// emulated says whether a step for platform p runs under emulation on this
// builder: p is not what its worker runs natively (the first of the
// worker's platforms, which dockerui puts first in BuildPlatforms; the others
// are those binfmt_misc adds). A multi-node builder sends each platform to a
// node of its own, whose worker then runs it natively.
func emulated(build []ocispecs.Platform, p ocispecs.Platform) bool {
	if len(build) == 0 {
		return false
	}
	return !platforms.Only(build[0]).Match(platforms.Normalize(p))
}

// description names the Nix step in progress output, e.g. "nix: build
// nixosConfigurations.web docker image spec (x86_64-linux)".
func description(p nixeval.Plan, targets bool) string {
	if targets {
		return fmt.Sprintf("nix: list nixosConfigurations of %s", p.Flake)
	}
	if p.Flake == "" {
		return fmt.Sprintf("nix: build docker image spec of the file body with nixpkgs %s (%s)", p.Nixpkgs, p.System)
	}
	target := p.Target
	if target == "" {
		target = p.FlakeRef.Attr
	}
	if target == "" {
		return fmt.Sprintf("nix: build docker image spec of the flake %s (%s)", p.Flake, p.System)
	}
	return fmt.Sprintf("nix: build nixosConfigurations.%s docker image spec (%s)", target, p.System)
}

// NewStage returns the builder stage that builds the image spec.
func NewStage(req Request) (*Stage, error) {
	return newStage(req, false)
}

// NewTargetsStage returns the builder stage that lists the flake's
// nixosConfigurations.
func NewTargetsStage(req Request) (*Stage, error) {
	return newStage(req, true)
}

func newStage(req Request, targets bool) (*Stage, error) {
	p, err := plan(req)
	if err != nil {
		return nil, err
	}
	var inv *nixeval.Invocation
	module := req.Module
	if module == nil {
		module = nixos2docker.Module()
	}
	if targets {
		inv, err = nixeval.Targets(p, module)
	} else {
		inv, err = nixeval.Build(p, module)
	}
	if err != nil {
		return nil, err
	}
	b := nix2llb.Builder{
		Image:          req.Options.Builder,
		Platform:       req.Platform,
		System:         p.System,
		Invocation:     inv,
		Context:        req.Context,
		NetworkMode:    req.Client.NetworkMode,
		RunOptions:     req.runOptions(),
		CacheNamespace: req.Client.CacheIDNamespace,
		IgnoreCache:    req.ignoreCache() || req.RerunNix,
		Description:    description(p, targets),
		ResolveMode:    req.Client.ImageResolveMode,
		MetaResolver:   req.MetaResolver,
		StoreFrom:      req.StoreFrom,
	}
	if loc := bodyLocation(req.SourceMap, req.File); loc != nil {
		b.Constraints = append(b.Constraints, loc)
	}
	st, err := nix2llb.BuilderStage(b)
	if err != nil {
		return nil, err
	}
	return &Stage{Request: req, Plan: p, Invocation: inv, State: st.State, Builder: st}, nil
}

// NewSaveStage returns the store snapshot of the request's builder and
// platform (NIXOS2DOCKER_STORE=save): /nix of the Nix step's store cache
// mount. nonce makes each build take a new snapshot.
func NewSaveStage(req Request, nonce string) (llb.State, error) {
	system, err := imagespec.SystemFor(req.Platform)
	if err != nil {
		return llb.State{}, err
	}
	inv, err := nixeval.Save(system)
	if err != nil {
		return llb.State{}, err
	}
	return nix2llb.SaveStage(nix2llb.Builder{
		Image:          req.Options.Builder,
		Platform:       req.Platform,
		System:         system,
		Invocation:     inv,
		RunOptions:     req.runOptions(),
		CacheNamespace: req.Client.CacheIDNamespace,
		Description:    fmt.Sprintf("nix: save the store (%s)", system),
		ResolveMode:    req.Client.ImageResolveMode,
		MetaResolver:   req.MetaResolver,
	}, nonce)
}

// ResultError turns a failed Nix evaluation into an error located in the
// user's file.
func (s *Stage) ResultError(fileName string, r *nixeval.Result) error {
	if e := nixeval.MapError(s.Plan, fileName, r.Log); e != nil {
		return e
	}
	return fmt.Errorf("nix failed:\n%s", strings.TrimSpace(r.Log))
}

// ImageOptions are what the image takes besides the spec.
type ImageOptions struct {
	Epoch  *time.Time
	Labels map[string]string
	// IgnoreCache re-makes every layer (--no-cache).
	IgnoreCache bool
	// Layering is how the layers are combined (default merged).
	Layering nix2llb.Layering
}

// Image returns the image for the spec (parsed, so validated) the stage
// produced, with the request's SOURCE_DATE_EPOCH, labels and --no-cache.
func (s *Stage) Image(spec *imagespec.Spec) (*nix2llb.Image, error) {
	if spec.System != s.Plan.System {
		return nil, fmt.Errorf("the image spec is for %s, but %s was requested", spec.System, s.Plan.System)
	}
	// On the re-run after a layer step found the store pruned, the layer
	// steps must be new vertices too: BuildKit would answer the same
	// definitions with their failure again.
	ignore := s.Request.ignoreCache() || s.Request.RerunNix
	return NewImage(s.Builder.Tools, s.Builder.Store, spec, ImageOptions{
		Epoch:       s.Request.Options.Epoch,
		Labels:      s.Request.Client.Labels,
		IgnoreCache: ignore,
		Layering:    s.Request.Layering,
	})
}

// NewImage decides the image for a validated spec (imagemodel) and renders
// it: its layer steps run in tools and read the store that the store option
// mounts (a builder stage's store cache).
func NewImage(tools llb.State, store llb.RunOption, spec *imagespec.Spec, o ImageOptions) (*nix2llb.Image, error) {
	m, err := imagemodel.New(spec, imagemodel.Options{Epoch: o.Epoch, Labels: o.Labels})
	if err != nil {
		return nil, err
	}
	return nix2llb.NewImage(nix2llb.ImageInput{
		Model:       m,
		Tools:       tools,
		Store:       store,
		IgnoreCache: o.IgnoreCache,
		Layering:    o.Layering,
	})
}
