package layers

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nixos2docker/nixos2docker/imagespec"
)

// storePath makes a valid-looking store path with a deterministic hash.
func storePath(rng *rand.Rand, name string) string {
	const nix32 = "0123456789abcdfghijklmnpqrsvwxyz"
	var b strings.Builder
	b.WriteString("/nix/store/")
	for range 32 {
		b.WriteByte(nix32[rng.IntN(len(nix32))])
	}
	b.WriteString("-" + name)
	return b.String()
}

// randomDAG returns n paths where each references a few earlier ones (and
// sometimes itself, as Nix paths do), plus a toplevel referencing all roots.
func randomDAG(seed uint64, n int) ([]Path, string) {
	rng := rand.New(rand.NewPCG(seed, 7))
	paths := make([]Path, n)
	for i := range paths {
		paths[i] = Path{Path: storePath(rng, fmt.Sprintf("p%d", i)), NarSize: rng.Int64N(1 << uint(rng.IntN(30)+1))}
		for range rng.IntN(5) {
			if i > 0 {
				paths[i].References = append(paths[i].References, paths[rng.IntN(i)].Path)
			}
		}
		if rng.IntN(3) == 0 {
			paths[i].References = append(paths[i].References, paths[i].Path)
		}
	}
	referenced := map[string]bool{}
	for _, p := range paths {
		for _, r := range p.References {
			if r != p.Path {
				referenced[r] = true
			}
		}
	}
	top := Path{Path: storePath(rng, "nixos-system"), NarSize: 20000}
	for _, p := range paths {
		if !referenced[p.Path] && rng.IntN(4) != 0 { // a few stay extra roots
			top.References = append(top.References, p.Path)
		}
	}
	return append(paths, top), top.Path
}

func checkLayers(t *testing.T, paths []Path, opts Options, got []Layer) {
	t.Helper()
	if len(got) > opts.MaxLayers {
		t.Errorf("%d layers, budget %d", len(got), opts.MaxLayers)
	}
	size := map[string]int64{}
	for _, p := range paths {
		size[p.Path] = p.NarSize
	}
	seen := map[string]int{}
	for li, l := range got {
		if len(l.Paths) == 0 {
			t.Errorf("layer %d is empty", li)
		}
		if !slices.IsSorted(l.Paths) {
			t.Errorf("layer %d is not sorted", li)
		}
		var sum int64
		for _, p := range l.Paths {
			if prev, dup := seen[p]; dup {
				t.Errorf("%s in layers %d and %d", p, prev, li)
			}
			seen[p] = li
			sum += size[p]
		}
		if sum != l.Size {
			t.Errorf("layer %d: Size %d, paths sum to %d", li, l.Size, sum)
		}
	}
	for _, p := range paths {
		if _, ok := seen[p.Path]; !ok {
			t.Errorf("%s is in no layer", p.Path)
		}
	}
	if len(seen) != len(paths) {
		t.Errorf("%d paths in layers, %d in the closure", len(seen), len(paths))
	}
}

