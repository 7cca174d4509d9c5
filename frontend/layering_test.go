package frontend

import (
	"context"
	"strings"
	"testing"

	"github.com/moby/buildkit/solver/pb"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/nixfile"
)

// Docker's classic image store disables MergeOp with this reason
// (moby builder-next, newGraphDriverController).
const classicStoreReason = "only enabled with containerd image store backend"

func TestChooseLayering(t *testing.T) {
	ctx := context.Background()
	l, refused, err := chooseLayering(ctx, pb.Caps.CapSet(pb.Caps.All()))
	if err != nil || l != nix2llb.Merged || len(refused) != 0 {
		t.Errorf("a builder with every capability: %v %v %v, want merged", l, refused, err)
	}

	l, refused, err = chooseLayering(ctx, capsWithout(classicStoreReason, pb.CapMergeOp))
	if err != nil || l != nix2llb.Stacked {
		t.Fatalf("a builder without MergeOp: %v %v, want stacked", l, err)
	}
	msg := fallbackMessage(l, refused)
	for _, want := range []string{
		"layers stacked",
		"mergeop has been disabled on the build server: " + classicStoreReason, // BuildKit's own words
		"re-creates every layer above it",                                      // the cost
		`"containerd-snapshotter": true`,                                       // what to do
		"docker buildx create --use",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the stacked warning %q lacks %q", msg, want)
		}
	}

	// A builder without progress names for steps (older than any BuildKit
	// with MergeOp) can make neither.
	_, refused, err = chooseLayering(ctx, capsWithout("test", pb.CapMergeOp, pb.CapMetaDescription))
	if err == nil {
		t.Fatal("a builder without MergeOp and the file op: no error")
	}
	msg = unsupportedMessage(refused)
	for _, want := range []string{"merged layers: ", "stacked layers: ", "meta.description", "docker buildx create --use", `"containerd-snapshotter": true`} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error %q lacks %q", msg, want)
		}
	}
}

func TestSyntaxLine(t *testing.T) {
	for _, c := range []struct {
		file string
		want int
	}{
		{"# syntax=example/frontend\n# flake=.#web\n", 1},
		{"# flake=.#web\n# syntax=example/frontend\n", 2},
		{"# flake=.#web\n", 1},
	} {
		f, err := nixfile.Parse("f", []byte(c.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := syntaxLine(f); got != c.want {
			t.Errorf("%q: syntax line %d, want %d", c.file, got, c.want)
		}
	}
	if syntaxLine(nil) != 1 {
		t.Error("no file: want line 1")
	}
}
