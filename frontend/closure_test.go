package frontend

import (
	"strings"
	"testing"

	"github.com/nixos2docker/nixos2docker/imagespec"
)

// A spec may list only its own closure as Nix knows it: the layer steps copy
// what it lists from a store cache other builds share.
func TestInClosure(t *testing.T) {
	spec := &imagespec.Spec{Closure: []imagespec.Path{{Path: "/nix/store/a"}, {Path: "/nix/store/b"}}}
	if err := inClosure(spec, []string{"/nix/store/b", "/nix/store/a", "/nix/store/c"}); err != nil {
		t.Errorf("a spec within its closure: %v", err)
	}
	err := inClosure(spec, []string{"/nix/store/a"})
	if err == nil || !strings.Contains(err.Error(), "closure[1] is /nix/store/b") {
		t.Errorf("a spec listing a path outside its closure: %v", err)
	}
}
