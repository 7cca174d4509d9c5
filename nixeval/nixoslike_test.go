package nixeval

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nixos2docker "github.com/nixos2docker/nixos2docker"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// nixosLikeStage is a context holding testdata/nixoslike: a configuration
// with extendModules and options (nixpkgs' real module system) but without
// our module.
// A stand-in for nixpkgs (testdata/fakenixpkgs) is at ./fakenixpkgs.
func nixosLikeStage(t *testing.T) *stage {
	s := newStage(t)
	lib := filepath.Dir(testenv.NixpkgsLib(t)) // the nixpkgs-lib tree, as NIXPKGS_LIB names it
	for _, dir := range []string{".", "fakenixpkgs"} {
		ctx := filepath.Join(s.layout.ContextDir, dir)
		testenv.CopyTree(t, lib, filepath.Join(ctx, "nixpkgs-lib"), "lib")
		copyFile(t, "../nixos/tests/nixos-options-stub.nix", filepath.Join(ctx, "stub/nixos-options-stub.nix"))
		copyFile(t, "../nixos/tests/stub-pkgs.nix", filepath.Join(ctx, "stub/stub-pkgs.nix"))
	}
	copyFile(t, "testdata/nixoslike/flake.nix", filepath.Join(s.layout.ContextDir, "flake.nix"))
	copyFile(t, "testdata/fakenixpkgs/flake.nix", filepath.Join(s.layout.ContextDir, "fakenixpkgs", "flake.nix"))
	// Our module, for the configuration that imports it itself.
	err := fs.WalkDir(nixos2docker.Module(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(nixos2docker.Module(), p)
		if err != nil {
			return err
		}
		dst := filepath.Join(s.layout.ContextDir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Bodies with mistakes, on a configuration with extendModules, through our
// real module (embedded files) and the body as virtualisation.dockerVariant:
// Nix's own error texts, mapped onto lines of the user's file.
func TestRealNixBodyErrorsMapToTheFile(t *testing.T) {
	if os.Getenv("NIXEVAL_TEST_ROOTFS") == "" {
		needNix(t, "nix", "nix-instantiate", "nix-store")
	}
	const bodyLine = 5 // "# syntax", "# flake", two comment lines, then the body
	tests := []struct {
		name, body string
		line, col  int
		msg        string
		flake      string // default .#web; "-" for none (the body on ./fakenixpkgs)
	}{
		{"syntax error", "{ ... }: {\n  services.nginx.enable = true\n}\n", bodyLine + 2, 1, "syntax error, unexpected '}'", ""},
		{"undefined variable", "{ ... }: {\n  networking.hostName = hostname;\n}\n", bodyLine + 1, 25, "undefined variable 'hostname'", ""},
		{"option that does not exist", "{ ... }: {\n  nonsense.enable = true;\n}\n", bodyLine, 1, "The option `nonsense' does not exist. Definition values:\n- In `web.nixos':\n    {\n      enable = true;", ""},
		{"wrong type", "{\n  networking.hostName = 42;\n}\n", bodyLine, 1, "is not of type", ""},
		{"conflict with the flake", "{\n  virtualisation.dockerImage.name = \"mine\";\n}\n", bodyLine, 1, "The option `virtualisation.dockerImage.name' has conflicting definition values:\n- In `web.nixos': \"mine\"", ".#withmodule"},
		{"undefined variable, body on nixpkgs", "{ ... }:\n{\n  networking.hostName = hostname;\n}\n", bodyLine + 2, 25, "undefined variable 'hostname'", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := nixosLikeStage(t)
			plan := Plan{Flake: ".#web", FlakeLine: 2, Body: tt.body, BodyFile: "web.nixos", BodyLine: bodyLine, System: hostSystem(t)}
			switch tt.flake {
			case "":
			case "-":
				plan.Flake, plan.FlakeLine, plan.Nixpkgs, plan.NixpkgsLine = "", 0, "./fakenixpkgs", 2
			default:
				plan.Flake = tt.flake
			}
			inv, err := s.layout.Build(plan, nixos2docker.Module())
			if err != nil {
				t.Fatal(err)
			}
			stderr, err := s.run(t, inv)
			if err != nil {
				t.Fatalf("run.sh must exit 0 on an evaluation error: %v\n%s", err, stderr)
			}
			res, err := inv.ReadResult(os.ReadFile)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if res.Status != StatusError {
				t.Fatalf("status %q, want error\n%s", res.Status, stderr)
			}
			recordLog(t, s, tt.name, res.Log)
			e := s.layout.MapError(plan, "web.nixos", res.Log)
			if e == nil || e.File != "web.nixos" || e.Line != tt.line || e.Column != tt.col || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("MapError = %v, want web.nixos:%d:%d: …%s…\nlog:\n%s", e, tt.line, tt.col, tt.msg, res.Log)
			}
			if e != nil && strings.Contains(e.Msg, s.layout.Dir) {
				t.Errorf("the message names the stage's body.nix instead of the file: %s", e.Msg)
			}
		})
	}
}

// Valid bodies reach the image: as dockerVariant of a configuration without
// our module (eval.nix adds it), of one that imports it already (not twice),
// and as the whole configuration on nixpkgs (a stand-in lib.nixosSystem).
func TestRealNixBodyReachesTheImage(t *testing.T) {
	if os.Getenv("NIXEVAL_TEST_ROOTFS") != "" {
		t.Skip("runs on this machine's Nix only")
	}
	needNix(t, "nix-instantiate")
	tagBody := "{ ... }: { virtualisation.dockerImage.tag = \"from-the-body\"; }\n"
	for _, tt := range []struct {
		name string
		plan Plan
		want string // [imageName, imageTag]
	}{
		{"flake without our module", Plan{Flake: ".#web", Body: tagBody, BodyLine: 3}, `["web","from-the-body"]`},
		{"flake with our module", Plan{Flake: ".#withmodule", Body: tagBody, BodyLine: 3}, `["from-the-flake","from-the-body"]`},
		{"flake with our module, no body", Plan{Flake: ".#withmodule"}, `["from-the-flake","latest"]`},
		{"body on nixpkgs", Plan{Nixpkgs: "./fakenixpkgs", Body: "{ ... }: { networking.hostName = \"solo\"; }\n", BodyLine: 3}, `["solo","latest"]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := nixosLikeStage(t)
			tt.plan.System = hostSystem(t)
			inv, err := s.layout.Build(tt.plan, nixos2docker.Module())
			if err != nil {
				t.Fatal(err)
			}
			s.writeFiles(t, inv)
			expr := `let e = import "` + filepath.Join(inv.Dir, "eval.nix") + `"; in [ e.spec.imageName e.spec.imageTag ]`
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "nix-instantiate", "-I", "nixos2docker="+inv.Dir, "--eval", "--strict", "--json", "--expr", expr)
			cmd.Env = append(os.Environ(), "NIX_CONF_DIR="+inv.Dir, "XDG_CACHE_HOME="+filepath.Join(s.root, "cache"), "NIX_CONFIG=build-users-group =")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// recordLog keeps a real Nix error log for TestMapErrorRecordedLogs (with
// go test -update), the stage's directories replaced by DefaultLayout's.
func recordLog(t *testing.T, s *stage, name, log string) {
	if !*update {
		return
	}
	version := "host"
	if s.chroot == "" {
		version = hostNixVersion(t)
	} else if out, err := exec.Command("unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c", `mount -t proc proc "$1/proc" && chroot "$1" nix --version`, "sh", s.chroot).Output(); err == nil {
		f := strings.Fields(string(out))
		version = f[len(f)-1]
	}
	log = strings.NewReplacer(s.layout.Dir, DefaultLayout.Dir, s.layout.ContextDir, DefaultLayout.ContextDir, s.root, "/tmp/stage").Replace(log)
	path := filepath.Join("testdata", "logs", "nix-"+version, strings.NewReplacer(", ", "-", " ", "-").Replace(name)+".log")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
}
