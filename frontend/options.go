package frontend

import (
	"fmt"

	"github.com/distribution/reference"
	"strconv"
	"strings"
	"time"

	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/nixeval"
)

// Build arguments the frontend reads (docker buildx build --build-arg K=V).
const (
	ArgFlake        = nixeval.ArgFlake
	ArgNixpkgs      = nixeval.ArgNixpkgs
	ArgBuilder      = "NIXOS2DOCKER_BUILDER"
	ArgNixConfig    = nixeval.ArgNixConfig
	ArgSubstituters = "NIXOS2DOCKER_SUBSTITUTERS"
	ArgEpoch        = "SOURCE_DATE_EPOCH"
	ArgStore        = "NIXOS2DOCKER_STORE"
)

// StoreSave is the value of NIXOS2DOCKER_STORE that makes the build's
// result a snapshot of the builder's Nix store instead of an image.
const StoreSave = "save"

// StoreContext is the named context (--build-context NAME=…) whose content,
// a store snapshot from an earlier NIXOS2DOCKER_STORE=save build, restores
// a fresh builder's store before the Nix step runs.
const StoreContext = "nixos2docker-store"

// DefaultBuilder is the builder image: the official Nix image, pinned by
// version and by the digest of its multi-platform index, so a build never
// changes under a user's feet.
const DefaultBuilder = "docker.io/nixos/nix:2.35.2@sha256:7a007c766426c1877758ddc5cb87a965ac131fc78c582ce0083d922d51ae945c"

// Options are the build's settings from build arguments; they override the
// file's directives.
type Options struct {
	Flake     string
	Nixpkgs   string
	Builder   string
	NixConfig string
	// Substituters lets Nix use binary caches (and the network); on unless
	// NIXOS2DOCKER_SUBSTITUTERS is false.
	Substituters bool
	// Epoch is SOURCE_DATE_EPOCH, nil when unset.
	Epoch *time.Time
	// SaveStore makes the result a store snapshot (NIXOS2DOCKER_STORE=save).
	SaveStore bool
}

// ParseOptions reads the build arguments.
func ParseOptions(args map[string]string) (Options, error) {
	o := Options{
		Flake:        strings.TrimSpace(args[ArgFlake]),
		Nixpkgs:      strings.TrimSpace(args[ArgNixpkgs]),
		Builder:      strings.TrimSpace(args[ArgBuilder]),
		NixConfig:    args[ArgNixConfig],
		Substituters: true,
	}
	if o.Builder == "" {
		o.Builder = DefaultBuilder
	} else if _, err := reference.ParseNormalizedNamed(o.Builder); err != nil {
		// Said here, naming the argument, rather than as "invalid
		// reference format" when the LLB is marshalled.
		return o, fmt.Errorf("build argument %s=%q: not an image reference: %w", ArgBuilder, o.Builder, err)
	}
	if v, ok := args[ArgSubstituters]; ok && strings.TrimSpace(v) != "" {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return o, fmt.Errorf("build argument %s=%q: want true or false", ArgSubstituters, v)
		}
		o.Substituters = b
	}
	switch v := strings.TrimSpace(args[ArgStore]); v {
	case "":
	case StoreSave:
		o.SaveStore = true
	default:
		return o, fmt.Errorf("build argument %s=%q: the only value is %q (the result is then a snapshot of the Nix store)", ArgStore, v, StoreSave)
	}
	if v := strings.TrimSpace(args[ArgEpoch]); v != "" {
		t, err := imagemodel.ParseEpoch(v)
		if err != nil {
			return o, fmt.Errorf("build argument %s: %w", ArgEpoch, err)
		}
		o.Epoch = &t
	}
	return o, nil
}
