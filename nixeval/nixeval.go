// Package nixeval is the Nix side of nixos2docker seen from Go: it turns a
// Plan (the user's flake or nixpkgs, an optional body module, the target
// system) into the files and command of the builder stage, reads back what
// that stage wrote, and maps Nix's errors onto lines of the user's file.
//
// The builder stage runs run.sh (POSIX sh; Nix >= 2.8 plus coreutils, grep
// and findutils, as in Debian's nix-bin image and the nixos/nix image) with the
// build context mounted read-only at ContextDir and the files of an
// Invocation at Dir: eval.nix (fixed), plan.json (the plan's parameters),
// body.nix (the user's body, so that Nix names it in error positions),
// nix.conf (NIX_CONF_DIR points at Dir) and our NixOS module (from the
// embedded fs.FS the caller hands in). eval.nix combines them into
// config.system.build.dockerImageSpec:
//
//   - flake, no body: nixosConfigurations.<target> (with our module added
//     when the configuration lacks it; a configuration without extendModules,
//     like examples/toy, is used as it is);
//   - flake and body: cfg.extendModules with the body as
//     virtualisation.dockerVariant, i.e. configuration of the image only;
//   - body, no flake: nixpkgs.lib.nixosSystem { modules = [ module body ]; }.
//
// The stage copies only the spec into OutDir, with the list of its closure
// as Nix knows it (ClosureFile); the closure stays in the Nix store (a cache
// mount of the stage), where each layer step copies its own paths from
// (frontend/nix2llb), so that the cost of a rebuild follows what changed,
// not the closure. It writes plain files (StatusFile, LogFile; see
// ReadResult). Evaluation errors are results (status "error", exit 0) so the frontend can locate
// them in the file, and so they are cached like any deterministic outcome;
// a fetch failure (FetchFailurePatterns) or a failed build fails the step
// instead. Errors eval.nix raises itself carry a "[nixos2docker:WHERE]" tag
// naming the directive they are about.
//
// The stage's trust boundary (NixConf): Nix runs as root, evaluation is
// restricted, derivations build as unprivileged users, and secrets are
// root-only files that only Nix reads.
package nixeval

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/nixos2docker/nixos2docker/imagespec"
)

//go:embed eval.nix
var evalNix []byte

//go:embed run.sh
var runSh []byte

// Plan is what to build, decided from the file and the build options.
type Plan struct {
	// Flake is the flake reference after the build-arg override (".#web",
	// ".?dir=examples/toy#toy", "github:o/r#x"), "" if none. Relative
	// references are resolved against the build context.
	Flake string
	// Target is the nixosConfigurations attribute; "" means the flake
	// reference's fragment, else the only configuration.
	Target string
	// Nixpkgs is the flake reference of nixpkgs for a body-only file.
	Nixpkgs string
	// Body is the user's NixOS module ("" for none), from BodyFile starting
	// at line BodyLine.
	Body     string
	BodyFile string
	BodyLine int
	// FlakeLine and NixpkgsLine are the lines of the directives the values
	// came from (0 when they came from a build argument); errors about them
	// point there.
	FlakeLine, NixpkgsLine int
	// System is the Nix system to build for: "x86_64-linux" or "aarch64-linux".
	System string
	// NixConfig is extra nix.conf text (a build argument).
	NixConfig string
	// Substituters says whether binary caches may be used (real builds:
	// true; offline tests: false, which also spares Nix its retries).
	Substituters bool
	// Emulated says the stage runs under user-mode emulation (qemu-user
	// through binfmt_misc), where Nix cannot load its seccomp filter.
	Emulated bool
	// FlakeRef and NixpkgsRef are Flake and Nixpkgs parsed and checked
	// (NewPlan sets them; a plan written by hand has them parsed when the
	// stage is made).
	FlakeRef, NixpkgsRef FlakeRef
}

