package nixeval

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/nixos2docker/nixos2docker/nixfile"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/golden")

// testModule stands in for the embedded module files.
var testModule = fstest.MapFS{
	"nixos/docker-image.nix":   {Data: []byte("{ ... }: { }\n")},
	"nixos/lib/image-spec.nix": {Data: []byte("{ }\n")},
	"patches/systemd/series":   {Data: []byte("0001.patch\n")},
}

func TestParseFlakeRef(t *testing.T) {
	for _, tt := range []struct {
		ref, in string // in: the reference with the context at /src
		want    FlakeRef
	}{
		{".", "path:/src", FlakeRef{Scheme: "path:", Dir: "."}},
		{".#web", "path:/src", FlakeRef{Scheme: "path:", Dir: ".", Fragment: "web", Attr: "web"}},
		{".?dir=examples/toy#toy", "path:/src?dir=examples/toy", FlakeRef{Scheme: "path:", Dir: ".", Query: "dir=examples/toy", Fragment: "toy", Attr: "toy"}},
		{"./sub/../sys#nixosConfigurations.web", "path:/src/sys", FlakeRef{Scheme: "path:", Dir: "sys", Fragment: "nixosConfigurations.web", Attr: "web"}},
		{`path:.#nixosConfigurations."web.example.com"`, "path:/src", FlakeRef{Scheme: "path:", Dir: ".", Fragment: `nixosConfigurations."web.example.com"`, Attr: "web.example.com"}},
		{"path:sub?dir=x", "path:/src/sub?dir=x", FlakeRef{Scheme: "path:", Dir: "sub", Query: "dir=x"}},
		{"path:sub?dir=..", "path:/src/sub?dir=..", FlakeRef{Scheme: "path:", Dir: "sub", Query: "dir=.."}},
		{"git+file:.#a", "git+file:/src", FlakeRef{Scheme: "git+file:", Dir: ".", Fragment: "a", Attr: "a"}},
		{"github:o/r#x", "github:o/r", FlakeRef{URL: "github:o/r", Fragment: "x", Attr: "x", Remote: true}},
		{"github:NixOS/nixpkgs/nixos-25.11", "github:NixOS/nixpkgs/nixos-25.11", FlakeRef{URL: "github:NixOS/nixpkgs/nixos-25.11", Remote: true}},
		{"git+https://example.com/r.git?ref=main#h", "git+https://example.com/r.git?ref=main", FlakeRef{URL: "git+https://example.com/r.git?ref=main", Fragment: "h", Attr: "h", Remote: true}},
		{"git+ssh://git@example.com/r.git", "git+ssh://git@example.com/r.git", FlakeRef{URL: "git+ssh://git@example.com/r.git", Remote: true}},
		{"nixpkgs", "nixpkgs", FlakeRef{URL: "nixpkgs", Remote: true}},
	} {
		got, err := ParseFlakeRef(tt.ref)
		if err != nil || got != tt.want || got.In("/src") != tt.in {
			t.Errorf("ParseFlakeRef(%q) = %+v (%s), %v; want %+v (%s)", tt.ref, got, got.In("/src"), err, tt.want, tt.in)
		}
	}
	for ref, msg := range map[string]string{
		"/home/me/flake#x":       "absolute path",
		"path:/etc#x":            "absolute path",
		"../other#x":             "outside the build context",
		"./a/../../b":            "outside the build context",
		"path:":                  "has no path",
		".#":                     "",
		".#nixosConfigurations.": "names no NixOS configuration",
		"":                       "empty",
		// Containment: dir=, percent-encoding, the other local schemes.
		".?dir=../..":           "outside the build context",
		"path:.?dir=..%2F..":    "outside the build context",
		"path:.?dir=/etc":       "outside the build context",
		"path:%2e%2e":           "outside the build context",
		"path:%2Fetc":           "absolute path",
		"file:/etc":             "absolute path",
		"file:///etc/passwd":    "absolute path",
		"tarball+file:/x":       "absolute path",
		"tarball+file:x.tar.gz": "builder's file system",
		"#web":                  "no flake before the fragment",
		".#we\x01b":             "control characters",
		// Credentials belong in secrets.
		"git+https://user:TOKEN@example.com/r.git": "credentials",
		"https://TOKEN@example.com/f.tar.gz":       "credentials",
		"github:o/r?access_token=TOKEN":            "credentials",
		"git+https://example.com/r.git?Token=T":    "credentials",
	} {
		_, err := ParseFlakeRef(ref)
		if ref == ".#" {
			if err != nil {
				t.Errorf("ParseFlakeRef(%q): %v (an empty fragment is no fragment)", ref, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseFlakeRef(%q) error %v, want %q", ref, err, msg)
		}
	}
}

func parse(t *testing.T, src string) *nixfile.File {
	t.Helper()
	f, err := nixfile.Parse("nixos.docker", []byte(src), nixfile.WithFlakeOverride("(tests)"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

var amd64 = ocispecs.Platform{OS: "linux", Architecture: "amd64"}

func TestNewPlan(t *testing.T) {
	f := parse(t, "# syntax=x\n# flake=.#web\n# nixpkgs=github:NixOS/nixpkgs\n{ services.nginx.enable = true; }\n")
	p, err := NewPlan(f, Options{Platform: amd64, Substituters: true})
	if err != nil {
		t.Fatal(err)
	}
	want := Plan{Flake: ".#web", Nixpkgs: "github:NixOS/nixpkgs", Body: "{ services.nginx.enable = true; }\n",
		BodyFile: "nixos.docker", BodyLine: 4, FlakeLine: 2, NixpkgsLine: 3, System: "x86_64-linux", Substituters: true,
		FlakeRef: FlakeRef{Scheme: "path:", Dir: ".", Fragment: "web", Attr: "web"}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got  %+v\nwant %+v", p, want)
	}

	// Build arguments override the directives (and then errors point at line 1).
	p, err = NewPlan(f, Options{Flake: "github:o/r#db", Nixpkgs: "github:NixOS/nixpkgs/nixos-25.11", Target: "x", NixConfig: "cores = 2",
		Platform: ocispecs.Platform{OS: "linux", Architecture: "arm64"}, Emulated: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Flake != "github:o/r#db" || p.FlakeLine != 0 || p.Nixpkgs != "github:NixOS/nixpkgs/nixos-25.11" || p.NixpkgsLine != 0 ||
		p.Target != "x" || p.System != "aarch64-linux" || p.NixConfig != "cores = 2" || !p.Emulated {
		t.Errorf("overrides: %+v", p)
	}
}

func TestNewPlanErrors(t *testing.T) {
	for _, tt := range []struct {
		name, src string
		o         Options
		line      int
		msg       string
	}{
		{"no flake and no nixpkgs", "# syntax=x\n\n{ ... }: { }\n", Options{Platform: amd64}, 3, "no flake and no nixpkgs"},
		{"nothing at all", "# syntax=x\n", Options{Platform: amd64}, 1, "empty file"},
		{"bad flake directive", "# syntax=x\n# flake=/home/me/flake#web\n", Options{Platform: amd64}, 2, "absolute path"},
		{"bad flake build arg", "# flake=.#web\n", Options{Flake: "../up#web", Platform: amd64}, 0, `build argument NIXOS_FLAKE="../up#web": "../up" is outside the build context`},
		{"bad nixpkgs build arg", "{ }\n", Options{Nixpkgs: "file:///etc", Platform: amd64}, 0, `build argument NIXPKGS="file:///etc"`},
		{"token in the flake build arg", "{ }\n", Options{Flake: "github:o/r?access_token=T#x", Platform: amd64}, 0, "--secret"},
		{"token in NIX_CONFIG", "# flake=.#web\n", Options{NixConfig: "cores = 2\n access-tokens = github.com=T", Platform: amd64}, 0, "build argument NIX_CONFIG: access-tokens holds credentials"},
		{"control characters in the target", "# flake=.#web\n", Options{Target: "web\x1b[31m", Platform: amd64}, 0, "control characters"},
		{"a fragment without a flake", "# flake=#web\n", Options{Platform: amd64}, 1, "no flake before the fragment"},
		{"nixpkgs with a fragment", "# nixpkgs=github:NixOS/nixpkgs#hello\n{ }\n", Options{Platform: amd64}, 1, "no #fragment"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPlan(parse(t, tt.src), tt.o)
			var e *nixfile.Error
			if tt.line == 0 {
				// About a build argument: not located in the file.
				if err == nil || errors.As(err, &e) || !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("got %v, want an error naming the argument: …%s…", err, tt.msg)
				}
				return
			}
			if !errors.As(err, &e) || e.Line != tt.line || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("got %v, want line %d: …%s…", err, tt.line, tt.msg)
			}
		})
	}
	_, err := NewPlan(parse(t, "# flake=.#web\n"), Options{Platform: ocispecs.Platform{OS: "linux", Architecture: "s390x"}})
	if err == nil || !strings.Contains(err.Error(), "unsupported platform linux/s390x") {
		t.Errorf("unsupported platform: %v", err)
	}
}

// Golden files: what the builder stage gets for representative plans.
func TestGolden(t *testing.T) {
	cases := []struct {
		name    string
		targets bool
		plan    Plan
	}{
		{"flake-target", false, Plan{Flake: ".#web", System: "x86_64-linux", Substituters: true}},
		{"toy-offline", false, Plan{Flake: ".?dir=examples/toy#toy", System: "x86_64-linux"}},
		{"flake-body", false, Plan{Flake: "github:o/r#x", Target: "web", Body: "{ services.nginx.enable = true; }", BodyLine: 3,
			System: "aarch64-linux", Substituters: true, Emulated: true, NixConfig: "extra-substituters = https://cache.example.com\nextra-trusted-public-keys = cache.example.com-1:AAAA"}},
		{"nixpkgs-body", false, Plan{Nixpkgs: "github:NixOS/nixpkgs/nixos-25.11", Body: "{ pkgs, ... }: {\n  environment.systemPackages = [ pkgs.hello ];\n}\n", BodyLine: 2,
			System: "x86_64-linux", Substituters: true}},
		{"targets", true, Plan{Flake: ".#ignored", Target: "ignored", Body: "{ }", System: "x86_64-linux"}},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			build := Build
			if tt.targets {
				build = Targets
			}
			inv, err := build(tt.plan, testModule)
			if err != nil {
				t.Fatal(err)
			}
			// The module files and the fixed files go in unchanged.
			for name, f := range testModule {
				if string(inv.Files[name]) != string(f.Data) {
					t.Errorf("module file %s: got %q", name, inv.Files[name])
				}
			}
			if string(inv.Files["eval.nix"]) != string(evalNix) || string(inv.Files["run.sh"]) != string(runSh) {
				t.Error("eval.nix or run.sh differs from the embedded one")
			}
			var b strings.Builder
			b.WriteString("# files: " + strings.Join(inv.SortedFiles(), " ") + "\n")
			b.WriteString("# args: " + strings.Join(inv.Args, " ") + "\n")
			b.WriteString("# env: " + strings.Join(inv.Env, " ") + "\n")
			b.WriteString("# dirs: " + inv.Dir + " " + inv.ContextDir + " " + inv.OutDir + "\n")
			b.WriteString("# network: " + map[bool]string{true: "yes", false: "no"}[inv.Network] + "\n")
			for _, name := range []string{"plan.json", "nix.conf", "body.nix"} {
				if data, ok := inv.Files[name]; ok {
					b.WriteString("=== " + name + "\n" + string(data))
				}
			}
			golden(t, filepath.Join("testdata", "golden", tt.name+".txt"), b.String())
		})
	}
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		plan Plan
		msg  string
	}{
		{"nothing", Plan{System: "x86_64-linux"}, "nothing to build"},
		{"no nixpkgs", Plan{Body: "{ }", System: "x86_64-linux"}, "no nixpkgs"},
		{"system", Plan{Flake: ".#a", System: "armv7l-linux"}, "unsupported Nix system"},
		{"bad ref", Plan{Flake: "/abs#a", System: "x86_64-linux"}, "absolute path"},
		{"body without the module", Plan{Flake: ".#a", Body: "{ }", System: "x86_64-linux"}, "lack nixos/docker-image.nix"},
	} {
		_, err := Build(tt.plan, fstest.MapFS{})
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.msg)
		}
	}
	if _, err := Targets(Plan{Body: "{ }", Nixpkgs: "x", System: "x86_64-linux"}, nil); err == nil || !strings.Contains(err.Error(), "no flake") {
		t.Errorf("Targets without a flake: %v", err)
	}
	// A flake without a body needs no module files (the configuration may
	// bring its own dockerImageSpec, like the toy).
	if _, err := Build(Plan{Flake: ".#toy", System: "x86_64-linux"}, nil); err != nil {
		t.Errorf("flake without module files: %v", err)
	}
}

