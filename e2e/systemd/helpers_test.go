package systemd

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// needEnv returns the variable name's value, or skips the test (fails it in CI) saying which
// script sets it: run.
func needEnv(t *testing.T, name, run string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		testenv.SkipOrFail(t, "needs %s: run %s", name, run)
	}
	return v
}

// dockerEngine brings up the e2e's Docker engine (variant "" or "userns", as hack/docker-engine
// names them) for the test and takes it down when the test ends. An engine this test brought up
// must leave nothing behind on the host; one that was already running is left to its owner.
func dockerEngine(ctx context.Context, t *testing.T, variant string) *harness.Engine {
	t.Helper()
	e, err := harness.StartEngineVariant(ctx, os.Stderr, variant)
	if err != nil {
		t.Fatalf("starting the %s engine: %v", engineName(variant), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if !e.Started() {
			return
		}
		if err := e.Stop(ctx, os.Stderr); err != nil {
			t.Errorf("taking the %s engine down: %v", engineName(variant), err)
		}
		if left, err := e.Leftovers(ctx); err != nil || left != "" {
			t.Errorf("the %s engine left something behind: %s %v", engineName(variant), left, err)
		}
	})
	return e
}

func engineName(variant string) string {
	if variant == "" {
		return "Docker"
	}
	return variant + " Docker"
}

// noLeftovers is the subtest every e2e ends with: what the test ran is gone from the engine
// (containers, images, mounts, cgroups: the engine's snapshot before the runs).
func noLeftovers(ctx context.Context, t *testing.T, e *harness.Engine, before harness.Snapshot) {
	t.Helper()
	t.Run("no-leftovers", func(t *testing.T) {
		after, diff, err := e.WaitNoLeftovers(ctx, before, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if diff != "" {
			t.Errorf("left behind in %s:\n%s\nafter: %s", e.Name, diff, after)
		}
	})
}
