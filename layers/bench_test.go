package layers

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
)

// nixosGraph is a synthetic, NixOS-shaped closure.
type nixosGraph struct {
	paths    []Path
	toplevel string
	config   string // a config file referenced by a unit file
	midPkg   string // a package in the middle of the graph
	// bumps are packages changing 1–20% of the closure, for an average.
	bumps []string
	// For adding services: system-units, systemd, glibc, and the packages
	// (oldest, most popular first).
	units, systemd, glibc string
	pkgs                  []string
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
	g := nixosGraph{
		paths: paths, toplevel: paths[top].Path, config: config, midPkg: mid, bumps: bumps,
		units: paths[units].Path, systemd: paths[systemd].Path, glibc: paths[glibc].Path,
	}
	for i := base; i < pkgEnd; i++ {
		g.pkgs = append(g.pkgs, paths[i].Path)
	}
	return g
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

// image is one closure to layer: a system and its toplevel.
type image struct {
	paths    []Path
	toplevel string
}

// genFamily returns a base system of n paths and three members that each
// enable one more service on it (the shapes of nginx, postgresql and
// redis): the service's package, its own libraries and some of a pool of
// libraries the services share, a unit and a config file; system-units,
// etc, the activation script and the toplevel change with it.
func genFamily(n int, seed uint64) []image {
	const (
		kib = 1 << 10
		mib = 1 << 20
	)
	g := genNixOS(n, seed)
	rng := rand.New(rand.NewPCG(seed, 77))
	lognormal := func(median float64, sigma float64) int64 {
		return int64(math.Exp(rng.NormFloat64()*sigma + math.Log(median)))
	}
	basePkg := func() string { // biased towards the early, popular packages
		u := rng.Float64()
		return g.pkgs[int(float64(len(g.pkgs))*u*u)]
	}
	var pool []Path
	for k := range 8 {
		size := lognormal(600*kib, 1)
		if k == 0 {
			size = 30*mib + rng.Int64N(10*mib) // an icu
		}
		p := Path{Path: storePath(rng, fmt.Sprintf("shared-lib%d-2.0", k)), NarSize: size, References: []string{g.glibc}}
		for range rng.IntN(3) {
			p.References = append(p.References, basePkg())
		}
		if k > 1 && rng.IntN(2) == 0 {
			p.References = append(p.References, pool[rng.IntN(k)].Path)
		}
		pool = append(pool, p)
	}
	out := []image{{g.paths, g.toplevel}}
	for s, svc := range []struct {
		name string
		size int64
	}{{"nginx-1.28.0", 6 * mib}, {"postgresql-17.6", 60 * mib}, {"redis-8.2.1", 12 * mib}} {
		var added []Path
		main := Path{Path: storePath(rng, svc.name), NarSize: svc.size, References: []string{g.glibc, basePkg(), basePkg()}}
		for k := range 2 + rng.IntN(7) {
			p := Path{Path: storePath(rng, fmt.Sprintf("svc%d-lib%d-1.0", s, k)), NarSize: lognormal(300*kib, 1.2), References: []string{g.glibc, basePkg()}}
			if k > 0 && rng.IntN(2) == 0 {
				p.References = append(p.References, added[rng.IntN(k)].Path)
			}
			added = append(added, p)
			main.References = append(main.References, p.Path)
		}
		for k, p := range pool {
			if k == 0 && s == 1 || rng.IntN(10) < 3 {
				main.References = append(main.References, p.Path)
			}
		}
		// The pool libraries the service needs, with their own pool references.
		need := map[string]bool{}
		for changed := true; changed; {
			changed = false
			for _, p := range pool {
				if need[p.Path] {
					continue
				}
				for _, q := range append([]Path{main}, pool...) {
					if (q.Path == main.Path || need[q.Path]) && slices.Contains(q.References, p.Path) {
						need[p.Path], changed = true, true
						break
					}
				}
			}
		}
		for _, p := range pool {
			if need[p.Path] {
				added = append(added, p)
			}
		}
		conf := Path{Path: storePath(rng, svc.name+".conf"), NarSize: 4 * kib, References: []string{main.Path}}
		unit := Path{Path: storePath(rng, "unit-"+svc.name+".service"), NarSize: 2 * kib, References: []string{main.Path, conf.Path, g.systemd}}
		added = append(added, main, conf, unit)
		paths := slices.Clone(g.paths)
		for i, p := range paths {
			if p.Path == g.units {
				paths[i].References = append(slices.Clone(p.References), unit.Path)
			}
		}
		paths = append(paths, added...)
		paths, top := change(paths, g.toplevel, g.units, seed*10+uint64(s))
		out = append(out, image{paths, top})
	}
	return out
}

// share is a reuse figure: by blob, the share of an image's bytes in
// layers that an image already there has too (a registry or a layer store
// keyed by digest); by chain, only layers whose whole stack below is the
// same count (a store keyed by chain ID, as Docker's).
type share struct{ blob, chain float64 }

func (s share) add(t share) share     { return share{s.blob + t.blob, s.chain + t.chain} }
func (s share) scale(f float64) share { return share{s.blob * f, s.chain * f} }
func layerKey(l Layer) string         { return strings.Join(l.Paths, "\n") }
func pathSizes(ls []Layer) (total int64) {
	for _, l := range ls {
		total += l.Size
	}
	return total
}
func percent(part, total int64) float64 { return 100 * float64(part) / float64(max(total, 1)) }

// shareOf measures img's layers against the layers of the images there.
func shareOf(there [][]Layer, img []Layer) share {
	blobs := map[string]bool{}
	for _, ls := range there {
		for _, l := range ls {
			blobs[layerKey(l)] = true
		}
	}
	var blob, chain int64
	for _, l := range img {
		if blobs[layerKey(l)] {
			blob += l.Size
		}
	}
	for _, ls := range there {
		var prefix int64
		for k := 0; k < len(ls) && k < len(img) && layerKey(ls[k]) == layerKey(img[k]); k++ {
			prefix += img[k].Size
		}
		chain = max(chain, prefix)
	}
	total := pathSizes(img)
	return share{percent(blob, total), percent(chain, total)}
}

// ceiling is the share with one path per layer: the bytes of img's paths
// that an image there has too.
func ceiling(there []image, img image) float64 {
	have := map[string]bool{}
	for _, t := range there {
		for _, p := range t.paths {
			have[p.Path] = true
		}
	}
	var kept, total int64
	for _, p := range img.paths {
		total += p.NarSize
		if have[p.Path] {
			kept += p.NarSize
		}
	}
	return percent(kept, total)
}

// A case is a set of images already there and one built next.
type reuseCase struct {
	there []image
	next  image
}

// measure averages the reuse of f over cases, and the ceiling.
func measure(cases []reuseCase, f layerer, maxLayers int) (s share, ceil float64) {
	memo := map[string][]Layer{}
	layered := func(img image) []Layer {
		if l, ok := memo[img.toplevel]; ok {
			return l
		}
		l := f(img.paths, img.toplevel, maxLayers)
		memo[img.toplevel] = l
		return l
	}
	for _, c := range cases {
		var there [][]Layer
		for _, t := range c.there {
			there = append(there, layered(t))
		}
		s = s.add(shareOf(there, layered(c.next)))
		ceil += ceiling(c.there, c.next)
	}
	return s.scale(1 / float64(len(cases))), ceil / float64(len(cases))
}

// familyCases: each member is built with the rest of the family there.
func familyCases(family []image) []reuseCase {
	var out []reuseCase
	for m := 1; m < len(family); m++ {
		var there []image
		for k, img := range family {
			if k != m {
				there = append(there, img)
			}
		}
		out = append(out, reuseCase{there, family[m]})
	}
	return out
}

// bumpCases rebuild g after a change to each of xs, one at a time.
func bumpCases(g image, xs []string, seed uint64) []reuseCase {
	var out []reuseCase
	for i, x := range xs {
		p, top := change(g.paths, g.toplevel, x, seed+uint64(i))
		out = append(out, reuseCase{[]image{g}, image{p, top}})
	}
	return out
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

func TestSyntheticGraphIsNixOSShaped(t *testing.T) {
	g := genNixOS(3000, 1)
	if len(g.paths) != 3000 {
		t.Fatalf("%d paths, want 3000", len(g.paths))
	}
	checkLayers(t, g.paths, Options{MaxLayers: 124}, ours(g.paths, g.toplevel, 124))
	if !ancestors(g.paths, g.config)[g.toplevel] || !ancestors(g.paths, g.midPkg)[g.toplevel] {
		t.Error("the changed paths are not under the toplevel")
	}
	family := genFamily(3000, 1)
	for m, img := range family {
		checkLayers(t, img.paths, Options{MaxLayers: 124}, ours(img.paths, img.toplevel, 124))
		if c := ceiling(family[:1], img); m > 0 && (c < 90 || c > 99.9) {
			t.Errorf("member %d shares %.1f%% of its bytes with the base, want a few MiB more and the system paths renamed", m, c)
		}
	}
}

// Reuse on a mid-sized graph: ours must beat the others after a config
// change and a package bump, and on a family.
func TestReuseBeatsOthers(t *testing.T) {
	g := genNixOS(4000, 3)
	img := image{g.paths, g.toplevel}
	for _, c := range []struct {
		name  string
		cases []reuseCase
	}{
		{"config change", bumpCases(img, []string{g.config}, 11)},
		{"package bump", bumpCases(img, []string{g.midPkg}, 12)},
		{"family", familyCases(genFamily(4000, 3))},
	} {
		o, ceil := measure(c.cases, ours, 124)
		for _, other := range []struct {
			name string
			f    layerer
		}{{"auto-layer", autoLayer}, {"popularity contest", popularityContest}, {"nix2container", nix2container}} {
			s, _ := measure(c.cases, other.f, 124)
			t.Logf("%s: ours %.1f%% by blob, %.1f%% by chain; %s %.1f%%, %.1f%%; one path per layer %.1f%%", c.name, o.blob, o.chain, other.name, s.blob, s.chain, ceil)
			if o.blob <= s.blob {
				t.Errorf("%s: ours %.1f%% by blob, %s %.1f%%", c.name, o.blob, other.name, s.blob)
			}
		}
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
// the default budget (125 layers minus the skeleton).
func BenchmarkAssign(b *testing.B) {
	g := genNixOS(20000, 1)
	opts := Options{MaxLayers: 124, Toplevel: g.toplevel}
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := Assign(g.paths, opts); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time per call: less noisy than ns/op on a busy shared machine.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}

// The layerings compared, all with the same budget (nixpkgs' own defaults
// are 99 store-path layers for dockerTools, 1 for nix2container).
var strategies = []struct {
	name string
	f    layerer
}{
	{"nixos2docker", ours},
	{"auto-layer (dockerTools default)", autoLayer},
	{"popularity contest (dockerTools before)", popularityContest},
	{"nix2container, maxLayers=124", nix2container},
	{"nix2container default (1 layer)", nix2containerDefault},
}

// A comparison table: one column per kind of change, one row per layering.
type column struct {
	name  string
	cases []reuseCase
}

func printComparison(b *testing.B, title string, cols []column, maxLayers int) map[string][]share {
	var buf strings.Builder
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(&buf, "%s, %d layers; reuse in %% of bytes, by blob / by chain:\n", title, maxLayers)
	fmt.Fprint(w, "\t")
	for _, c := range cols {
		fmt.Fprintf(w, "%s (%d)\t", c.name, len(c.cases))
	}
	fmt.Fprintln(w)
	out := map[string][]share{}
	ceils := make([]float64, len(cols))
	for _, s := range strategies {
		fmt.Fprintf(w, "%s\t", s.name)
		for k, c := range cols {
			sh, ceil := measure(c.cases, s.f, maxLayers)
			ceils[k] = ceil
			out[s.name] = append(out[s.name], sh)
			fmt.Fprintf(w, "%.1f / %.1f\t", sh.blob, sh.chain)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "one path per layer (ceiling)\t")
	for k := range cols {
		fmt.Fprintf(w, "%.1f\t", ceils[k])
		out["ceiling"] = append(out["ceiling"], share{ceils[k], ceils[k]})
	}
	fmt.Fprintln(w)
	w.Flush()
	b.Log("\n" + buf.String())
	return out
}

func syntheticColumns(n int, seeds int) []column {
	g := genNixOS(n, 1)
	img := image{g.paths, g.toplevel}
	var family []reuseCase
	for seed := range uint64(seeds) {
		family = append(family, familyCases(genFamily(n, seed+1))...)
	}
	return []column{
		{"config change", bumpCases(img, []string{g.config}, 11)},
		{"mid-level bump", bumpCases(img, []string{g.midPkg}, 12)},
		{"bumps", bumpCases(img, g.bumps, 100)},
		{"family members", family},
	}
}

// BenchmarkCompare prints how much of an image's bytes each layering keeps
// across changes, on synthetic NixOS-shaped closures of 2,000 and 20,000
// paths and on Debian's package graph (this machine's apt indexes), and
// reports ours and the ceiling as metrics.
func BenchmarkCompare(b *testing.B) {
	const maxLayers = 124
	for _, n := range []int{2000, 20000} {
		b.Run(fmt.Sprintf("nixos-%d", n), func(b *testing.B) {
			cols := syntheticColumns(n, 4)
			for b.Loop() {
			}
			r := printComparison(b, fmt.Sprintf("synthetic NixOS closure, %d paths", n), cols, maxLayers)
			reportOurs(b, cols, r)
		})
	}
	b.Run("debian", func(b *testing.B) {
		cols, title, err := debianColumns()
		if err != nil {
			b.Skipf("no real-world graph: %v", err)
		}
		for b.Loop() {
		}
		r := printComparison(b, title, cols, maxLayers)
		reportOurs(b, cols, r)
	})
}

func reportOurs(b *testing.B, cols []column, r map[string][]share) {
	for k, c := range cols {
		name := strings.ReplaceAll(c.name, " ", "-")
		b.ReportMetric(r["nixos2docker"][k].blob, name+"-blob-%")
		b.ReportMetric(r["nixos2docker"][k].chain, name+"-chain-%")
		b.ReportMetric(r["auto-layer (dockerTools default)"][k].blob, name+"-autolayer-blob-%")
		b.ReportMetric(r["ceiling"][k].blob, name+"-ceiling-%")
	}
}

// debianColumns: a Debian desktop system (debianRoots) after
// each update of the release's -updates and -security suites that touches
// it, after all of them (a point release), and a family (the base with
// nginx, postgresql or redis-server).
func debianColumns() ([]column, string, error) {
	idx, err := readDebian()
	if err != nil {
		return nil, "", err
	}
	roots := idx.debianRoots()
	none := func(string) bool { return false }
	all := func(string) bool { return true }
	paths, top := idx.closure(roots, none)
	base := image{paths, top}
	in := map[string]bool{}
	for _, p := range paths {
		in[p.Path] = true
	}
	var bumps []reuseCase
	var updated []string
	for name := range idx.updates {
		updated = append(updated, name)
	}
	slices.Sort(updated)
	for _, name := range updated {
		p, t := idx.closure(roots, func(s string) bool { return s == name })
		if t != top {
			bumps = append(bumps, reuseCase{[]image{base}, image{p, t}})
		}
	}
	p, t := idx.closure(roots, all)
	point := []reuseCase{{[]image{base}, image{p, t}}}
	family := []image{base}
	for _, svc := range []string{"nginx", "postgresql", "redis-server"} {
		if _, ok := idx.base[svc]; !ok {
			return nil, "", fmt.Errorf("%s is not in the %s index", svc, idx.release)
		}
		p, t := idx.closure(append(slices.Clone(roots), svc), none)
		family = append(family, image{p, t})
	}
	var size int64
	for _, p := range paths {
		size += p.NarSize
	}
	title := fmt.Sprintf("Debian %s desktop (required, important, standard, task-gnome-desktop), %d paths, %d MiB, %d updates in its closure", idx.release, len(paths), size>>20, len(bumps))
	return []column{
		{"single updates", bumps},
		{"point release", point},
		{"family members", familyCases(family)},
	}, title, nil
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
