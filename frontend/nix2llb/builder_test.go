package nix2llb_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/nixeval"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

func testBuilder() nix2llb.Builder {
	return nix2llb.Builder{
		Image:    "localhost:5000/nixos2docker/builder",
		Platform: ocispecs.Platform{OS: "linux", Architecture: "arm64"},
		System:   "aarch64-linux",
		Invocation: &nixeval.Invocation{
			Dir:        "/nixos2docker",
			Files:      map[string][]byte{"default.nix": []byte("{}"), "nixos/module.nix": []byte("{}")},
			Args:       []string{"/bin/sh", "/nixos2docker/build.sh"},
			Env:        []string{"NIX_CONFIG=sandbox = false"},
			ContextDir: "/src",
			OutDir:     "/out",
			RunDir:     "/run/nixos2docker",
			Secrets:    []nixeval.Secret{{ID: "netrc", Path: "/run/secrets/netrc"}},
		},
		Context:     llb.Local("context"),
		Description: "nix: build nixosConfigurations.web docker image spec",
	}
}

func TestBuilderStage(t *testing.T) {
	st, err := nix2llb.BuilderStage(testBuilder())
	if err != nil {
		t.Fatal(err)
	}
	d := marshal(t, st.State)
	exec := d.head.GetExec()
	if exec == nil {
		t.Fatalf("builder stage does not end in an exec: %v", d.head)
	}
	if strings.Join(exec.Meta.Args, " ") != "/bin/sh /nixos2docker/build.sh" {
		t.Errorf("args %q", exec.Meta.Args)
	}
	if exec.Network != pb.NetMode_NONE {
		t.Errorf("network %v, want none without substituters", exec.Network)
	}
	if d.head.Platform == nil || d.head.Platform.Architecture != "arm64" {
		t.Errorf("exec platform %v, want the target platform", d.head.Platform)
	}
	mounts := map[string]*pb.Mount{}
	for _, m := range exec.Mounts {
		mounts[m.Dest] = m
	}
	if m := mounts["/src"]; m == nil || !m.Readonly {
		t.Errorf("context mount %v, want read-only", m)
	}
	if m := mounts["/nixos2docker"]; m == nil || !m.Readonly {
		t.Errorf("invocation files mount %v", m)
	}
	m := mounts["/nix"]
	if m == nil || m.MountType != pb.MountType_CACHE || m.CacheOpt.ID != "nixos2docker-nix-aarch64-linux" ||
		m.CacheOpt.Sharing != pb.CacheSharingOpt_SHARED || m.Selector != "/nix" || m.Readonly {
		t.Errorf("nix cache mount %v", m)
	}
	seed := d.head.Inputs[m.Input].Digest
	// Secrets are root's alone: derivations build as unprivileged users.
	if m := mounts["/run/secrets/netrc"]; m == nil || m.MountType != pb.MountType_SECRET || m.SecretOpt.ID != "netrc" || !m.SecretOpt.Optional ||
		m.SecretOpt.Mode != 0o400 || m.SecretOpt.Uid != 0 || m.SecretOpt.Gid != 0 {
		t.Errorf("netrc secret mount %v, want optional, root's, mode 0400", m)
	}
	// What the step makes from secrets lives on a tmpfs, out of every snapshot.
	if m := mounts["/run/nixos2docker"]; m == nil || m.MountType != pb.MountType_TMPFS {
		t.Errorf("run dir mount %v, want a tmpfs", m)
	}
	if m := mounts["/"]; m == nil || m.Output < 0 {
		t.Errorf("root mount %v must be the stage's output", m)
	}
	var env string
	for _, e := range exec.Meta.Env {
		if strings.HasPrefix(e, "NIX_CONFIG=") {
			env = e
		}
	}
	if env != "NIX_CONFIG=sandbox = false" {
		t.Errorf("env %q", exec.Meta.Env)
	}
	var name string
	for dg, op := range d.ops {
		if op == d.head {
			name = d.meta[dg].Description["llb.customname"]
		}
	}
	if name != "nix: build nixosConfigurations.web docker image spec" {
		t.Errorf("progress name %q", name)
	}
	// The invocation files are a scratch FileOp with both files.
	files := d.ops[digest.Digest(d.head.Inputs[mounts["/nixos2docker"].Input].Digest)].GetFile()
	var paths []string
	for _, a := range files.Actions {
		if f := a.GetMkfile(); f != nil {
			paths = append(paths, f.Path)
		}
	}
	if strings.Join(paths, " ") != "/default.nix /nixos/module.nix" {
		t.Errorf("files %q", paths)
	}

	// A step given the stage's store option sees the same cache (same id,
	// same seed: BuildKit keys a cache mount by both), read-only.
	layer := marshal(t, st.Tools.Run(llb.Shlex("true"), st.Store).Root())
	var lm *pb.Mount
	for _, mm := range layer.head.GetExec().Mounts {
		if mm.Dest == "/nix" {
			lm = mm
		}
	}
	if lm == nil || lm.MountType != pb.MountType_CACHE || lm.CacheOpt.ID != m.CacheOpt.ID || lm.CacheOpt.Sharing != m.CacheOpt.Sharing ||
		!lm.Readonly || lm.Selector != "/nix" || layer.head.Inputs[lm.Input].Digest != seed {
		t.Errorf("the layer steps' store mount %v is not the Nix step's cache, read-only", lm)
	}
}

