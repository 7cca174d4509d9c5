package nix2llb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client/llb"
	gatewayapi "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/apicaps"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
	digest "github.com/opencontainers/go-digest"
)

func loadSpec(t testing.TB) *imagespec.Spec { return testenv.SpecFixture(t) }

func model(t testing.TB, s *imagespec.Spec, epoch *time.Time) *imagemodel.Model {
	t.Helper()
	m, err := imagemodel.New(s, imagemodel.Options{Epoch: epoch, Labels: map[string]string{"org.opencontainers.image.title": "override", "extra": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ops marshals a state and indexes its ops by digest.
type defOps struct {
	ops  map[digest.Digest]*pb.Op
	meta map[digest.Digest]*pb.OpMetadata
	head *pb.Op
}

func marshal(t *testing.T, st llb.State) *defOps {
	t.Helper()
	def, err := st.Marshal(context.Background(), llb.LinuxAmd64)
	if err != nil {
		t.Fatal(err)
	}
	d := &defOps{ops: map[digest.Digest]*pb.Op{}, meta: map[digest.Digest]*pb.OpMetadata{}}
	var last *pb.Op
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			t.Fatal(err)
		}
		dg := digest.FromBytes(dt)
		d.ops[dg] = &op
		d.meta[dg] = def.Metadata[dg].ToPB()
		last = &op
	}
	// The last op is the terminal one pointing at the state's output.
	d.head = d.ops[digest.Digest(last.Inputs[0].Digest)]
	return d
}

// The tools image and store of the layer steps, as the builder stage gives them.
var (
	testTools = llb.Image("localhost:5000/builder")
	testStore = llb.AddMount("/nix", llb.Scratch(), llb.AsPersistentCacheDir("test-store", llb.CacheMountShared), llb.Readonly)
)

func testImage(t *testing.T, epoch *time.Time) (*imagespec.Spec, []imagemodel.Layer, *nix2llb.Image) {
	s := loadSpec(t)
	m := model(t, s, epoch)
	img, err := nix2llb.NewImage(nix2llb.ImageInput{Model: m, Tools: testTools, Store: testStore})
	if err != nil {
		t.Fatal(err)
	}
	return s, m.StoreLayers(), img
}

// layerStep checks a store layer's step and returns the store paths it copies.
func layerStep(t *testing.T, d *defOps, in *pb.Input, i int) []string {
	t.Helper()
	op := d.ops[digest.Digest(in.Digest)]
	e := op.GetExec()
	if e == nil {
		t.Fatalf("layer %d is not a run step: %v", i+1, op)
	}
	a := e.Meta.Args
	if len(a) < 7 || a[0] != "/bin/sh" || a[1] != "-c" || a[3] != "nixos2docker-layer" || a[4] != nix2llb.LayerDir {
		t.Fatalf("layer %d runs %q", i+1, a)
	}
	if a[5] != "1" {
		t.Errorf("layer %d stamps /nix/store with %s, want the store's time 1 whatever the epoch", i+1, a[5])
	}
	if e.Network != pb.NetMode_NONE {
		t.Errorf("layer %d has network %v", i+1, e.Network)
	}
	var out *pb.Mount
	for _, m := range e.Mounts {
		switch m.Dest {
		case "/":
			if !m.Readonly {
				t.Errorf("layer %d writes its root file system", i+1)
			}
		case "/nix":
			if m.MountType != pb.MountType_CACHE || m.CacheOpt.ID != "test-store" || !m.Readonly {
				t.Errorf("layer %d store mount %v", i+1, m)
			}
		case nix2llb.LayerDir:
			out = m
		}
	}
	if out == nil || out.Input != int64(pb.Empty) || out.Output != int64(in.Index) {
		t.Errorf("layer %d: its output is not a fresh mount at %s (%v, input index %d)", i+1, nix2llb.LayerDir, out, in.Index)
	}
	return a[6:]
}

// nixTime is the store's time: store layers keep it whatever the epoch.
var nixTime = time.Unix(1, 0).UTC()

func TestImageLayers(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	s, ls, img := testImage(t, &epoch)
	d := marshal(t, img.State)
	merge := d.head.GetMerge()
	if merge == nil {
		t.Fatalf("image is not a merge: %v", d.head)
	}
	if n := len(merge.Inputs); n != len(ls)+1 || n > s.MaxLayers {
		t.Fatalf("merge has %d inputs, want %d store layers + skeleton, ≤ %d", n, len(ls), s.MaxLayers)
	}
	copied := map[string]int{}
	var skeleton *pb.FileOp
	for i, in := range d.head.Inputs {
		op := d.ops[digest.Digest(in.Digest)]
		name := d.meta[digest.Digest(in.Digest)].Description["llb.customname"]
		if !strings.HasPrefix(name, "layer ") {
			t.Errorf("layer %d has progress name %q", i+1, name)
		}
		if i == len(d.head.Inputs)-1 {
			f := op.GetFile()
			if f == nil {
				t.Fatalf("the skeleton layer is not a file op")
			}
			c := f.Actions[0].GetCopy()
			if len(f.Actions) != 2 || c == nil || c.Src != "/" || c.Timestamp != epoch.UnixNano() {
				t.Fatalf("the skeleton layer is not one copy stamped with the epoch, then the store stamp: %v", f.Actions)
			}
			if st := f.Actions[1].GetCopy(); st == nil || st.Timestamp != nixTime.UnixNano() {
				t.Fatalf("the skeleton layer's /nix/store is not stamped with the store's time: %v", f.Actions[1])
			}
			skeleton = d.ops[digest.Digest(op.Inputs[0].Digest)].GetFile()
			continue
		}
		paths := layerStep(t, d, in, i)
		if !slices.Equal(paths, ls[i].Paths) {
			t.Errorf("layer %d copies %v, want its paths %v in order", i+1, paths, ls[i].Paths)
		}
		for _, p := range paths {
			copied[p]++
		}
	}
	for _, p := range s.Closure {
		if copied[p.Path] != 1 {
			t.Errorf("%s copied %d times, want exactly once", p.Path, copied[p.Path])
		}
	}
	if len(copied) != len(s.Closure) {
		t.Errorf("%d paths copied, closure has %d", len(copied), len(s.Closure))
	}

	// Skeleton: every entry, with its type and mode.
	got := map[string]string{}
	for _, a := range skeleton.Actions {
		switch {
		case a.GetMkdir() != nil:
			got[a.GetMkdir().Path] = "dir"
		case a.GetMkfile() != nil:
			got[a.GetMkfile().Path] = "file:" + strings.TrimPrefix(os.FileMode(a.GetMkfile().Mode).String(), "-")
		case a.GetSymlink() != nil:
			got[a.GetSymlink().Newpath] = "symlink:" + a.GetSymlink().Oldpath
		case a.GetCopy() != nil:
			got[a.GetCopy().Dest] = "copy:" + a.GetCopy().ModeStr
		}
	}
	want := map[string]string{
		"/init":           "symlink:" + s.Toplevel + "/init",
		"/tmp":            "copy:1777", // sticky bit: mkdir cannot set it
		"/etc":            "dir",
		"/etc/machine-id": "file:r--r--r--",
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("skeleton %s = %q, want %q", p, got[p], w)
		}
	}
}

func TestImageConfig(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	s, ls, img := testImage(t, &epoch)
	c := img.Config
	if c.Platform.OS != "linux" || c.Platform.Architecture != "amd64" {
		t.Errorf("platform %+v", c.Platform)
	}
	if c.Created == nil || !c.Created.Equal(epoch) {
		t.Errorf("created %v, want %v", c.Created, epoch)
	}
	if c.RootFS.Type != "layers" {
		t.Errorf("rootfs type %q", c.RootFS.Type)
	}
	if strings.Join(c.Config.Entrypoint, " ") != "/init" || c.Config.StopSignal != "SIGRTMIN+3" {
		t.Errorf("config %+v", c.Config)
	}
	if c.Config.Healthcheck == nil || c.Config.Healthcheck.Interval != 30*time.Second {
		t.Errorf("healthcheck %+v", c.Config.Healthcheck)
	}
	if _, ok := c.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("exposed ports %v", c.Config.ExposedPorts)
	}
	if c.Config.Labels["org.opencontainers.image.title"] != "override" || c.Config.Labels["extra"] != "1" {
		t.Errorf("labels %v: build labels must be added and win", c.Config.Labels)
	}
	if s.Config.Labels["org.opencontainers.image.title"] != "web" {
		t.Errorf("the spec's labels were modified")
	}
	if len(c.History) != len(ls)+1 {
		t.Fatalf("%d history entries for %d layers", len(c.History), len(ls)+1)
	}
	for i, l := range ls {
		h := c.History[i]
		for _, p := range l.Paths {
			if !strings.Contains(h.CreatedBy, p) {
				t.Errorf("history %d does not name %s: %q", i, p, h.CreatedBy)
			}
		}
		if h.Created == nil || !h.Created.Equal(epoch) || h.EmptyLayer {
			t.Errorf("history %d: %+v", i, h)
		}
	}
	if !strings.Contains(c.History[len(ls)].CreatedBy, "/etc/machine-id") {
		t.Errorf("skeleton history %q", c.History[len(ls)].CreatedBy)
	}
	if len(img.Names) != len(ls)+1 || !strings.Contains(img.Names[0], " MiB)") {
		t.Errorf("names %q", img.Names)
	}
}

