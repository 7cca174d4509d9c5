package nixeval

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/nixfile"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Options are the build options that shape a Plan (build arguments and
// the like; a non-empty value overrides the file's directive).
type Options struct {
	Flake        string // NIXOS_FLAKE
	Nixpkgs      string // NIXPKGS
	Target       string // --target
	NixConfig    string
	Platform     ocispecs.Platform
	Substituters bool
	// Emulated says the Nix step runs under user-mode emulation (the
	// target platform is not the builder's own: binfmt_misc and qemu-user).
	Emulated bool
}

// Build arguments that reach the plan (the frontend reads them), named in
// errors about their values.
const (
	ArgFlake     = "NIXOS_FLAKE"
	ArgNixpkgs   = "NIXPKGS"
	ArgNixConfig = "NIX_CONFIG"
)

// NewPlan decides what to build from a parsed file and the options, as
// README's "Build with BuildKit" section says: a flake without a body builds its target; a
// flake with a body extends it for the image only; a body without a flake
// is the whole configuration, built with nixpkgs. Problems in the file are
// *nixfile.Error.
func NewPlan(f *nixfile.File, o Options) (Plan, error) {
	p := Plan{
		Flake: f.Flake, Nixpkgs: f.Nixpkgs, Target: o.Target,
		Body: f.Body, BodyFile: f.Name, BodyLine: f.BodyLine,
		NixConfig: o.NixConfig, Substituters: o.Substituters, Emulated: o.Emulated,
	}
	if d := f.Directive(nixfile.KeyFlake); d != nil {
		p.FlakeLine = d.Line
	}
	if d := f.Directive(nixfile.KeyNixpkgs); d != nil {
		p.NixpkgsLine = d.Line
	}
	if o.Flake != "" {
		p.Flake, p.FlakeLine = o.Flake, 0
	}
	if o.Nixpkgs != "" {
		p.Nixpkgs, p.NixpkgsLine = o.Nixpkgs, 0
	}
	// A value from a build argument (line 0) is named as such, not put
	// at line 1 of a file it is not in.
	at := func(line int, msg string) error {
		return &nixfile.Error{File: f.Name, Line: max(line, 1), Column: 1, Msg: msg}
	}
	refErr := func(line int, arg, what, value string, err error) error {
		if line == 0 {
			return fmt.Errorf("build argument %s=%q: %w", arg, value, err)
		}
		return at(line, what+" "+quote(value)+": "+err.Error())
	}
	switch {
	case p.Flake == "" && p.Body == "":
		return Plan{}, at(1, nixfile.EmptyFile)
	case p.Flake == "" && p.Nixpkgs == "":
		return Plan{}, at(p.BodyLine, "no flake and no nixpkgs: without a flake the body is the whole NixOS configuration and needs nixpkgs; add \"# nixpkgs=github:NixOS/nixpkgs/nixos-26.05\" (or set the NIXPKGS build argument), or a flake directive")
	}
	var err error
	if p.Flake != "" {
		// The flake is resolved here, once: the stage, its progress name
		// and the error mapping use p.FlakeRef.
		if p.FlakeRef, err = ParseFlakeRef(p.Flake); err != nil {
			return Plan{}, refErr(p.FlakeLine, ArgFlake, "flake", p.Flake, err)
		}
	} else {
		if p.NixpkgsRef, err = ParseFlakeRef(p.Nixpkgs); err == nil && p.NixpkgsRef.Fragment != "" {
			err = errors.New("a nixpkgs reference has no #fragment")
		}
		if err != nil {
			return Plan{}, refErr(p.NixpkgsLine, ArgNixpkgs, "nixpkgs", p.Nixpkgs, err)
		}
	}
	if strings.IndexFunc(p.Target, unicode.IsControl) >= 0 || strings.ContainsAny(p.Target, " \t") {
		return Plan{}, fmt.Errorf("target %q: a nixosConfigurations name has no spaces or control characters", p.Target)
	}
	if err := checkNixConfig(o.NixConfig); err != nil {
		return Plan{}, err
	}
	sys, err := imagespec.SystemFor(o.Platform)
	if err != nil {
		return Plan{}, err
	}
	p.System = sys
	return p, nil
}

func quote(s string) string { return "\"" + s + "\"" }

// secretSettings are nix.conf settings that carry credentials: a build
// argument lands in the build's definition, cache key and logs.
var secretSettings = []string{"access-tokens", "extra-access-tokens", "netrc-file"}

// checkNixConfig refuses credentials in the NIX_CONFIG build argument.
func checkNixConfig(conf string) error {
	for _, line := range strings.Split(conf, "\n") {
		key, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		key = strings.TrimSpace(key)
		for _, s := range secretSettings {
			if key == s {
				return fmt.Errorf("build argument %s: %s holds credentials, which would land in the build's definition, cache key and logs: give them as a BuildKit secret instead (--secret id=nixconf for nix.conf lines, id=netrc for a netrc file, id=github_token for GitHub)", ArgNixConfig, key)
			}
		}
	}
	return nil
}
