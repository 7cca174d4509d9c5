package layers

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// nixosGraph is a synthetic, NixOS-shaped closure.
type nixosGraph struct {
	paths    []Path
	toplevel string
	config   string // a config file referenced by a unit file
	midPkg   string // a package in the middle of the graph
	// bumps are packages changing 1–20% of the closure, for an average.
	bumps []string
}

// genNixOS generates n paths deterministically from seed: a few glibc-like
// roots that most packages reference, many small packages and a few huge
// ones referencing earlier packages (biased towards the early, popular
// ones), and a toplevel referencing etc (etc files, system-units → unit
// files → config files and packages), system-path (every package nothing
// else references), an activation script and systemd.
func genNixOS(n int, seed uint64) nixosGraph {
	rng := rand.New(rand.NewPCG(seed, 2026))
	const (
		kib = 1 << 10
		mib = 1 << 20
	)
	var paths []Path
	add := func(name string, size int64, refs ...int) int {
		p := Path{Path: storePath(rng, name), NarSize: size}
		for _, r := range refs {
			p.References = append(p.References, paths[r].Path)
		}
		paths = append(paths, p)
		return len(paths) - 1
	}
	ref := func(i, j int) { paths[i].References = append(paths[i].References, paths[j].Path) }

	libunistring := add("libunistring-1.3", 1800*kib)
	libidn2 := add("libidn2-2.3.8", 400*kib, libunistring)
	glibc := add("glibc-2.42", 30*mib, libidn2)
	ref(glibc, glibc)
	gcclib := add("xgcc-15.2.0-libgcc", 8*mib, glibc)
	zlib := add("zlib-1.3.1", 200*kib, glibc)
	openssl := add("openssl-3.6.0", 6*mib, glibc, zlib)
	bash := add("bash-5.3", 5*mib, glibc)
	coreutils := add("coreutils-9.8", 17*mib, glibc, gcclib)
	systemd := add("systemd-262", 30*mib, glibc, gcclib, openssl, bash, coreutils)
	base := len(paths)

	const nUnits, nEtc = 400, 150
	nPkgs := n - base - 5 - nUnits - nEtc - nUnits*6/10
	for k := range nPkgs {
		size := int64(math.Exp(rng.NormFloat64()*1.6 + math.Log(150*kib)))
		if rng.IntN(2000) == 0 {
			size = 100*mib + rng.Int64N(900*mib)
		}
		var refs []int
		for _, r := range []struct {
			i int
			p float64
		}{{glibc, 0.92}, {gcclib, 0.35}, {zlib, 0.2}, {openssl, 0.1}, {bash, 0.1}} {
			if rng.Float64() < r.p {
				refs = append(refs, r.i)
			}
		}
		for range 1 + rng.IntN(5) {
			if k == 0 {
				break
			}
			if rng.IntN(2) == 0 { // a recent package: builds depend on their neighbours
				refs = append(refs, base+k-1-rng.IntN(min(k, 300)))
			} else { // an early, popular one
				u := rng.Float64()
				refs = append(refs, base+int(float64(k)*u*u))
			}
		}
		add(fmt.Sprintf("pkg%d-1.0", k), size, refs...)
	}
	pkgEnd := len(paths)
	topApp := func() int { // biased towards late packages: applications
		u := rng.Float64()
		return pkgEnd - 1 - int(float64(nPkgs)*u*u)
	}

	units := add("system-units", 100*kib)
	var config string
	for u := range nUnits {
		unit := add(fmt.Sprintf("unit-svc%d.service", u), int64(1+rng.IntN(4))*kib, topApp(), systemd)
		ref(units, unit)
		if u%10 < 6 {
			conf := add(fmt.Sprintf("svc%d.conf", u), int64(1+rng.IntN(20))*kib)
			if rng.IntN(10) < 3 {
				ref(conf, topApp())
			}
			ref(unit, conf)
			if config == "" {
				config = paths[conf].Path
			}
		}
	}
	etc := add("etc", 200*kib, units)
	for e := range nEtc {
		f := add(fmt.Sprintf("etc-file%d", e), int64(1+rng.IntN(10))*kib)
		if rng.IntN(10) < 3 {
			ref(f, topApp())
		}
		ref(etc, f)
	}
	activate := add("activate", 50*kib, bash, coreutils, systemd, etc)
	sw := add("system-path", 900*kib)
	referenced := map[string]bool{}
	for _, p := range paths {
		for _, r := range p.References {
			if r != p.Path {
				referenced[r] = true
			}
		}
	}
	for i := base; i < pkgEnd; i++ {
		if !referenced[paths[i].Path] {
			ref(sw, i)
		}
	}
	top := add("nixos-system-web-26.05", 20*kib, etc, sw, activate, systemd)
	// The mid-level package: of a few spread over the packages, the one
	// closest to changing 5% of the closure.
	mid, midAnc := "", 0
	var bumps []string
	for k := base; k < pkgEnd; k += max(1, nPkgs/40) {
		a := len(ancestors(paths, paths[k].Path))
		if mid == "" || abs(a-n/20) < abs(midAnc-n/20) {
			mid, midAnc = paths[k].Path, a
		}
		if a >= n/100 && a <= n/5 {
			bumps = append(bumps, paths[k].Path)
		}
	}
	return nixosGraph{paths: paths, toplevel: paths[top].Path, config: config, midPkg: mid, bumps: bumps}
}