func TestImageWithoutEpoch(t *testing.T) {
	_, _, img := testImage(t, nil)
	// A fixed time, not the build's: two cold builds must give the same config digest.
	nix := time.Unix(1, 0).UTC()
	if img.Config.Created == nil || !img.Config.Created.Equal(nix) {
		t.Errorf("without SOURCE_DATE_EPOCH the image is created at Nix's time 1, got %v", img.Config.Created)
	}
	for i, h := range img.Config.History {
		if h.Created == nil || !h.Created.Equal(nix) {
			t.Errorf("history %d created %v, want %v", i, h.Created, nix)
		}
	}
	d := marshal(t, img.State)
	layerStep(t, d, d.head.Inputs[0], 0) // the store's time 1
}

// A layer step is described by its store paths alone: the same paths give
// the same step whatever else is in the image or when it is built, so
// BuildKit finds an unchanged layer in its cache without reading the store.
func TestLayerStepIsItsPaths(t *testing.T) {
	s := loadSpec(t)
	epoch := time.Unix(1700000000, 0).UTC()
	a, err := nix2llb.NewImage(nix2llb.ImageInput{Model: model(t, s, nil), Tools: testTools, Store: testStore})
	if err != nil {
		t.Fatal(err)
	}
	// Another config, another epoch: the store layers' steps stay the same.
	s2 := loadSpec(t)
	s2.Config.Labels = map[string]string{"other": "config"}
	b, err := nix2llb.NewImage(nix2llb.ImageInput{Model: model(t, s2, &epoch), Tools: testTools, Store: testStore})
	if err != nil {
		t.Fatal(err)
	}
	da, db := marshal(t, a.State), marshal(t, b.State)
	for i := range len(da.head.Inputs) - 1 {
		if da.head.Inputs[i].Digest != db.head.Inputs[i].Digest {
			t.Errorf("layer %d's step changed with the epoch or the config", i+1)
		}
	}
}

