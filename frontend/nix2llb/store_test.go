package nix2llb_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/nixeval"
)

// execMounts returns the exec's mounts by destination.
func execMounts(exec *pb.ExecOp) map[string]*pb.Mount {
	mounts := map[string]*pb.Mount{}
	for _, m := range exec.Mounts {
		mounts[m.Dest] = m
	}
	return mounts
}

// The save step mounts the very store cache the Nix step mounts (same id, sharing, seed), writes
// only its own /out, and is keyed by its nonce so it is never a stale cache hit.
func TestSaveStage(t *testing.T) {
	b := testBuilder()
	nix, err := nix2llb.BuilderStage(b)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := nixeval.Save(b.System)
	if err != nil {
		t.Fatal(err)
	}
	sb := b
	sb.Invocation = inv
	sb.Description = ""
	save, err := nix2llb.SaveStage(sb, "1")
	if err != nil {
		t.Fatal(err)
	}
	dn, ds := marshal(t, nix.State), marshal(t, save)
	nixExec, saveExec := dn.head.GetExec(), ds.head.GetExec()
	if saveExec == nil {
		t.Fatalf("the snapshot is not an exec's output: %v", ds.head)
	}
	if got := strings.Join(saveExec.Meta.Args, " "); got != "/bin/sh /nixos2docker/run.sh save" {
		t.Errorf("save args %q", got)
	}
	if saveExec.Network != pb.NetMode_NONE {
		t.Errorf("save network %v, want none", saveExec.Network)
	}
	nm, sm := execMounts(nixExec)["/nix"], execMounts(saveExec)["/nix"]
	if nm == nil || sm == nil || sm.MountType != pb.MountType_CACHE || sm.CacheOpt.ID != nm.CacheOpt.ID ||
		sm.CacheOpt.Sharing != nm.CacheOpt.Sharing || sm.Selector != nm.Selector {
		t.Fatalf("store cache mounts differ: Nix step %v, save step %v", nm, sm)
	}
	if dn.head.Inputs[nm.Input].Digest != ds.head.Inputs[sm.Input].Digest {
		t.Errorf("the save step's store cache has another seed than the Nix step's: BuildKit would give it another store")
	}
	out := execMounts(saveExec)["/out"]
	if out == nil || out.Output < 0 || out.Input != -1 {
		t.Errorf("/out mount %v, want a scratch output", out)
	}
	other, err := nix2llb.SaveStage(sb, "2")
	if err != nil {
		t.Fatal(err)
	}
	if marshal(t, other).head.String() == ds.head.String() {
		t.Error("two nonces give the same save step: a second save would be a cache hit")
	}
	for dg, op := range ds.ops {
		if op == ds.head && ds.meta[dg].GetIgnoreCache() {
			t.Error("the save step ignores the cache: BuildKit would empty the store cache mount it saves")
		}
	}
}

// A store snapshot is mounted read-only into the Nix step, and run.sh is told where.
func TestBuilderStageStoreFrom(t *testing.T) {
	b := testBuilder()
	b.Invocation.StoreFromDir = "/nixos2docker-store"
	snap := llb.Image("localhost:5000/store-snapshot")
	b.StoreFrom = &snap
	st, err := nix2llb.BuilderStage(b)
	if err != nil {
		t.Fatal(err)
	}
	exec := marshal(t, st.State).head.GetExec()
	if m := execMounts(exec)["/nixos2docker-store"]; m == nil || !m.Readonly || m.MountType != pb.MountType_BIND {
		t.Errorf("snapshot mount %v, want a read-only bind", m)
	}
	if !slices.Contains(exec.Meta.Env, "NIXOS2DOCKER_STORE_FROM=/nixos2docker-store") {
		t.Errorf("env %q lacks NIXOS2DOCKER_STORE_FROM", exec.Meta.Env)
	}
	b.Invocation.StoreFromDir = ""
	if _, err := nix2llb.BuilderStage(b); err == nil {
		t.Error("a snapshot with nowhere to mount it: no error")
	}
	// Without a snapshot, nothing is mounted there and the step is the one it always was.
	plain, err := nix2llb.BuilderStage(testBuilder())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range marshal(t, plain.State).head.GetExec().Meta.Env {
		if strings.HasPrefix(e, "NIXOS2DOCKER_STORE_FROM=") {
			t.Errorf("env %q without a snapshot", e)
		}
	}
}