func abs(x int) int { return max(x, -x) }

// ancestors returns x and every path that depends on it: what changes when x does.
func ancestors(paths []Path, x string) map[string]bool {
	referrers := map[string][]string{}
	for _, p := range paths {
		for _, r := range p.References {
			if r != p.Path {
				referrers[r] = append(referrers[r], p.Path)
			}
		}
	}
	out := map[string]bool{x: true}
	queue := []string{x}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, r := range referrers[p] {
			if !out[r] {
				out[r] = true
				queue = append(queue, r)
			}
		}
	}
	return out
}

// change renames x and its ancestors as a rebuild would (new hashes).
func change(paths []Path, toplevel, x string, seed uint64) ([]Path, string) {
	changed := ancestors(paths, x)
	rng := rand.New(rand.NewPCG(seed, 1))
	rename := map[string]string{}
	for _, p := range paths {
		if changed[p.Path] {
			rename[p.Path] = storePath(rng, p.Path[44:])
		}
	}
	name := func(s string) string {
		if r, ok := rename[s]; ok {
			return r
		}
		return s
	}
	out := make([]Path, len(paths))
	for i, p := range paths {
		out[i] = Path{Path: name(p.Path), NarSize: p.NarSize}
		for _, r := range p.References {
			out[i].References = append(out[i].References, name(r))
		}
	}
	return out, name(toplevel)
}

// reuse is the share of the bytes of after whose layers exist unchanged in before.
func reuse(before, after []Layer) float64 {
	old := map[string]bool{}
	for _, l := range before {
		old[strings.Join(l.Paths, "\n")] = true
	}
	var kept, total int64
	for _, l := range after {
		total += l.Size
		if old[strings.Join(l.Paths, "\n")] {
			kept += l.Size
		}
	}
	return 100 * float64(kept) / float64(total)
}

type layerer func(paths []Path, toplevel string, maxLayers int) []Layer

func ours(paths []Path, toplevel string, maxLayers int) []Layer {
	l, err := Assign(paths, Options{MaxLayers: maxLayers, Toplevel: toplevel})
	if err != nil {
		panic(err)
	}
	return l
}

// popularityContest re-implements nixpkgs dockerTools' layering from its
// published description (pkgs/build-support/references-by-popularity and
// streamLayeredImage): the reference graph is unrolled into a tree from
// the roots, every leaf counter is merged into its parent, incremented at
// each merge, and a path's popularity is its final count; paths are sorted
// by popularity (most popular first, ties by name without the hash), the
// first maxLayers-1 get a layer each and the rest share the last one.
//
// Unrolled, the count of X is the sum over every path N that has X in its
// closure of the number of root-to-N paths, which is computed here with
// closure bitsets instead of unrolling the tree.
func popularityContest(paths []Path, _ string, maxLayers int) []Layer {
	order, _ := popularityOrder(paths)
	size := map[string]int64{}
	for _, p := range paths {
		size[p.Path] = p.NarSize
	}
	var out []Layer
	for i := 0; i < len(order); i++ {
		var l Layer
		if i < maxLayers-1 {
			l.Paths = []string{order[i]}
		} else {
			l.Paths = slices.Clone(order[i:])
			slices.Sort(l.Paths)
			i = len(order)
		}
		for _, p := range l.Paths {
			l.Size += size[p]
		}
		out = append(out, l)
	}
	return out
}

