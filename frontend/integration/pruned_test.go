package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPrunedStoreCacheRerunsNix: BuildKit may prune the Nix store cache mount while the Nix
// step's result (the spec and the closure's list) stays cached. A layer step that must run
// then finds its store paths missing; the build must not fail but run the Nix step again and
// make the same image. Simulated by pruning only the store cache and the layer steps' results.
func TestPrunedStoreCacheRerunsNix(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	first, _ := e.buildToy(ctx, t, dir, nil)

	// Cache mounts, and the results of the layer steps (their exec's description holds the
	// layer script) and of the merge that holds them (named by its vertex), but not the Nix
	// step's.
	e.pruneWhere(ctx, t, "type==exec.cachemount", "description~=not.in.the.Nix.store.cache", "description~=^merge.[0-9]+.layers")
	again, res := e.buildToy(ctx, t, dir, nil)
	if !strings.Contains(res.Logs, "nixos2docker: not in the Nix store cache") {
		t.Errorf("no layer step found its paths missing: the prune did not leave the state this test is about (ran: %q)", res.Worked())
	}
	if !slices.ContainsFunc(res.Worked(), func(n string) bool { return strings.HasPrefix(n, "nix: build") }) {
		t.Errorf("the Nix step did not run again after the store cache was pruned (ran: %q)", res.Worked())
	}
	if again.ManifestDigest != first.ManifestDigest {
		t.Errorf("the rebuilt image differs: %s, first %s", again.ManifestDigest, first.ManifestDigest)
	}
}
