package nixeval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// needNix skips (or, under CI, fails) when Nix's tools are not installed.
func needNix(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		testenv.Need(t, tool)
	}
}

// stage is a builder stage on this machine: the invocation's files in a
// temporary Dir, a context directory, an output directory.
type stage struct {
	layout Layout
	root   string
	chroot string // a root filesystem with Nix to run the stage in ("" = this machine)
}

func newStage(t *testing.T) *stage {
	root := t.TempDir()
	l := Layout{Dir: filepath.Join(root, "nixos2docker"), ContextDir: filepath.Join(root, "src"), OutDir: filepath.Join(root, "out")}
	for _, d := range []string{l.Dir, l.ContextDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &stage{layout: l, root: root, chroot: os.Getenv("NIXEVAL_TEST_ROOTFS")}
}

// writeFiles writes the invocation's files into its Dir.
func (s *stage) writeFiles(t *testing.T, inv *Invocation) {
	t.Helper()
	for name, data := range inv.Files {
		p := filepath.Join(inv.Dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// run writes the invocation's files and runs it like the builder stage
// does; it returns the stage's stderr (inv.ReadResult reads what it wrote).
func (s *stage) run(t *testing.T, inv *Invocation) (string, error) {
	t.Helper()
	s.writeFiles(t, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := append([]string{"PATH=/usr/bin:/bin:" + os.Getenv("PATH"), "HOME=" + filepath.Join(s.root, "home")}, inv.Env...)
	env = append(env, "XDG_CACHE_HOME="+filepath.Join(s.root, "cache"), // not this machine's /nix
		"NIXOS2DOCKER_RUN="+filepath.Join(s.root, "run"))
	if s.chroot == "" {
		// This machine's Nix store and users are shared: no build users
		// are made here (in a chroot they are, as in the builder stage).
		env = append(env, "NIXOS2DOCKER_BUILD_USERS=0", "NIX_CONFIG=build-users-group =")
	}
	var cmd *exec.Cmd
	if s.chroot == "" {
		cmd = exec.CommandContext(ctx, inv.Args[0], inv.Args[1:]...)
		cmd.Env = env
	} else {
		// The stage's directories appear at the same paths inside the
		// chroot, so nothing needs rewriting.
		script := `set -e; d=$1; r=$2; shift 2
mount -t proc proc "$d/proc"; mount --rbind /dev "$d/dev"
mkdir -p "$d$r"; mount --bind "$r" "$d$r"
exec chroot "$d" env -i "$@"`
		args := append([]string{"-m", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", s.chroot, s.root}, env...)
		cmd = exec.CommandContext(ctx, "unshare", append(args, inv.Args...)...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	return stderr.String(), runErr
}

// The toy example built by the generated run.sh with this machine's Nix,
// offline, through a path: flake in the context, as the frontend would.
func TestRealNixBuildsToy(t *testing.T) {
	s := newStage(t)
	if s.chroot == "" {
		needNix(t, "nix", "nix-instantiate", "nix-store")
		// The toy imports ../../nixos/lib, so Nix must copy the whole
		// context for "?dir=examples/toy"; Nix 2.8 copies only the dir.
		if v := hostNixVersion(t); olderThan(v, 2, 10) {
			t.Skipf("Nix %s copies only the dir of a ?dir= flake, and the toy needs the whole tree: set NIXEVAL_TEST_ROOTFS to a root filesystem with a newer Nix (Debian sid's nix-bin + busybox-static)", v)
		}
	}
	if _, err := os.Stat(filepath.Join(s.chroot, "/bin/busybox")); err != nil {
		t.Skip("the toy needs /bin/busybox (apt-get install -y busybox-static)")
	}
	if _, err := os.Stat("../examples/toy/flake.nix"); err != nil {
		t.Skip("examples/toy is not in this tree")
	}
	testenv.CopyTree(t, "..", s.layout.ContextDir, "examples/toy", "nixos/lib")
	// A new message each run: part of the closure is really built, not
	// found in the store.
	msg := fmt.Sprintf("built by the nixeval test at %d\n", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(s.layout.ContextDir, "examples/toy/message.txt"), []byte(msg), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := Plan{Flake: ".?dir=examples/toy#toy", System: hostSystem(t)}
	inv, err := s.layout.Build(plan, fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := s.run(t, inv)
	if err != nil {
		t.Fatalf("run.sh: %v\n%s", err, stderr)
	}
	res, err := inv.ReadResult(os.ReadFile)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if res.Status != StatusOK || res.Spec != filepath.Join(s.layout.OutDir, "spec.json") {
		t.Fatalf("result %+v\n%s", res, stderr)
	}
	specData, err := os.ReadFile(res.Spec)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := imagespec.Parse(specData)
	if err != nil {
		t.Fatalf("spec.json: %v", err)
	}
	if spec.ImageName != "toy" || spec.System != plan.System {
		t.Errorf("spec name %q system %q", spec.ImageName, spec.System)
	}
	// The stage writes its status, the spec and the list of its closure and
	// copies no store path: the closure stays in the store, where the layer
	// steps read it. The list is Nix's: exactly the spec's closure here.
	entries, err := os.ReadDir(s.layout.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	if strings.Join(out, " ") != "closure spec.json status" {
		t.Errorf("the stage wrote %v, want only closure, spec.json and status", out)
	}
	closure := slices.Clone(res.Closure)
	slices.Sort(closure)
	if want := spec.Paths(); !slices.Equal(closure, want) {
		t.Errorf("the stage's closure list\n%s\nwant the spec's\n%s", strings.Join(closure, "\n"), strings.Join(want, "\n"))
	}
	for _, p := range spec.Closure {
		fi, err := os.Lstat(filepath.Join(s.chroot, p.Path))
		if err != nil {
			t.Errorf("closure path not in the store: %v", err)
			continue
		}
		if strings.Contains(p.Path, "-toy-blob") && fi.Size() != 64<<20 {
			t.Errorf("%s: %d bytes, want 64 MiB", p.Path, fi.Size())
		}
	}
	if strings.Contains(stderr, "copying") || !strings.Contains(stderr, "building '/nix/store/") ||
		!strings.Contains(stderr, "-toy-message.drv") || strings.Contains(stderr, "--add-root") {
		t.Errorf("the stage does not say what it does, copies, or warns:\n%s", stderr)
	}
	found := false
	for _, p := range spec.Closure {
		if strings.HasSuffix(p.Path, "-toy-message") {
			data, err := os.ReadFile(filepath.Join(s.chroot, p.Path))
			found = err == nil && string(data) == msg
		}
	}
	if !found {
		t.Errorf("the toy-message in the store is not this run's message")
	}

	// The targets of the same flake.
	tinv, err := s.layout.Targets(Plan{Flake: ".?dir=examples/toy", System: plan.System}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.layout.OutDir); err != nil {
		t.Fatal(err)
	}
	stderr, err = s.run(t, tinv)
	if err != nil {
		t.Fatalf("run.sh targets: %v\n%s", err, stderr)
	}
	res, err = tinv.ReadResult(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Targets, ",") != "toy,toy-aarch64-linux,toy-x86_64-linux" {
		t.Errorf("targets %q", res.Targets)
	}
	var listed []string
	if tj, err := os.ReadFile(filepath.Join(s.layout.OutDir, "targets.json")); err != nil || json.Unmarshal(tj, &listed) != nil || len(listed) != 3 {
		t.Errorf("targets.json: %v %q", err, listed)
	}
}

// Evaluation errors become results the frontend maps onto the file: an
// unknown target, several targets and none chosen, a body on a
// configuration that is not NixOS, a configuration for another system, a
// flake without nixosConfigurations.
func TestRealNixEvaluationErrors(t *testing.T) {
	if os.Getenv("NIXEVAL_TEST_ROOTFS") == "" {
		needNix(t, "nix", "nix-instantiate", "nix-store")
	}
	sys := hostSystem(t)
	other := "arm"
	if sys == "aarch64-linux" {
		other = "x86"
	}
	module := fstest.MapFS{"nixos/docker-image.nix": {Data: []byte("{ ... }: { }\n")}}
	tests := []struct {
		name string
		plan Plan
		line int
		msg  string
	}{
		{"unknown target", Plan{Flake: "./flake", Target: "web", FlakeLine: 2}, 2,
			`unknown target "web": the flake path:SRC/flake has these NixOS configurations: "arm", "here", "x86"`},
		{"unknown target from the fragment", Plan{Flake: "./flake#nixosConfigurations.web", FlakeLine: 3}, 3, `unknown target "web"`},
		{"several targets, none chosen", Plan{Flake: "./flake", FlakeLine: 2}, 2,
			`has 3 NixOS configurations ("arm", "here", "x86"): choose one with --target`},
		{"body on a configuration without extendModules", Plan{Flake: "./flake#here", FlakeLine: 1, Body: "{ }\n", BodyLine: 3}, 3,
			"the body needs a NixOS configuration to extend"},
		{"configuration for another system", Plan{Flake: "./flake#" + other, FlakeLine: 2}, 2,
			"but this build is for " + sys},
		{"no nixosConfigurations", Plan{Flake: "path:noconfigs", FlakeLine: 2}, 2, "has no nixosConfigurations output"},
		{"no flake.nix", Plan{Flake: ".?dir=nothing#x", FlakeLine: 4}, 4, "flake.nix"},
		// The log crosses plan.json, Nix, run.sh's JSON writer and
		// ReadResult: quotes, backslashes, UTF-8.
		{"quotes and backslashes in the log", Plan{Flake: "./flake", Target: "we\"b\\x y ü", FlakeLine: 2}, 2,
			`unknown target "we"b\x y ü": the flake`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStage(t)
			for _, d := range []string{"flake", "noconfigs"} {
				data, err := os.ReadFile(filepath.Join("testdata", d, "flake.nix"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(s.layout.ContextDir, d), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(s.layout.ContextDir, d, "flake.nix"), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			tt.plan.System = sys
			inv, err := s.layout.Build(tt.plan, module)
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
				t.Fatalf("status %q, want error", res.Status)
			}
			e := s.layout.MapError(tt.plan, "nixos.docker", res.Log)
			want := strings.ReplaceAll(tt.msg, "SRC", s.layout.ContextDir)
			if e == nil || e.Line != tt.line || e.Column != 1 || !strings.Contains(e.Msg, want) {
				t.Errorf("MapError = %v, want line %d with %q\nlog:\n%s", e, tt.line, want, res.Log)
			}
		})
	}
}

// olderThan says whether version v (like "2.8.0") is older than major.minor.
func olderThan(v string, major, minor int) bool {
	var ma, mi int
	fmt.Sscanf(v, "%d.%d", &ma, &mi)
	return ma < major || ma == major && mi < minor
}

// A fetch failure is not a result: the step fails (so BuildKit caches
// nothing) and says why and which secrets carry credentials. Refused
// connections, and a server that wants credentials, for a tarball and for a
// git repository (git asks for a user name that nobody types in).
func TestRealNixFetchFailureFailsTheStep(t *testing.T) {
	if os.Getenv("NIXEVAL_TEST_ROOTFS") == "" {
		needNix(t, "nix", "nix-instantiate", "nix-store")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
		http.Error(w, "credentials, please", http.StatusUnauthorized)
	}))
	defer srv.Close()
	for _, tc := range []struct{ name, flake, says string }{
		// Nothing listens on port 9 of the loopback: refused at once.
		{"refused", "http://127.0.0.1:9/flake.tar.gz#x", "127.0.0.1:9"},
		{"tarball 401", srv.URL + "/flake.tar.gz#x", "401"},
		{"git 401", "git+" + srv.URL + "/flake.git#x", strings.TrimPrefix(srv.URL, "http://")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStage(t)
			plan := Plan{Flake: tc.flake, System: hostSystem(t), NixConfig: "download-attempts = 1\nconnect-timeout = 2"}
			inv, err := s.layout.Build(plan, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !inv.Network {
				t.Error("a remote flake needs the network")
			}
			stderr, err := s.run(t, inv)
			if err == nil {
				res, _ := inv.ReadResult(os.ReadFile)
				t.Fatalf("run.sh succeeded on a fetch failure; result %+v\n%s", res, stderr)
			}
			if _, err := os.Stat(filepath.Join(inv.OutDir, StatusFile)); err == nil {
				t.Errorf("a status was written on a fetch failure")
			}
			if !strings.Contains(stderr, tc.says) || !strings.Contains(stderr, "nothing is cached") {
				t.Errorf("stderr does not say what failed (%q):\n%s", tc.says, stderr)
			}
			for _, sec := range Secrets {
				if !strings.Contains(stderr, sec.ID+": ") {
					t.Errorf("stderr does not name the secret %s:\n%s", sec.ID, stderr)
				}
			}
		})
	}
}

func hostNixVersion(t *testing.T) string {
	out, err := exec.Command("nix", "--version").Output()
	if err != nil {
		t.Fatalf("nix --version: %v", err)
	}
	f := strings.Fields(string(out))
	return f[len(f)-1]
}

func hostSystem(t *testing.T) string {
	out, err := exec.Command("nix-instantiate", "--eval", "--expr", "builtins.currentSystem").Output()
	if err != nil {
		t.Fatalf("nix-instantiate: %v", err)
	}
	return strings.Trim(strings.TrimSpace(string(out)), `"`)
}

// --call targets: the names of a flake's nixosConfigurations.
func TestRealNixTargets(t *testing.T) {
	if os.Getenv("NIXEVAL_TEST_ROOTFS") == "" {
		needNix(t, "nix", "nix-instantiate")
	}
	s := newStage(t)
	copyFile(t, "testdata/flake/flake.nix", filepath.Join(s.layout.ContextDir, "flake.nix"))
	inv, err := s.layout.Targets(Plan{Flake: ".#ignored", Body: "{ }", System: hostSystem(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := inv.Files["body.nix"]; ok {
		t.Error("listing targets writes no body")
	}
	stderr, err := s.run(t, inv)
	if err != nil {
		t.Fatalf("run.sh targets: %v\n%s", err, stderr)
	}
	res, err := inv.ReadResult(os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusOK || strings.Join(res.Targets, ",") != "arm,here,x86" {
		t.Errorf("result %+v\n%s", res, stderr)
	}
	var listed []string
	if tj, err := os.ReadFile(filepath.Join(s.layout.OutDir, "targets.json")); err != nil || json.Unmarshal(tj, &listed) != nil || strings.Join(listed, ",") != "arm,here,x86" {
		t.Errorf("targets.json: %v %q", err, listed)
	}
}