func popularityOrder(paths []Path) ([]string, map[string]float64) {
	n := len(paths)
	index := map[string]int{}
	for i, p := range paths {
		index[p.Path] = i
	}
	refs := make([][]int, n)
	indeg := make([]int, n)
	for i, p := range paths {
		for _, r := range p.References {
			if j := index[r]; j != i && !slices.Contains(refs[i], j) {
				refs[i] = append(refs[i], j)
				indeg[j]++
			}
		}
	}
	var topo []int
	for i := range n {
		if indeg[i] == 0 {
			topo = append(topo, i)
		}
	}
	routes := make([]float64, n) // root-to-N path counts
	for _, i := range topo {
		routes[i] = 1
	}
	for k := 0; k < len(topo); k++ {
		for _, j := range refs[topo[k]] {
			routes[j] += routes[topo[k]]
			if indeg[j]--; indeg[j] == 0 {
				topo = append(topo, j)
			}
		}
	}
	words := (n + 63) / 64
	closure := make([]uint64, n*words)
	for k := n - 1; k >= 0; k-- {
		i := topo[k]
		c := closure[i*words : (i+1)*words]
		c[i/64] |= 1 << (i % 64)
		for _, j := range refs[i] {
			for w, v := range closure[j*words : (j+1)*words] {
				c[w] |= v
			}
		}
	}
	pop := make([]float64, n)
	for i := range n {
		for w, v := range closure[i*words : (i+1)*words] {
			for v != 0 {
				pop[w*64+bits.TrailingZeros64(v)] += routes[i]
				v &= v - 1
			}
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := cmp.Compare(pop[b], pop[a]); c != 0 {
			return c
		}
		if c := cmp.Compare(paths[a].Path[44:], paths[b].Path[44:]); c != 0 {
			return c
		}
		return cmp.Compare(paths[a].Path, paths[b].Path)
	})
	names := make([]string, n)
	byName := map[string]float64{}
	for k, i := range order {
		names[k] = paths[i].Path
		byName[paths[i].Path] = pop[i]
	}
	return names, byName
}