func TestReadResult(t *testing.T) {
	build := &Invocation{Mode: ModeBuild, OutDir: "/out"}
	list := &Invocation{Mode: ModeTargets, OutDir: "/out"}
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			data, ok := m[name]
			if !ok {
				return nil, fs.ErrNotExist
			}
			return []byte(data), nil
		}
	}
	r, err := build.ReadResult(files(map[string]string{"/out/status": "ok\n", "/out/closure": "/nix/store/a\n/nix/store/b\n"}))
	if err != nil || r.Status != StatusOK || r.Spec != "/out/spec.json" || !reflect.DeepEqual(r.Closure, []string{"/nix/store/a", "/nix/store/b"}) {
		t.Errorf("ok: %+v %v", r, err)
	}
	r, err = list.ReadResult(files(map[string]string{"/out/status": "ok\n", "/out/targets.json": `["a","b"]`}))
	if err != nil || !reflect.DeepEqual(r.Targets, []string{"a", "b"}) {
		t.Errorf("targets: %+v %v", r, err)
	}
	r, err = build.ReadResult(files(map[string]string{"/out/status": "error\n", "/out/log": "error: \"x\" \\ ü\n"}))
	if err != nil || r.Status != StatusError || r.Log != "error: \"x\" \\ ü\n" {
		t.Errorf("error: %+v %v", r, err)
	}
	for _, c := range []struct {
		inv   *Invocation
		files map[string]string
		msg   string
	}{
		{build, map[string]string{}, "reading the builder stage's status"},
		{build, map[string]string{"/out/status": "ok\n"}, "reading the builder stage's closure"},
		{build, map[string]string{"/out/status": "error\n"}, "reading the builder stage's log"},
		{build, map[string]string{"/out/status": "error\n", "/out/log": "\n"}, "empty log"},
		{build, map[string]string{"/out/status": "maybe\n"}, `unknown status "maybe"`},
		{list, map[string]string{"/out/status": "ok\n", "/out/targets.json": `{"a":1}`}, "cannot unmarshal"},
	} {
		if _, err := c.inv.ReadResult(files(c.files)); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("ReadResult(%v) error %v, want %q", c.files, err, c.msg)
		}
	}
}