// refs returns the plan's flake (or nixpkgs) reference, parsed and checked.
func (p Plan) refs() (flake, nixpkgs FlakeRef, err error) {
	flake, nixpkgs = p.FlakeRef, p.NixpkgsRef
	if p.Flake == "" && p.Nixpkgs == "" {
		return flake, nixpkgs, errors.New("nothing to build: no flake and no nixpkgs (NewPlan makes plans from a file)")
	}
	if p.Flake != "" && flake == (FlakeRef{}) {
		if flake, err = ParseFlakeRef(p.Flake); err != nil {
			return flake, nixpkgs, fmt.Errorf("flake %q: %w", p.Flake, err)
		}
	}
	if p.Flake == "" && nixpkgs == (FlakeRef{}) {
		if nixpkgs, err = ParseFlakeRef(p.Nixpkgs); err != nil {
			return flake, nixpkgs, fmt.Errorf("nixpkgs %q: %w", p.Nixpkgs, err)
		}
		if nixpkgs.Fragment != "" {
			return flake, nixpkgs, fmt.Errorf("nixpkgs %q: a nixpkgs reference has no #fragment", p.Nixpkgs)
		}
	}
	return flake, nixpkgs, nil
}

// Layout is where the builder stage finds and puts things.
type Layout struct {
	Dir        string // our files (read-only)
	ContextDir string // the build context (read-only)
	OutDir     string // what the stage produces
	// RunDir holds what the stage makes from secrets (access-tokens.conf),
	// readable by root only; the builder step mounts a tmpfs there, so
	// nothing in it reaches a snapshot or a cache.
	RunDir string
	// StoreFromDir is where a store snapshot (Save's output, from an
	// earlier build) is mounted read-only, if the build has one; run.sh
	// restores it into the store before Nix runs.
	StoreFromDir string
}

// DefaultLayout is the layout of the builder stage.
var DefaultLayout = Layout{Dir: "/nixos2docker", ContextDir: "/src", OutDir: "/out", RunDir: "/run/nixos2docker", StoreFromDir: "/nixos2docker-store"}

// BuildUsers is how many nixbld build users run.sh creates when the builder
// image has none: one per concurrent build (max-jobs), as NixOS does.
const BuildUsers = 32

// Secret is an optional BuildKit secret the builder stage mounts. Secrets
// are read at run time only, so none enters a layer or a cache key.
type Secret struct {
	ID   string // as in `docker buildx build --secret id=ID,src=…`
	Path string // where the stage expects it
	What string
}

// Secrets the builder stage understands.
var Secrets = []Secret{
	{ID: "netrc", Path: "/run/secrets/netrc", What: "a netrc file for private flakes and binary caches (netrc-file)"},
	{ID: "nixconf", Path: "/run/secrets/nixconf", What: "extra nix.conf lines kept out of the cache key (access-tokens, extra-substituters, trusted-public-keys)"},
	{ID: "github_token", Path: "/run/secrets/github_token", What: "a GitHub token for github: flake inputs (extra-access-tokens = github.com=…, in a root-only file)"},
}

// Modes of the builder stage (run.sh's argument).
const (
	ModeBuild   = "build"   // build the image spec, copy it, list its closure
	ModeTargets = "targets" // list the flake's nixosConfigurations
	ModeSave    = "save"    // copy the whole store into OutDir/nix (Save)
)

// Invocation is the builder stage for one Plan.
type Invocation struct {
	// Mode is ModeBuild, ModeTargets or ModeSave.
	Mode string
	// Dir is where Files go.
	Dir string
	// Files are relative to Dir: eval.nix, plan.json, body.nix, nix.conf,
	// run.sh and the module's files.
	Files map[string][]byte
	// Args and Env run the stage.
	Args []string
	Env  []string
	// ContextDir is where the build context is mounted read-only.
	ContextDir string
	// OutDir receives the result files (StatusFile, SpecFile, ClosureFile, …).
	OutDir string
	// RunDir is a root-only scratch directory that must not outlive the
	// step (a tmpfs): the access tokens made from secrets go there.
	RunDir string
	// StoreFromDir is where the stage expects a store snapshot to restore,
	// if the build mounts one (Layout.StoreFromDir).
	StoreFromDir string
	// Network is whether the stage needs the network: substituters, or a
	// flake (or nixpkgs) that is not in the build context. (A flake in the
	// context whose inputs are remote also needs it: real builds use
	// substituters anyway.)
	Network bool
	// Secrets are the optional secret mounts.
	Secrets []Secret
}

// Build is the builder stage that builds the plan's image spec and copies it
// and its closure into OutDir (spec.json, nix/store/…), in DefaultLayout.
func Build(plan Plan, module fs.FS) (*Invocation, error) {
	return DefaultLayout.Build(plan, module)
}

