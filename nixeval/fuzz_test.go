package nixeval

import (
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos2docker/nixos2docker/nixfile"
)

// FuzzParseFlakeRef: a reference into the build context never leaves it,
// whatever its dir=, percent-encoding or scheme.
func FuzzParseFlakeRef(f *testing.F) {
	for _, s := range []string{".", ".#web", ".?dir=a/../b#x", "path:%2e%2e", "path:.?dir=..%2F..", "file:/etc", "github:o/r#x",
		"git+file:sub?dir=x&ref=main", "./a/./b/..", "git+https://u:p@h/r", "#web", "path:.?dir=%2e%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		r, err := ParseFlakeRef(ref)
		if err != nil || r.Remote {
			return
		}
		in := r.In("/src")
		if r.Scheme != "path:" && r.Scheme != "git+file:" {
			t.Fatalf("%q: local scheme %q", ref, r.Scheme)
		}
		p := strings.TrimPrefix(in, r.Scheme)
		p, _, _ = strings.Cut(p, "?")
		if c := path.Clean(p); c != "/src" && !strings.HasPrefix(c, "/src/") {
			t.Fatalf("%q resolves to %q, outside /src", ref, in)
		}
		for _, d := range strings.Split(r.Query, "&") {
			if v, ok := strings.CutPrefix(d, "dir="); ok && !strings.Contains(v, "%") {
				if c := path.Join(p, v); c != "/src" && !strings.HasPrefix(c, "/src/") {
					t.Fatalf("%q: dir=%s leaves /src (%s)", ref, v, c)
				}
			}
		}
	})
}

// FuzzPlan: a file and build arguments give a located error or a plan whose
// stage can be made, with a plan.json that decodes.
func FuzzPlan(f *testing.F) {
	f.Add([]byte("# flake=.#web\n{ }\n"), "", "", "")
	f.Add([]byte("# nixpkgs=github:NixOS/nixpkgs\n{ }\n"), "", "", "web")
	f.Add([]byte("{ }\n"), ".?dir=x#y", "nixpkgs", "")
	f.Add([]byte("# flake=.#web\n"), "", "", "cores = 2")
	f.Fuzz(func(t *testing.T, data []byte, flake, nixpkgs, nixConfig string) {
		file, err := nixfile.Parse("f", data, nixfile.WithFlakeOverride(flake))
		if err != nil {
			return
		}
		p, err := NewPlan(file, Options{Flake: flake, Nixpkgs: nixpkgs, NixConfig: nixConfig, Platform: amd64})
		if err != nil {
			return
		}
		inv, err := Build(p, testModule)
		if err != nil {
			t.Fatalf("a plan NewPlan made has no stage: %v\n%+v", err, p)
		}
		var pj planJSON
		if err := json.Unmarshal(inv.Files["plan.json"], &pj); err != nil {
			t.Fatalf("plan.json: %v", err)
		}
	})
}

// FuzzMapError: any log maps to nothing or to a position in the file.
func FuzzMapError(f *testing.F) {
	logs, _ := filepath.Glob("testdata/logs/*/*.log")
	for _, p := range logs {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(string(data))
		}
	}
	f.Add("error: [nixos2docker:body] x")
	plan := Plan{Flake: ".#web", FlakeLine: 2, Body: "{ }\n", BodyLine: 4}
	f.Fuzz(func(t *testing.T, log string) {
		e := MapError(plan, "f", log)
		if e != nil && (e.Line < 1 || e.Column < 1 || e.File != "f") {
			t.Fatalf("%+v", e)
		}
		_ = FetchFailure(log)
	})
}