func TestBuilderStageNetwork(t *testing.T) {
	b := testBuilder()
	b.Invocation.Network = true
	b.IgnoreCache = true
	st, err := nix2llb.BuilderStage(b)
	if err != nil {
		t.Fatal(err)
	}
	d := marshal(t, st.State)
	if n := d.head.GetExec().Network; n != pb.NetMode_UNSET {
		t.Errorf("network %v, want the default with substituters", n)
	}
}

func TestBuilderStageBad(t *testing.T) {
	for name, mod := range map[string]func(*nix2llb.Builder){
		"no image":      func(b *nix2llb.Builder) { b.Image = "" },
		"no args":       func(b *nix2llb.Builder) { b.Invocation.Args = nil },
		"relative dir":  func(b *nix2llb.Builder) { b.Invocation.OutDir = "out" },
		"bad env":       func(b *nix2llb.Builder) { b.Invocation.Env = []string{"X"} },
		"escaping file": func(b *nix2llb.Builder) { b.Invocation.Files = map[string][]byte{"../x": nil} },
	} {
		t.Run(name, func(t *testing.T) {
			b := testBuilder()
			mod(&b)
			if _, err := nix2llb.BuilderStage(b); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// BUILDKIT_CACHE_MOUNT_NS (dockerui's CacheIDNamespace) gives a tenant a Nix
// store cache of its own on a shared builder.
func TestBuilderStageCacheNamespace(t *testing.T) {
	b := testBuilder()
	b.CacheNamespace = "team-a"
	st, err := nix2llb.BuilderStage(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range marshal(t, st.State).head.GetExec().Mounts {
		if m.Dest == "/nix" {
			if m.CacheOpt.ID != "team-a/nixos2docker-nix-aarch64-linux" {
				t.Errorf("cache id %q, want the namespace's", m.CacheOpt.ID)
			}
			return
		}
	}
	t.Error("no /nix cache mount")
}

// The LLB dump prints symlink actions (BuildKit's JSON prints them as {}).
func TestDumpPrintsSymlinks(t *testing.T) {
	st := llb.Scratch().File(llb.Mkdir("/bin", 0o755).Symlink("/nix/store/x-busybox/bin/sh", "/bin/sh"))
	var b bytes.Buffer
	if err := nix2llb.Dump(context.Background(), &b, st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"symlink":{"oldpath":"/nix/store/x-busybox/bin/sh","newpath":"/bin/sh"`) {
		t.Errorf("dump:\n%s", b.String())
	}
}