func TestImageDeterministic(t *testing.T) {
	_, _, a := testImage(t, nil)
	_, _, b := testImage(t, nil)
	da, err := a.State.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.State.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(da.Def) != len(db.Def) {
		t.Fatal("different op counts")
	}
	for i := range da.Def {
		if digest.FromBytes(da.Def[i]) != digest.FromBytes(db.Def[i]) {
			t.Fatalf("op %d differs between two identical builds", i)
		}
	}
}

func TestImageIgnoreCache(t *testing.T) {
	s := loadSpec(t)
	img, err := nix2llb.NewImage(nix2llb.ImageInput{
		Model: model(t, s, nil), Tools: testTools, Store: testStore, IgnoreCache: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	again, err := nix2llb.NewImage(nix2llb.ImageInput{
		Model: model(t, s, nil), Tools: testTools, Store: testStore, IgnoreCache: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	d, d2 := marshal(t, img.State), marshal(t, again.State)
	for i, in := range d.head.Inputs {
		name := d.meta[digest.Digest(in.Digest)].Description["llb.customname"]
		op := d.ops[digest.Digest(in.Digest)]
		if e := op.GetExec(); e != nil {
			// A layer step with the store cache must not ignore the cache:
			// BuildKit would empty the store for it. A new step each time.
			if d.meta[digest.Digest(in.Digest)].IgnoreCache || in.Digest == d2.head.Inputs[i].Digest {
				t.Errorf("layer %s: IgnoreCache %v, the same step in two --no-cache builds: %v", name,
					d.meta[digest.Digest(in.Digest)].IgnoreCache, in.Digest == d2.head.Inputs[i].Digest)
			}
			continue
		}
		if !d.meta[digest.Digest(in.Digest)].IgnoreCache {
			t.Errorf("layer %s is not redone with --no-cache", name)
		}
	}
}

// syntheticSpec is a spec of n store paths, each referencing a few earlier
// ones, shaped enough like a NixOS closure for timing.
func syntheticSpec(t testing.TB, n int) *imagespec.Spec {
	s := loadSpec(t)
	s.Closure = nil
	for i := 0; i < n; i++ {
		p := imagespec.Path{
			Path:    fmt.Sprintf("/nix/store/%032d-pkg-%d", i, i),
			NarHash: "sha256:0",
			NarSize: int64(1000 + i*37%100000),
		}
		for _, j := range []int{i - 1, i / 2, i / 3} {
			if j >= 0 && j < i {
				p.References = append(p.References, fmt.Sprintf("/nix/store/%032d-pkg-%d", j, j))
			}
		}
		s.Closure = append(s.Closure, p)
	}
	s.Toplevel = s.Closure[n-1].Path
	s.Skeleton = []imagespec.Entry{{Path: "/init", Type: imagespec.TypeSymlink, Target: s.Toplevel + "/init"}}
	return s
}

// BenchmarkNewImage times the LLB of a 2,000-path closure in 124 layers,
// marshalled: what the frontend does between reading the spec and solving.
func BenchmarkNewImage(b *testing.B) {
	s := syntheticSpec(b, 2000)
	m := model(b, s, nil)
	b.ResetTimer()
	for b.Loop() {
		img, err := nix2llb.NewImage(nix2llb.ImageInput{Model: m, Tools: testTools, Store: testStore})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := img.State.Marshal(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// stackBase is the input index an op of a stacked image builds on: the
// layer step's output mount, or the skeleton's first action's input; -1 on
// scratch.
func stackBase(t *testing.T, op *pb.Op) int64 {
	t.Helper()
	if e := op.GetExec(); e != nil {
		for _, m := range e.Mounts {
			if m.Dest == nix2llb.LayerDir {
				return m.Input
			}
		}
		t.Fatalf("layer step without an output at %s: %v", nix2llb.LayerDir, op)
	}
	if f := op.GetFile(); f != nil {
		return f.Actions[0].Input
	}
	t.Fatalf("stacked layer is neither a run step nor a file op: %v", op)
	return 0
}

// TestImageStacked: without MergeOp, the same layer ops are stacked, each on
// the previous layer's result: the same steps in the same order, every op
// one layer, the bottom one the very op of the merged image.
func TestImageStacked(t *testing.T) {
	s := loadSpec(t)
	m := model(t, s, nil)
	render := func(l nix2llb.Layering) *defOps {
		img, err := nix2llb.NewImage(nix2llb.ImageInput{Model: m, Tools: testTools, Store: testStore, Layering: l})
		if err != nil {
			t.Fatal(err)
		}
		return marshal(t, img.State)
	}
	merged, stacked := render(nix2llb.Merged), render(nix2llb.Stacked)
	if merged.head.GetMerge() == nil {
		t.Fatalf("merged image is not a merge: %v", merged.head)
	}
	for _, op := range stacked.ops {
		if op.GetMerge() != nil || op.GetDiff() != nil {
			t.Fatalf("stacked image has a merge or diff op: %v", op)
		}
	}
	// Walk the stack down its base inputs: top layer first.
	var chain []*pb.Op
	for op := stacked.head; ; {
		chain = append(chain, op)
		base := stackBase(t, op)
		if base < 0 {
			break
		}
		op = stacked.ops[digest.Digest(op.Inputs[base].Digest)]
	}
	if len(chain) != len(m.Layers) {
		t.Fatalf("stack of %d ops, want one per layer (%d)", len(chain), len(m.Layers))
	}
	for i, in := range merged.head.Inputs {
		mop := merged.ops[digest.Digest(in.Digest)]
		sop := chain[len(chain)-1-i]
		name := merged.meta[digest.Digest(in.Digest)].Description["llb.customname"]
		if me, se := mop.GetExec(), sop.GetExec(); me != nil || se != nil {
			if me == nil || se == nil || !slices.Equal(me.Meta.Args, se.Meta.Args) {
				t.Errorf("%s: the layer steps differ", name)
			}
			continue
		}
		if len(mop.GetFile().Actions) != len(sop.GetFile().Actions) {
			t.Errorf("%s: %d actions merged, %d stacked", name, len(mop.GetFile().Actions), len(sop.GetFile().Actions))
		}
	}
	// The bottom op of the stack is the merge's first input (same digest, so
	// a builder doing both shares it).
	bottom := chain[len(chain)-1]
	first := merged.ops[digest.Digest(merged.head.Inputs[0].Digest)]
	a, _ := bottom.MarshalVT()
	b, _ := first.MarshalVT()
	if digest.FromBytes(a) != digest.FromBytes(b) {
		t.Errorf("the bottom layer's op differs between the layerings")
	}
}

// TestLayeringCaps: merging needs MergeOp, stacking does not; both need the
// file op and the run step with a cache mount.
func TestLayeringCaps(t *testing.T) {
	ctx := context.Background()
	merged, err := nix2llb.Merged.Caps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stacked, err := nix2llb.Stacked.Caps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	has := func(caps []apicaps.CapID, c apicaps.CapID) bool { return slices.Contains(caps, c) }
	if !has(merged, pb.CapMergeOp) || has(stacked, pb.CapMergeOp) {
		t.Errorf("mergeop: merged needs %v, stacked %v", merged, stacked)
	}
	for _, c := range []apicaps.CapID{pb.CapFileBase, pb.CapExecMetaBase, pb.CapExecMountCache, pb.CapExecMountCacheSharing} {
		if !has(merged, c) || !has(stacked, c) {
			t.Errorf("%s missing: merged needs %v, stacked %v", c, merged, stacked)
		}
	}
	t.Logf("merged needs %v; stacked %v", merged, stacked)
}

// IsMissing recognises a layer step's exit for missing store paths by BuildKit's typed exit
// error, wrapped or not, and nothing else.
func TestIsMissing(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{&gatewayapi.ExitError{ExitCode: nix2llb.MissingExit}, true},
		{fmt.Errorf("solve: %w", &gatewayapi.ExitError{ExitCode: nix2llb.MissingExit}), true},
		{&gatewayapi.ExitError{ExitCode: 1}, false},
		{errors.New(`process "/bin/sh -c …" did not complete successfully: exit code: 3`), false},
		{nil, false},
	} {
		if got := nix2llb.IsMissing(tt.err); got != tt.want {
			t.Errorf("IsMissing(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