// The worked example of references-by-popularity's description.
func TestPopularityContestMatchesDescription(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	p := map[string]string{}
	for _, c := range "ABCDEFG" {
		p[string(c)] = storePath(rng, string(c))
	}
	edges := map[string]string{"A": "BG", "B": "CE", "C": "DE", "D": "F", "E": "F"}
	var paths []Path
	for _, c := range "ABCDEFG" {
		q := Path{Path: p[string(c)]}
		for _, r := range edges[string(c)] {
			q.References = append(q.References, p[string(r)])
		}
		paths = append(paths, q)
	}
	order, pop := popularityOrder(paths)
	want := map[string]float64{"A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 9, "G": 2}
	for c, w := range want {
		if pop[p[c]] != w {
			t.Errorf("popularity of %s: %v, want %v", c, pop[p[c]], w)
		}
	}
	var got []string
	for _, o := range order {
		got = append(got, o[44:])
	}
	if !reflect.DeepEqual(got, strings.Split("F E D C B G A", " ")) {
		t.Errorf("order %v, want F E D C B G A", got)
	}
}

// ideal is the reuse with one layer per path: the bytes that did not change.
func ideal(g nixosGraph, x string) float64 {
	changed := ancestors(g.paths, x)
	var kept, total int64
	for _, p := range g.paths {
		total += p.NarSize
		if !changed[p.Path] {
			kept += p.NarSize
		}
	}
	return 100 * float64(kept) / float64(total)
}

// reuseFigures gives the reuse after a config file change and after a
// mid-level package bump.
func reuseFigures(g nixosGraph, f layerer, maxLayers int) (config, pkg float64) {
	before := f(g.paths, g.toplevel, maxLayers)
	p, top := change(g.paths, g.toplevel, g.config, 11)
	config = reuse(before, f(p, top, maxLayers))
	p, top = change(g.paths, g.toplevel, g.midPkg, 12)
	pkg = reuse(before, f(p, top, maxLayers))
	return config, pkg
}

// averageBumpReuse is the mean reuse over g.bumps, one bump at a time.
func averageBumpReuse(g nixosGraph, f layerer, maxLayers int) float64 {
	before := f(g.paths, g.toplevel, maxLayers)
	var sum float64
	for i, b := range g.bumps {
		p, top := change(g.paths, g.toplevel, b, uint64(100+i))
		sum += reuse(before, f(p, top, maxLayers))
	}
	return sum / float64(len(g.bumps))
}

func TestSyntheticGraphIsNixOSShaped(t *testing.T) {
	g := genNixOS(3000, 1)
	if len(g.paths) != 3000 {
		t.Fatalf("%d paths, want 3000", len(g.paths))
	}
	checkLayers(t, g.paths, Options{MaxLayers: 124}, ours(g.paths, g.toplevel, 124))
	if a := len(ancestors(g.paths, g.config)); a != 5 { // conf, unit, system-units, etc, activate? no: + toplevel
		t.Logf("config file has %d ancestors", a)
	}
	if !ancestors(g.paths, g.config)[g.toplevel] || !ancestors(g.paths, g.midPkg)[g.toplevel] {
		t.Error("the changed paths are not under the toplevel")
	}
}

// Reuse on a mid-sized graph: ours must beat the popularity contest.
func TestReuseBeatsPopularityContest(t *testing.T) {
	g := genNixOS(4000, 3)
	oc, op := reuseFigures(g, ours, 124)
	pc, pp := reuseFigures(g, popularityContest, 124)
	t.Logf("reuse after a config change: ours %.1f%%, popularity contest %.1f%%", oc, pc)
	t.Logf("reuse after a package bump:  ours %.1f%%, popularity contest %.1f%% (ideal %.1f%%, %d paths change)", op, pp, ideal(g, g.midPkg), len(ancestors(g.paths, g.midPkg)))
	if oc < 99 || oc <= pc {
		t.Errorf("config change: ours %.1f%%, popularity contest %.1f%%", oc, pc)
	}
	if op <= pp {
		t.Errorf("package bump: ours %.1f%%, popularity contest %.1f%%", op, pp)
	}
}

// cpuTime is the process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkAssign times Assign on a 20,000-path NixOS-shaped closure with
// the default budget (125 layers minus the skeleton) and reports the reuse
// figures of ours and of the popularity contest beside it.
func BenchmarkAssign(b *testing.B) {
	g := genNixOS(20000, 1)
	const maxLayers = 124
	opts := Options{MaxLayers: maxLayers, Toplevel: g.toplevel}
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := Assign(g.paths, opts); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time per call: less noisy than ns/op on a busy shared machine.
	cpu := float64(cpuTime()-cpu0) / float64(b.N)
	// After the loop: b.Loop's first call resets user metrics.
	oc, op := reuseFigures(g, ours, maxLayers)
	pc, pp := reuseFigures(g, popularityContest, maxLayers)
	b.ReportMetric(cpu/1e6, "cpu-ms/op")
	b.ReportMetric(oc, "reuse-config-%")
	b.ReportMetric(pc, "popcon-reuse-config-%")
	b.ReportMetric(op, "reuse-pkg-%")
	b.ReportMetric(pp, "popcon-reuse-pkg-%")
	b.ReportMetric(averageBumpReuse(g, ours, maxLayers), "avg-reuse-bumps-%")
	b.ReportMetric(averageBumpReuse(g, popularityContest, maxLayers), "popcon-avg-reuse-bumps-%")
	var idealSum float64
	for _, x := range g.bumps {
		idealSum += ideal(g, x)
	}
	b.ReportMetric(idealSum/float64(len(g.bumps)), "ideal-avg-reuse-bumps-%")
	b.ReportMetric(ideal(g, g.config), "ideal-reuse-config-%")
	b.ReportMetric(ideal(g, g.midPkg), "ideal-reuse-pkg-%")
	b.ReportMetric(float64(len(ancestors(g.paths, g.midPkg))), "pkg-bump-changed-paths")
}

// A configuration change re-creates the volatile layer and nothing else,
// and a package bump leaves the layers of what does not depend on it alone.
func TestChangesStayLocal(t *testing.T) {
	for seed := range uint64(6) {
		g := genNixOS(1500+int(seed)*500, seed)
		before := ours(g.paths, g.toplevel, 60)
		p, top := change(g.paths, g.toplevel, g.config, seed)
		after := ours(p, top, 60)
		if len(after) != len(before) {
			t.Fatalf("seed %d: %d layers before, %d after a config change", seed, len(before), len(after))
		}
		for i := range len(before) - 1 {
			if !reflect.DeepEqual(before[i], after[i]) {
				t.Errorf("seed %d: a config change altered stable layer %d", seed, i)
			}
		}
		if reflect.DeepEqual(before[len(before)-1], after[len(after)-1]) {
			t.Errorf("seed %d: the volatile layer did not change", seed)
		}

		changed := ancestors(g.paths, g.midPkg)
		p, top = change(g.paths, g.toplevel, g.midPkg, seed)
		old := map[string]bool{}
		for _, l := range ours(p, top, 60) {
			old[strings.Join(l.Paths, "\n")] = true
		}
		for i, l := range before {
			touched := slices.ContainsFunc(l.Paths, func(s string) bool { return changed[s] })
			if !touched && !old[strings.Join(l.Paths, "\n")] {
				t.Errorf("seed %d: layer %d holds nothing that depends on %s, yet it changed", seed, i, g.midPkg)
			}
		}
	}
}
