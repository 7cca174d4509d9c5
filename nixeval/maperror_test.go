package nixeval

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Real Nix error logs (Nix 2.8 and 2.34, recorded by
// TestRealNixBodyErrorsMapToTheFile with -update), mapped without Nix.
func TestMapErrorRecordedLogs(t *testing.T) {
	const bodyLine = 5
	want := map[string]struct {
		line, col int
		msg       string
	}{
		"syntax-error":                       {bodyLine + 2, 1, "syntax error, unexpected '}', expecting ';'"},
		"undefined-variable":                 {bodyLine + 1, 25, "undefined variable 'hostname'"},
		"option-that-does-not-exist":         {bodyLine, 1, "The option `nonsense' does not exist. Definition values:\n- In `web.nixos':"},
		"wrong-type":                         {bodyLine, 1, "A definition for option `networking.hostName' is not of type `string matching"},
		"conflict-with-the-flake":            {bodyLine, 1, "The option `virtualisation.dockerImage.name' has conflicting definition values:\n- In `web.nixos': \"mine\""},
		"undefined-variable-body-on-nixpkgs": {bodyLine + 2, 25, "undefined variable 'hostname'"},
	}
	dirs, err := filepath.Glob("testdata/logs/nix-*")
	if err != nil || len(dirs) < 2 {
		t.Fatalf("recorded logs: %v %v (want Nix 2.8 and 2.34)", dirs, err)
	}
	plan := Plan{Flake: ".#web", FlakeLine: 2, BodyFile: "web.nixos", BodyLine: bodyLine}
	for _, dir := range dirs {
		for name, w := range want {
			data, err := os.ReadFile(filepath.Join(dir, name+".log"))
			if err != nil {
				t.Error(err)
				continue
			}
			e := MapError(plan, "web.nixos", string(data))
			if e == nil || e.Line != w.line || e.Column != w.col || !strings.Contains(e.Msg, w.msg) {
				t.Errorf("%s/%s: MapError = %v, want web.nixos:%d:%d: …%s…", dir, name, e, w.line, w.col, w.msg)
				continue
			}
			for _, noise := range []string{"/nixos2docker/", "--show-trace", "while evaluating", "virtualisation.dockerVariant"} {
				if strings.Contains(e.Msg, noise) {
					t.Errorf("%s/%s: message has %q:\n%s", dir, name, noise, e.Msg)
				}
			}
			for _, line := range strings.Split(e.Msg, "\n") {
				if excerptRe.MatchString(line) {
					t.Errorf("%s/%s: message quotes source lines:\n%s", dir, name, e.Msg)
				}
			}
		}
	}
}

func TestMapErrorTagsAndUnmappable(t *testing.T) {
	plan := Plan{Flake: "./sys#web", FlakeLine: 2, NixpkgsLine: 3, BodyLine: 6}
	for _, tt := range []struct {
		name, log string
		plan      Plan
		line      int // 0: nil
		msg       string
	}{
		{"flake tag", "error: [nixos2docker:flake] unknown target \"x\": the flake path:/src/sys has these NixOS configurations: \"a\"\n", plan, 2, `unknown target "x"`},
		{"tag inside a trace", "error:\n       … while evaluating\n\n       error: [nixos2docker:body] the body needs a NixOS configuration to extend\n", plan, 6, "the body needs"},
		{"nixpkgs tag", "error: [nixos2docker:nixpkgs] path:/src/np is not nixpkgs: it has no lib.nixosSystem\n", plan, 3, "is not nixpkgs"},
		{"platform tag with the flake from a build arg", "error: [nixos2docker:platform] the configuration is for aarch64-linux, but this build is for x86_64-linux: …\n", Plan{Flake: "github:o/r"}, 1, "aarch64-linux"},
		{"flake registry, body-only file", "error: cannot find flake 'flake:nixpkgs' in the flake registries\n", Plan{Nixpkgs: "nixpkgs", NixpkgsLine: 4, BodyLine: 5}, 4, "flake registries"},
		{"missing flake.nix", "error: getting status of '/nix/store/aaa-source/sub/flake.nix': No such file or directory\n", plan, 2, "flake.nix"},
		{"colours are dropped", "\x1b[31;1merror:\x1b[0m syntax error, unexpected end of file\n       at /nixos2docker/body.nix:1:2:\n", plan, 6, "unexpected end of file"},
		{"an error elsewhere", "error: builder for '/nix/store/x.drv' failed with exit code 1\n", plan, 0, ""},
		{"nothing at all", "", plan, 0, ""},
	} {
		e := MapError(tt.plan, "f", tt.log)
		if tt.line == 0 {
			if e != nil {
				t.Errorf("%s: MapError = %v, want nil", tt.name, e)
			}
			continue
		}
		if e == nil || e.File != "f" || e.Line != tt.line || !strings.Contains(e.Msg, tt.msg) || strings.Contains(e.Msg, "[nixos2docker:") {
			t.Errorf("%s: MapError = %v, want f:%d: …%s…", tt.name, e, tt.line, tt.msg)
		}
	}
}