func TestAssignProperties(t *testing.T) {
	for seed := range uint64(60) {
		n := 1 + int(seed*37%400)
		paths, top := randomDAG(seed, n)
		for _, max := range []int{1, 2, 3, 7, 40, 124, 1000} {
			for _, toplevel := range []string{top, ""} {
				opts := Options{MaxLayers: max, Toplevel: toplevel}
				got, err := Assign(paths, opts)
				if err != nil {
					t.Fatalf("seed %d max %d: %v", seed, max, err)
				}
				checkLayers(t, paths, opts, got)
				// Same input in another order gives the same layers.
				shuffled := slices.Clone(paths)
				rand.New(rand.NewPCG(seed, 99)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				again, err := Assign(shuffled, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, again) {
					t.Fatalf("seed %d max %d: shuffled input gives other layers", seed, max)
				}
				if toplevel != "" && max >= 2 {
					top := got[len(got)-1]
					if !slices.Contains(top.Paths, toplevel) {
						t.Errorf("seed %d max %d: toplevel not in the top layer", seed, max)
					}
					for _, p := range top.Paths {
						if p != toplevel && sizeOf(paths, p) > VolatileMaxSize {
							t.Errorf("seed %d max %d: %s (%d bytes) shares the toplevel's layer", seed, max, p, sizeOf(paths, p))
						}
					}
				}
			}
		}
	}
}

func sizeOf(paths []Path, name string) int64 {
	for _, p := range paths {
		if p.Path == name {
			return p.NarSize
		}
	}
	return -1
}

func TestAssignEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	one := []Path{{Path: storePath(rng, "hello"), NarSize: 10}}
	got, err := Assign(one, Options{MaxLayers: 5, Toplevel: one[0].Path})
	if err != nil || len(got) != 1 || got[0].Paths[0] != one[0].Path || got[0].Size != 10 {
		t.Fatalf("one path: %v, %v", got, err)
	}
	got, err = Assign(one, Options{MaxLayers: 1})
	if err != nil || len(got) != 1 {
		t.Fatalf("one path, no toplevel: %v, %v", got, err)
	}
	if got, err := Assign(nil, Options{MaxLayers: 3}); err != nil || len(got) != 0 {
		t.Fatalf("no paths: %v, %v", got, err)
	}

	paths, top := randomDAG(3, 50)
	got, err = Assign(paths, Options{MaxLayers: 1, Toplevel: top})
	if err != nil || len(got) != 1 || len(got[0].Paths) != len(paths) {
		t.Fatalf("MaxLayers 1: %d layers, %v", len(got), err)
	}
	// A budget larger than the closure: every stable path gets its own layer.
	got, err = Assign(paths, Options{MaxLayers: 1000, Toplevel: top})
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, paths, Options{MaxLayers: 1000}, got)
	for _, l := range got[:len(got)-1] {
		if len(l.Paths) != 1 {
			t.Errorf("budget 1000 for 51 paths, yet a stable layer holds %v", l.Paths)
		}
	}
}

