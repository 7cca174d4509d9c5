package nixeval

import (
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
}

// NewPlan decides what to build from a parsed file and the options, as
// README's "Build with BuildKit" section says: a flake without a body builds its target; a
// flake with a body extends it for the image only; a body without a flake
// is the whole configuration, built with nixpkgs. Problems in the file are
// *nixfile.Error.
func NewPlan(f *nixfile.File, o Options) (Plan, error) {
	p := Plan{
		Flake: f.Flake, Nixpkgs: f.Nixpkgs, Target: o.Target,
		Body: f.Body, BodyFile: f.Name, BodyLine: f.BodyLine,
		NixConfig: o.NixConfig, Substituters: o.Substituters,
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
	at := func(line int, msg string) error {
		if line == 0 {
			line = 1
		}
		return &nixfile.Error{File: f.Name, Line: line, Column: 1, Msg: msg}
	}
	switch {
	case p.Flake == "" && p.Body == "":
		return Plan{}, at(1, "empty file: nothing to build; expected a flake directive (\"# flake=.#<name>\") or a NixOS module body")
	case p.Flake == "" && p.Nixpkgs == "":
		return Plan{}, at(p.BodyLine, "no flake and no nixpkgs: without a flake the body is the whole NixOS configuration and needs nixpkgs; add \"# nixpkgs=github:NixOS/nixpkgs/nixos-26.05\" (or set the NIXPKGS build argument), or a flake directive")
	}
	if p.Flake != "" {
		if _, err := ResolveFlakeRef(p.Flake, DefaultLayout.ContextDir); err != nil {
			return Plan{}, at(p.FlakeLine, "flake "+quote(p.Flake)+": "+err.Error())
		}
	} else if ref, err := ResolveFlakeRef(p.Nixpkgs, DefaultLayout.ContextDir); err != nil {
		return Plan{}, at(p.NixpkgsLine, "nixpkgs "+quote(p.Nixpkgs)+": "+err.Error())
	} else if ref.Fragment != "" {
		return Plan{}, at(p.NixpkgsLine, "nixpkgs "+quote(p.Nixpkgs)+": a nixpkgs reference has no #fragment")
	}
	sys, err := imagespec.SystemFor(o.Platform)
	if err != nil {
		return Plan{}, err
	}
	p.System = sys
	return p, nil
}

func quote(s string) string { return "\"" + s + "\"" }