// Targets is the builder stage that lists the flake's nixosConfigurations
// into OutDir/targets.json, in DefaultLayout.
func Targets(plan Plan, module fs.FS) (*Invocation, error) {
	return DefaultLayout.Targets(plan, module)
}

// Build is Build in layout l.
func (l Layout) Build(plan Plan, module fs.FS) (*Invocation, error) {
	return l.invocation(plan, module, ModeBuild)
}

// Targets is Targets in layout l.
func (l Layout) Targets(plan Plan, module fs.FS) (*Invocation, error) {
	if plan.Flake == "" {
		return nil, errors.New("no flake to list the targets of: add a flake directive or set the NIXOS_FLAKE build argument")
	}
	plan.Body, plan.Target = "", ""
	return l.invocation(plan, module, ModeTargets)
}

// Save is the builder stage that copies every valid path of the Nix store
// (the store cache mount), with their Nix registration, into OutDir/nix, in
// DefaultLayout: a store snapshot, which a later build on a fresh builder
// restores from StoreFromDir before it runs Nix.
func Save(system string) (*Invocation, error) {
	return DefaultLayout.Save(system)
}

// Save is Save in layout l.
func (l Layout) Save(system string) (*Invocation, error) {
	if _, err := imagespec.Platform(system); err != nil {
		return nil, fmt.Errorf("unsupported Nix system: %w", err)
	}
	return &Invocation{
		Mode:       ModeSave,
		Dir:        l.Dir,
		Files:      map[string][]byte{"run.sh": runSh},
		Args:       []string{"/bin/sh", path.Join(l.Dir, "run.sh"), ModeSave},
		Env:        []string{"NIXOS2DOCKER_DIR=" + l.Dir, "NIXOS2DOCKER_OUT=" + l.OutDir, "NIXOS2DOCKER_RUN=" + l.RunDir},
		ContextDir: l.ContextDir,
		OutDir:     l.OutDir,
		RunDir:     l.RunDir,
	}, nil
}

// planJSON is plan.json, the parameters of eval.nix.
type planJSON struct {
	Flake   string `json:"flake"`
	Target  string `json:"target"`
	Nixpkgs string `json:"nixpkgs"`
	System  string `json:"system"`
	Body    bool   `json:"body"`
}

func (l Layout) invocation(plan Plan, module fs.FS, mode string) (*Invocation, error) {
	if _, err := imagespec.Platform(plan.System); err != nil {
		return nil, fmt.Errorf("unsupported Nix system: %w", err)
	}
	pj := planJSON{System: plan.System, Body: strings.TrimSpace(plan.Body) != ""}
	flake, nixpkgs, err := plan.refs()
	if err != nil {
		return nil, err
	}
	remote := false
	if plan.Flake != "" {
		pj.Flake, pj.Target, remote = flake.In(l.ContextDir), flake.Attr, flake.Remote
		if plan.Target != "" {
			pj.Target = plan.Target
		}
	} else {
		pj.Nixpkgs, remote = nixpkgs.In(l.ContextDir), nixpkgs.Remote
	}
	planData, err := json.MarshalIndent(pj, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding plan.json: %w", err)
	}

	files := map[string][]byte{}
	if module != nil {
		if err := fs.WalkDir(module, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := fs.ReadFile(module, p)
			if err != nil {
				return err
			}
			files[p] = data
			return nil
		}); err != nil {
			return nil, fmt.Errorf("reading the module files: %w", err)
		}
	}
	if pj.Flake == "" || pj.Body {
		// Without the module nothing defines dockerImageSpec; only a
		// configuration that brings its own (the toy) can do without.
		if _, ok := files["nixos/docker-image.nix"]; !ok {
			return nil, errors.New("the module files lack nixos/docker-image.nix")
		}
	}
	files["eval.nix"] = evalNix
	files["run.sh"] = runSh
	files["plan.json"] = append(planData, '\n')
	files["nix.conf"] = []byte(l.NixConf(plan))
	files[FetchFailuresFile] = []byte(strings.Join(FetchFailurePatterns, "\n") + "\n")
	files[FetchHintFile] = []byte(FetchHint())
	if pj.Body {
		body := plan.Body
		if !strings.HasSuffix(body, "\n") {
			body += "\n"
		}
		files["body.nix"] = []byte(body)
	}
	return &Invocation{
		Mode:  mode,
		Dir:   l.Dir,
		Files: files,
		Args:  []string{"/bin/sh", path.Join(l.Dir, "run.sh"), mode},
		Env: []string{
			"NIXOS2DOCKER_DIR=" + l.Dir, "NIXOS2DOCKER_OUT=" + l.OutDir, "NIXOS2DOCKER_RUN=" + l.RunDir,
			"NIXOS2DOCKER_BUILD_USERS=" + fmt.Sprint(BuildUsers),
			// Nix's fetcher cache next to the store, so that a persistent
			// /nix (a cache mount) also spares re-downloading flake inputs.
			"XDG_CACHE_HOME=/nix/var/cache",
		},
		ContextDir:   l.ContextDir,
		OutDir:       l.OutDir,
		RunDir:       l.RunDir,
		StoreFromDir: l.StoreFromDir,
		Network:      plan.Substituters || remote,
		Secrets:      Secrets,
	}, nil
}