// A configuration change must not touch the layers of big stable packages.
func TestAssignKeepsConfigurationApart(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	glibc := storePath(rng, "glibc-2.42")
	nginx := storePath(rng, "nginx-1.29")
	conf := storePath(rng, "nginx.conf")
	unit := storePath(rng, "unit-nginx.service")
	etc := storePath(rng, "etc")
	top := storePath(rng, "nixos-system-web")
	paths := []Path{
		{Path: glibc, NarSize: 30 << 20, References: []string{glibc}},
		{Path: nginx, NarSize: 5 << 20, References: []string{glibc}},
		{Path: conf, NarSize: 3000},
		{Path: unit, NarSize: 2000, References: []string{nginx, conf}},
		{Path: etc, NarSize: 40000, References: []string{unit}},
		{Path: top, NarSize: 20000, References: []string{etc, glibc}},
	}
	got, err := Assign(paths, Options{MaxLayers: 2, Toplevel: top})
	if err != nil {
		t.Fatal(err)
	}
	want := []Layer{
		{Paths: sorted(glibc, nginx), Size: 35 << 20},
		{Paths: sorted(conf, unit, etc, top), Size: 65000},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	got, err = Assign(paths, Options{MaxLayers: 3, Toplevel: top})
	if err != nil {
		t.Fatal(err)
	}
	want = []Layer{{Paths: []string{glibc}, Size: 30 << 20}, {Paths: []string{nginx}, Size: 5 << 20}, want[1]}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

func sorted(s ...string) []string { slices.Sort(s); return s }

func TestAssignErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	a, b := storePath(rng, "a"), storePath(rng, "b")
	cases := []struct {
		name  string
		paths []Path
		opts  Options
		want  string
	}{
		{"budget 0", []Path{{Path: a}}, Options{MaxLayers: 0}, "MaxLayers is 0"},
		{"negative budget", []Path{{Path: a}}, Options{MaxLayers: -3}, "MaxLayers is -3"},
		{"dangling", []Path{{Path: a, References: []string{b}}}, Options{MaxLayers: 3}, b + " (referenced by " + a + ") is not in the closure"},
		{"duplicate", []Path{{Path: a}, {Path: b}, {Path: a}}, Options{MaxLayers: 3}, a + " appears twice"},
		{"cycle", []Path{{Path: a, References: []string{b}}, {Path: b, References: []string{a}}}, Options{MaxLayers: 3}, "reference cycle"},
		{"unknown toplevel", []Path{{Path: a}}, Options{MaxLayers: 3, Toplevel: b}, "toplevel " + b + " is not in the closure"},
		{"negative size", []Path{{Path: a, NarSize: -1}}, Options{MaxLayers: 3}, "negative size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Assign(c.paths, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestFromSpec(t *testing.T) {
	s := &imagespec.Spec{Closure: []imagespec.Path{
		{Path: "/nix/store/a", NarSize: 3, References: []string{"/nix/store/b"}},
		{Path: "/nix/store/b", NarSize: 4},
	}}
	want := []Path{{Path: "/nix/store/a", NarSize: 3, References: []string{"/nix/store/b"}}, {Path: "/nix/store/b", NarSize: 4}}
	if got := FromSpec(s); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// The two ways of counting closures agree.
func TestClosureSizes(t *testing.T) {
	for seed := range uint64(10) {
		paths, _ := randomDAG(seed, 300)
		g, err := newGraph(paths)
		if err != nil {
			t.Fatal(err)
		}
		cands := make([]int32, 0, len(paths))
		for i := range len(paths) {
			if i%3 != 0 {
				cands = append(cands, int32(i))
			}
		}
		a, b := make([]int, len(paths)), make([]int, len(paths))
		g.closureSizesBitset(cands, a)
		g.closureSizesBFS(cands, b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d: bitset %v\nBFS %v", seed, a, b)
		}
		if a[cands[0]] < 1 {
			t.Fatalf("seed %d: closure of %d is %d", seed, cands[0], a[cands[0]])
		}
	}
	// A budget above 4096 takes the search path.
	paths, top := randomDAG(1, 5000)
	opts := Options{MaxLayers: 4500, Toplevel: top}
	got, err := Assign(paths, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, paths, opts, got)
}

// A service added to a system (a new top-level package using libraries
// the system has) must leave every existing layer alone: a top-level
// package takes only the paths no other stable path uses, and a large
// owner takes none.
func TestAssignAddingAServiceKeepsLayers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	p := func(name string) string { return storePath(rng, name) }
	glibc, idn, foo, bar, baz := p("glibc-2.42"), p("libidn2-2.3"), p("libfoo-1.0"), p("libbar-1.0"), p("libbaz-1.0")
	app1, app2, app3 := p("app1-1.0"), p("app2-1.0"), p("app3-1.0")
	base := []Path{
		{Path: idn, NarSize: 100 << 10},
		{Path: glibc, NarSize: 30 << 20, References: []string{glibc, idn}},
		{Path: foo, NarSize: 100 << 10, References: []string{glibc}},
		{Path: bar, NarSize: 100 << 10, References: []string{glibc}},
		{Path: baz, NarSize: 100 << 10, References: []string{glibc}},
		{Path: app1, NarSize: 20 << 20, References: []string{foo, bar}},
		{Path: app2, NarSize: 20 << 20, References: []string{foo, baz}},
	}
	system := func(paths []Path, name string, apps ...string) ([]Path, string) {
		paths = slices.Clone(paths)
		top := Path{Path: p(name), NarSize: 20 << 10}
		for _, a := range apps {
			unit := Path{Path: p("unit-" + a[44:]), NarSize: 2 << 10, References: []string{a}}
			paths = append(paths, unit)
			top.References = append(top.References, unit.Path)
		}
		return append(paths, top), top.Path
	}
	paths, top := system(base, "nixos-system-base", app1, app2)
	// Three owners (glibc, app1, app2), one leftover chunk, the volatile layer.
	before, err := Assign(paths, Options{MaxLayers: 5, Toplevel: top})
	if err != nil {
		t.Fatal(err)
	}
	want := []Layer{
		{Paths: []string{glibc}, Size: 30 << 20},
		{Paths: sorted(app1, bar), Size: 20<<20 + 100<<10},
		{Paths: sorted(app2, baz), Size: 20<<20 + 100<<10},
		{Paths: sorted(idn, foo), Size: 200 << 10},
	}
	if !reflect.DeepEqual(before[:4], want) {
		t.Errorf("base system:\n got %v\nwant %v", before[:4], want)
	}

	// app3 has the smallest closure of the three and uses foo, which app1
	// and app2 share: with room for one more owner, only new layers appear.
	member := append(slices.Clone(base), Path{Path: app3, NarSize: 10 << 20, References: []string{foo}})
	paths, top = system(member, "nixos-system-member", app1, app2, app3)
	after, err := Assign(paths, Options{MaxLayers: 6, Toplevel: top})
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, l := range after {
		kept[strings.Join(l.Paths, "\n")] = true
	}
	for _, l := range before[:4] {
		if !kept[strings.Join(l.Paths, "\n")] {
			t.Errorf("layer %v changed when app3 was added; after: %v", l.Paths, after)
		}
	}
}
