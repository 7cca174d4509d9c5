package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBadInputs: wrong input ends the build with a clear error, and leaves no build container
// running in buildkitd.
func TestBadInputs(t *testing.T) {
	e := requireEnv(t)
	dir := e.toyContext(t)
	// A stand-in for nixpkgs whose nixosSystem imports the modules, so Nix parses the body, and
	// then stops: no NixOS is needed to see a syntax error in the user's file.
	fake := filepath.Join(dir, "fakenixpkgs", "flake.nix")
	if err := os.MkdirAll(filepath.Dir(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fake, []byte(`{
  outputs = { self }: {
    lib.nixosSystem = { modules, ... }:
      builtins.deepSeq (map (m: if builtins.isPath m then import m else m) modules)
        (throw "fake nixpkgs: no NixOS here");
  };
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		file  string
		attrs map[string]string
		// want are patterns the error must match, each naming what went wrong.
		want []*regexp.Regexp
	}{{
		name: "unknown target",
		file: e.toyFile(),
		// target replaces toyAttrs' own.
		attrs: map[string]string{"target": "no-such-config"},
		want: []*regexp.Regexp{
			regexp.MustCompile(`no-such-config`),
			regexp.MustCompile(`\btoy\b`), // the configurations there are
		},
	}, {
		name: "nix error in the body",
		// The body is the whole configuration, on the stand-in nixpkgs; line 5 is broken.
		file: e.syntaxFile("# nixpkgs=./fakenixpkgs\n{ ... }: {\n  networking.hostName = \"bad\";\n  broken = ;\n}\n"),
		want: []*regexp.Regexp{
			regexp.MustCompile(`(?i)syntax error|unexpected`),
			regexp.MustCompile(`(?i)(line 5\b|:5(:\d+)?\b)`),
		},
	}, {
		name:  "missing builder image",
		file:  e.toyFile(),
		attrs: toyAttrs(map[string]string{"build-arg:" + argBuilder: e.Registry + "/nixos2docker/no-such-builder:missing"}),
		want: []*regexp.Regexp{
			regexp.MustCompile(`no-such-builder`),
			regexp.MustCompile(`(?i)not found|failed to resolve`),
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Generous: a hang must end the test, a slow failure is reported by its time.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			res, err := e.solve(ctx, t, buildRequest{ContextDir: dir, File: tc.file, Attrs: tc.attrs})
			if err == nil {
				t.Fatalf("the build succeeded; want an error matching %v", tc.want)
			}
			took := time.Duration(0)
			if res != nil {
				took = res.Took
			}
			t.Logf("failed after %s with: %s", took.Round(time.Millisecond), firstLines(err.Error(), 6))
			for _, re := range tc.want {
				if !re.MatchString(err.Error()) {
					t.Errorf("error does not match %s:\n%v", re, err)
				}
			}
			if left := e.runningBuildContainers(ctx, t); len(left) > 0 {
				t.Errorf("build containers still running after the failure: %v", left)
			}
		})
	}
}

// runningBuildContainers lists the runc containers of buildkitd's OCI worker (BUILDKIT_ROOT is
// set by hack/env). Build steps end with their build; a failed build must not leave one.
func (e *testEnv) runningBuildContainers(ctx context.Context, t *testing.T) []string {
	t.Helper()
	root := os.Getenv("BUILDKIT_ROOT")
	if root == "" {
		t.Log("BUILDKIT_ROOT not set: not checking for leftover build containers")
		return nil
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "runc-*", "executor"))
	var left []string
	for _, d := range dirs {
		out, err := exec.CommandContext(ctx, "runc", "--root", d, "list", "-q").Output()
		if err != nil {
			t.Errorf("runc --root %s list: %v", d, err)
			continue
		}
		left = append(left, strings.Fields(string(out))...)
	}
	return left
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