// NixConf is the nix.conf of the builder stage in DefaultLayout.
func NixConf(plan Plan) string { return DefaultLayout.NixConf(plan) }

// NixConf is the nix.conf of the builder stage (NIX_CONF_DIR points at it).
//
// Nix itself runs as root: it owns the store and reads the secrets. What the
// user's flake and its inputs bring runs with less: evaluation is restricted
// (restrict-eval: no files outside the store and our Dir, no environment),
// and derivations build as the nixbld users run.sh creates, so they can
// neither read the root-only secrets nor change the root-owned store. Nix's
// sandbox stays off: a BuildKit RUN step has no namespaces for it (measured:
// with sandbox = true and no fallback, Nix 2.34 stops with "this system does
// not support the kernel namespaces that are required for sandboxing"), and
// with the fallback Nix would drop it silently.
func (l Layout) NixConf(plan Plan) string {
	var b strings.Builder
	b.WriteString(`# nix.conf of the nixos2docker builder stage (generated by nixeval).
# Nix runs as root; derivations build as the nixbld users run.sh creates, so
# they cannot read the root-only secrets or change the root-owned store.
# Evaluation is restricted: no files outside the store and the stage's own
# directory, no environment variables; network fetches as usual.
# A BuildKit RUN step has no namespaces for Nix's sandbox.
experimental-features = nix-command flakes
build-users-group = nixbld
sandbox = false
restrict-eval = true
allowed-uris = https: http: git+https: git+http: git+ssh: ssh: github: gitlab: sourcehut: tarball+https: tarball+http: file+https: file+http:
warn-dirty = false
`)
	if !plan.Substituters {
		b.WriteString("# Offline: no binary caches (and no retries against them).\nsubstituters =\n")
	}
	if plan.Emulated {
		// qemu-user cannot load a seccomp filter for the program it
		// emulates, so Nix's (which keeps builders from making setuid or
		// setgid files, ACLs and extended attributes) would fail every
		// build. Inside the step nobody but root and the build users runs,
		// and Nix resets the modes of what it registers; NIX_CONFIG may
		// still turn it back on (it comes last).
		b.WriteString("# The step runs emulated (qemu-user), where Nix's seccomp filter cannot be loaded.\nfilter-syscalls = false\n")
	}
	for _, s := range Secrets {
		switch s.ID {
		case "netrc":
			b.WriteString("# Optional secrets: a missing netrc is ignored, and so is a missing !include.\n")
			fmt.Fprintf(&b, "netrc-file = %s\n", s.Path)
		case "nixconf":
			fmt.Fprintf(&b, "!include %s\n", s.Path)
		case "github_token":
			b.WriteString("# run.sh writes the github_token secret here as extra-access-tokens.\n")
			fmt.Fprintf(&b, "!include %s\n", path.Join(l.RunDir, AccessTokensFile))
		}
	}
	if c := strings.TrimSpace(plan.NixConfig); c != "" {
		b.WriteString("# From the build arguments.\n")
		b.WriteString(c)
		b.WriteString("\n")
	}
	return b.String()
}

// AccessTokensFile is the file in RunDir that run.sh writes the github_token
// secret into, as an extra-access-tokens line only root can read.
const AccessTokensFile = "access-tokens.conf"

// SortedFiles returns the invocation's file names, sorted.
func (inv *Invocation) SortedFiles() []string {
	names := make([]string, 0, len(inv.Files))
	for n := range inv.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
