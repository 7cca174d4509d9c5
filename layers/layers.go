// Package layers splits a Nix closure into a bounded number of image layers
// so that rebuilding an image after a change re-creates as few bytes as
// possible, and images that differ by a service share most of theirs. The
// BuildKit frontend and the Nix-native image assembler both use it, so both
// faces of nixos2docker give the same layers.
//
// # The problem
//
// A store path's layer has to be re-created whenever any of its members
// changes, and a store path changes whenever it or anything in its closure
// changes (its hash changes). A change to one path X therefore changes X and
// all its ancestors (the paths that depend on it); every layer holding one of
// those is re-created, including the bytes of its members that did not
// change. Those bytes are the waste this package minimises. With one path per
// layer there is no waste, but images are limited to about a hundred layers
// while a NixOS closure has thousands of paths. The same holds between
// images: a system with one more service must group the paths both have in
// the same layers to share them.
//
// # The algorithm
//
//  1. Volatile part. The toplevel, and every path whose referrers are all
//     volatile and that looks generated from configuration — a small file
//     (≤ ConfigFileMaxSize: unit files, config files, scripts) or a link
//     farm (≤ LinkFarmBytesPerRef per reference: etc, system-units,
//     system-path) — form one layer, always the topmost. They change with
//     every configuration change and are small, so they never share a layer
//     with a stable path. A package referenced only by system-path or by a
//     unit file is larger per reference and stays stable.
//  2. Owners. Of the remaining (stable) paths, the largest get layers of
//     their own ("owners"): three quarters of the budget left after the
//     volatile layer. Large paths first because a path's waste is
//     proportional to its size; the popular roots of a NixOS closure (glibc,
//     gcc's libraries, systemd) are among the largest.
//  3. Attachment. Every other stable path P joins the owner whose closure
//     contains P and is smallest. Because P is in that owner's closure, the
//     owner's layer changes exactly when the owner itself changes: an owner's
//     bytes are never wasted, and P's bytes only when something between P and
//     its owner changes — the smallest such closure makes that least likely.
//     Two kinds of owner take less, so that adding a service (a new
//     top-level package with its libraries) does not move paths out of
//     existing layers: a top-level owner (no stable path references it:
//     applications, services) takes only the paths no other stable path
//     uses, as a new service would otherwise take the libraries it shares
//     with the system whenever its closure is the smallest; and an owner
//     holding at least 1/SoloShare of the stable bytes takes none, so a
//     small path moving never re-creates its large layer.
//  4. Leftovers. Stable paths that no owner takes (packages referenced only
//     from the volatile part or shared by top-level owners, and what only
//     they use) join the lowest "top" (a leftover no other leftover
//     references) that depends on them. Those groups, sorted by height, are
//     cut into the remaining quarter of the budget at content-defined points
//     (after a group whose package name hashes below the square root of its
//     bytes over a target on a fixed scale), so a change in one group does
//     not shift the others into other layers. With no leftovers, the whole
//     budget goes to owners.
//
// Ties are broken on the name without the hash before the full name: that
// name survives a rebuild, so a rebuilt dependency does not reshuffle the
// layers of paths that did not change.
//
// Layers are ordered from the smallest owner closure (most stable, e.g.
// glibc) to the volatile layer, so a registry or a layer store that keys
// layers by their chain keeps the longest prefix.
//
// # Compared with dockerTools and nix2container
//
// nixpkgs' dockerTools (streamLayeredImage) defaults to auto-layer
// (pkgs/build-support/docker/auto-layer.py): the largest paths become layer
// roots with the dependencies only they use, and every other path is keyed
// by the set of roots that use it. The toplevel and the configuration share
// the layer of every path no root uses (6,156 paths, 19 % of the bytes of
// the 20,000-path benchmark closure), which a configuration change
// re-creates. Its former default, the
// popularity contest (references-by-popularity), gives the most referenced
// paths a layer each and everything else, configuration included, one
// final layer; nix2container ranks paths the same way and defaults to one
// layer for the whole closure. BenchmarkCompare measures all of them side
// by side (config change, package bumps, a family of images) on synthetic
// NixOS-shaped closures and on Debian's package graph.
//
// Assign is deterministic: the input's order does not matter. Most of its
// time goes to building the graph (sorting and indexing the paths: about
// two thirds of 40 ms of CPU for 20,000 paths and 124 layers,
// BenchmarkAssign); closure counting is a tenth.
package layers

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/storepath"
)

// Which paths reachable only through configuration paths are configuration
// themselves: small files (unit files, config files, scripts) and link farms
// (etc, system-units, system-path, buildEnvs: a few symlinks per reference).
// A package referenced only by system-path or a unit file is stable; it is
// usually larger, with fewer references per byte.
const (
	ConfigFileMaxSize   = 64 << 10
	LinkFarmBytesPerRef = 32 << 10
	VolatileMaxSize     = 16 << 20
)

// An owner holding at least 1/SoloShare of the stable bytes takes no
// attached paths: a change among small paths (an attachment moving, a new
// owner) then never re-creates its large layer.
const SoloShare = 32

// configLike reports whether path i looks generated from configuration.
func (g *graph) configLike(i int32) bool {
	s := g.size[i]
	return s <= ConfigFileMaxSize || (s <= VolatileMaxSize && s <= LinkFarmBytesPerRef*int64(len(g.refs[i])))
}

// Path is one store path of the closure.
type Path struct {
	Path       string
	NarSize    int64
	References []string
}

// Layer is one group of store paths.
type Layer struct {
	// Paths is sorted.
	Paths []string
	// Size is the sum of the paths' NAR sizes.
	Size int64
}

// Options tune Assign.
type Options struct {
	// MaxLayers is the budget for store-path layers, at least 1.
	MaxLayers int
	// Toplevel is the volatile root (a NixOS system's toplevel); it must be
	// one of the paths, or "" when there is none.
	Toplevel string
}

// FromSpec returns the spec's closure as Assign's input.
func FromSpec(s *imagespec.Spec) []Path {
	out := make([]Path, len(s.Closure))
	for i, p := range s.Closure {
		out[i] = Path{Path: p.Path, NarSize: p.NarSize, References: p.References}
	}
	return out
}

// graph is the closure with paths numbered in name order, so every later
// step is deterministic whatever the input order.
type graph struct {
	name  []string
	short []string // name without the hash: ties are broken on it first, as it survives rebuilds
	size  []int64
	refs  [][]int32 // references, self-references dropped, sorted
	rrefs [][]int32 // referrers, sorted
	topo  []int32   // referrers before references
}

func newGraph(paths []Path) (*graph, error) {
	n := len(paths)
	sorted := slices.Clone(paths)
	slices.SortFunc(sorted, func(a, b Path) int { return cmp.Compare(a.Path, b.Path) })
	g := &graph{
		name:  make([]string, n),
		short: make([]string, n),
		size:  make([]int64, n),
		refs:  make([][]int32, n),
		rrefs: make([][]int32, n),
	}
	index := make(map[string]int32, n)
	for i, p := range sorted {
		if p.Path == "" {
			return nil, errors.New("layers: a path has an empty name")
		}
		if p.NarSize < 0 {
			return nil, fmt.Errorf("layers: %s has a negative size (%d)", p.Path, p.NarSize)
		}
		if i > 0 && sorted[i-1].Path == p.Path {
			return nil, fmt.Errorf("layers: %s appears twice", p.Path)
		}
		index[p.Path] = int32(i)
		g.name[i] = p.Path
		g.short[i] = storepath.Name(p.Path)
		g.size[i] = p.NarSize
	}
	for i, p := range sorted {
		refs := make([]int32, 0, len(p.References))
		for _, r := range p.References {
			j, ok := index[r]
			if !ok {
				return nil, fmt.Errorf("layers: %s (referenced by %s) is not in the closure", r, p.Path)
			}
			if j != int32(i) {
				refs = append(refs, j)
			}
		}
		slices.Sort(refs)
		refs = slices.Compact(refs)
		g.refs[i] = refs
		for _, j := range refs {
			g.rrefs[j] = append(g.rrefs[j], int32(i))
		}
	}
	// Kahn's algorithm; referrers come in ascending order, so rrefs are
	// sorted already.
	indeg := make([]int, n)
	for i := range n {
		indeg[i] = len(g.rrefs[i])
	}
	g.topo = make([]int32, 0, n)
	for i := range n {
		if indeg[i] == 0 {
			g.topo = append(g.topo, int32(i))
		}
	}
	for k := 0; k < len(g.topo); k++ {
		for _, j := range g.refs[g.topo[k]] {
			if indeg[j]--; indeg[j] == 0 {
				g.topo = append(g.topo, j)
			}
		}
	}
	if len(g.topo) != n {
		for i := range n {
			if indeg[i] > 0 {
				return nil, fmt.Errorf("layers: %s is part of a reference cycle", g.name[i])
			}
		}
	}
	return g, nil
}

// Assign groups paths into at most opts.MaxLayers disjoint layers, ordered
// from the most stable (bottom) to the most volatile (top). Every path is in
// exactly one layer and no layer is empty.
func Assign(paths []Path, opts Options) ([]Layer, error) {
	if opts.MaxLayers < 1 {
		return nil, fmt.Errorf("layers: MaxLayers is %d, at least 1 is needed", opts.MaxLayers)
	}
	if len(paths) == 0 {
		return nil, nil
	}
	g, err := newGraph(paths)
	if err != nil {
		return nil, err
	}
	n := len(g.name)
	if opts.MaxLayers == 1 {
		return []Layer{g.layer(g.topo)}, nil
	}

	volatile := make([]bool, n)
	var volatileSet, stable []int32
	if opts.Toplevel != "" {
		t, found := slices.BinarySearch(g.name, opts.Toplevel)
		if !found {
			return nil, fmt.Errorf("layers: toplevel %s is not in the closure", opts.Toplevel)
		}
		volatile[t] = true
	}
	for _, i := range g.topo {
		if !volatile[i] && len(g.rrefs[i]) > 0 && g.configLike(i) {
			volatile[i] = true
			for _, r := range g.rrefs[i] {
				if !volatile[r] {
					volatile[i] = false
					break
				}
			}
		}
		if volatile[i] {
			volatileSet = append(volatileSet, i)
		} else {
			stable = append(stable, i)
		}
	}

	budget := opts.MaxLayers
	if len(volatileSet) > 0 {
		budget--
	}
	var out []Layer
	if len(stable) > 0 {
		out = g.stableLayers(stable, budget)
	}
	if len(volatileSet) > 0 {
		out = append(out, g.layer(volatileSet))
	}
	return out, nil
}

// stableLayers splits the stable paths (in topological order) into at most
// budget ≥ 1 layers: owners with their attached paths, then leftovers.
func (g *graph) stableLayers(stable []int32, budget int) []Layer {
	n := len(g.name)
	isStable := make([]bool, n)
	for _, i := range stable {
		isStable[i] = true
	}
	// Owner candidates: largest first.
	cand := slices.Clone(stable)
	slices.SortFunc(cand, func(a, b int32) int {
		if c := cmp.Compare(g.size[b], g.size[a]); c != 0 {
			return c
		}
		return g.compare(a, b)
	})

	// closure[o] is the closure size of each candidate that may become an
	// owner.
	closure := make([]int, n)
	g.closureSizes(cand[:min(budget, len(cand))], closure)
	better := func(a, b int32) bool { // a is a better owner than b
		if b < 0 || closure[a] != closure[b] {
			return b < 0 || closure[a] < closure[b]
		}
		return g.compare(a, b) < 0
	}
	isOwner := make([]bool, n)
	var stableBytes int64
	for _, i := range stable {
		stableBytes += g.size[i]
	}
	// owner[i] is i's layer: i itself if it is an owner, else the best
	// owner among its ancestors that takes attached paths, else the top
	// owner it is exclusive to, -1 if none. up[i] is the best owner among
	// i and its ancestors that takes attached paths; dom[i] is the top
	// owner that every chain of stable referrers above i leads to (-1 if
	// none or several).
	owner := make([]int32, n)
	up := make([]int32, n)
	dom := make([]int32, n)
	nOwners := 0
	setOwners := func(k int) (leftovers int) {
		k = min(max(k, 0), len(cand))
		for _, o := range cand[min(nOwners, k):max(nOwners, k)] {
			isOwner[o] = k > nOwners
		}
		nOwners = k
		for _, i := range stable {
			best, d, top := int32(-1), int32(-1), true
			for _, r := range g.rrefs[i] {
				if !isStable[r] {
					continue
				}
				if up[r] >= 0 && better(up[r], best) {
					best = up[r]
				}
				if top {
					d = dom[r]
				} else if d != dom[r] {
					d = -1
				}
				top = false
			}
			up[i], dom[i] = best, d
			switch {
			case isOwner[i]:
				owner[i] = i
				if top {
					dom[i] = i
				} else if g.size[i]*SoloShare < stableBytes {
					up[i] = i
				}
			case best >= 0:
				owner[i] = best
			default:
				owner[i] = d
			}
			if owner[i] < 0 {
				leftovers++
			}
		}
		return leftovers
	}

	// Leftovers depend on little that owners hold, so a single leftover
	// layer would change with almost any package bump: they get a quarter
	// of the budget, fewer if they have fewer top groups, none if there
	// are no leftovers.
	chunks := max(1, budget/4)
	if setOwners(budget-chunks) == 0 {
		setOwners(budget)
		chunks = 0
	} else if tops := g.countTops(stable, owner, isStable); tops < chunks {
		chunks = tops
		if setOwners(budget-chunks) == 0 {
			chunks = 0
		}
	}

	owners := slices.Clone(cand[:nOwners])
	slices.SortFunc(owners, func(a, b int32) int {
		if c := cmp.Compare(closure[a], closure[b]); c != 0 { // most stable first
			return c
		}
		return g.compare(a, b)
	})
	groups := make(map[int32][]int32, nOwners)
	for _, i := range stable {
		if owner[i] >= 0 {
			groups[owner[i]] = append(groups[owner[i]], i)
		}
	}
	out := make([]Layer, 0, nOwners+chunks)
	for _, o := range owners {
		out = append(out, g.layer(groups[o]))
	}
	if chunks > 0 {
		out = append(out, g.leftoverLayers(stable, owner, isStable, chunks)...)
	}
	return out
}

// closureSizes sets closure[c] to the closure size of each c in cands.
func (g *graph) closureSizes(cands []int32, closure []int) {
	if len(cands) > 4096 {
		// Bitsets that wide would cost more than a search per candidate.
		g.closureSizesBFS(cands, closure)
	} else {
		g.closureSizesBitset(cands, closure)
	}
}

// closureSizesBitset counts all closures in one pass: every path carries
// the set of candidates among itself and its ancestors (inherited from its
// referrers) and adds one to each of their counts.
func (g *graph) closureSizesBitset(cands []int32, closure []int) {
	n := len(g.name)
	index := make([]int32, n)
	for i := range index {
		index[i] = -1
	}
	for k, c := range cands {
		index[c] = int32(k)
	}
	words := (len(cands) + 63) / 64
	above := make([]uint64, n*words)
	for _, i := range g.topo {
		row := above[int(i)*words : int(i+1)*words]
		for _, r := range g.rrefs[i] {
			for w, v := range above[int(r)*words : int(r+1)*words] {
				row[w] |= v
			}
		}
		if k := index[i]; k >= 0 {
			row[k/64] |= 1 << (k % 64)
		}
		for w, v := range row {
			for v != 0 {
				closure[cands[w*64+bits.TrailingZeros64(v)]]++
				v &= v - 1
			}
		}
	}
}

// closureSizesBFS searches each candidate's closure.
func (g *graph) closureSizesBFS(cands []int32, closure []int) {
	stamp := make([]int32, len(g.name))
	var queue []int32
	for _, c := range cands {
		// Stamped with c+1, so the array never needs clearing.
		queue = append(queue[:0], c)
		stamp[c] = c + 1
		for k := 0; k < len(queue); k++ {
			for _, j := range g.refs[queue[k]] {
				if stamp[j] != c+1 {
					stamp[j] = c + 1
					queue = append(queue, j)
				}
			}
		}
		closure[c] = len(queue)
	}
}

// countTops counts the leftovers that no stable path references.
func (g *graph) countTops(stable, owner []int32, isStable []bool) int {
	tops := 0
	for _, i := range stable {
		if owner[i] < 0 && !slices.ContainsFunc(g.rrefs[i], func(r int32) bool { return isStable[r] && owner[r] < 0 }) {
			tops++
		}
	}
	return tops
}

// leftoverLayers packs the leftovers (stable paths no owner depends on) into
// at most chunks layers. Each leftover joins a top (a leftover no stable path
// references) that depends on it, the lowest one, so a group changes only
// when its top does; groups are sorted by the top's height (lowest, most
// stable first) and cut into runs of about equal size.
func (g *graph) leftoverLayers(stable, owner []int32, isStable []bool, chunks int) []Layer {
	n := len(g.name)
	height := make([]int32, n)
	for k := len(g.topo) - 1; k >= 0; k-- {
		i := g.topo[k]
		for _, j := range g.refs[i] {
			height[i] = max(height[i], height[j]+1)
		}
	}
	top := make([]int32, n)
	var tops []int32
	for _, i := range stable {
		if owner[i] >= 0 {
			continue
		}
		best := int32(-1)
		for _, r := range g.rrefs[i] {
			if !isStable[r] || owner[r] >= 0 {
				continue
			}
			if t := top[r]; best < 0 || height[t] < height[best] || (height[t] == height[best] && g.compare(t, best) < 0) {
				best = t
			}
		}
		if best < 0 {
			best = i
			tops = append(tops, i)
		}
		top[i] = best
	}
	slices.SortFunc(tops, func(a, b int32) int {
		if c := cmp.Compare(height[a], height[b]); c != 0 {
			return c
		}
		return g.compare(a, b)
	})
	// Groups in that order are cut into runs. The cuts are content-defined:
	// after a group whose package name hashes below its weight (the square
	// root of its bytes: between cutting by count and by size, which keeps
	// most of a bump's changes in few chunks) over a target, so a group that
	// changes, appears or leaves does not shift the others into other
	// layers. The target is the smallest step of a fixed scale that makes at
	// most chunks runs, so it too moves only when a change crosses a step.
	weight := make(map[int32]float64, len(tops))
	for _, i := range stable {
		if owner[i] < 0 {
			weight[top[i]] += float64(g.size[i])
		}
	}
	var total float64
	for t, w := range weight {
		weight[t] = math.Sqrt(w)
		total += weight[t]
	}
	hash := make([]float64, len(tops))
	for k, t := range tops {
		h := fnv.New32a()
		pname, _ := storepath.ParseName(g.short[t])
		h.Write([]byte(pname))
		hash[k] = float64(h.Sum32()+1) / (1 << 32)
	}
	cut := func(k int, target float64) bool { return k+1 < len(tops) && hash[k] < weight[tops[k]]/target }
	target := stepAbove(total / float64(2*chunks))
	for chunks > 1 {
		cuts := 0
		for k := range tops {
			if cut(k, target) {
				cuts++
			}
		}
		if cuts < chunks {
			break
		}
		target *= step
	}
	bucket := make(map[int32]int, len(tops))
	b := 0
	for k, t := range tops {
		bucket[t] = b
		if chunks > 1 && cut(k, target) {
			b++
		}
	}
	members := make([][]int32, min(chunks, len(tops)))
	for _, i := range stable {
		if owner[i] < 0 {
			b := bucket[top[i]]
			members[b] = append(members[b], i)
		}
	}
	out := make([]Layer, 0, len(members))
	for _, m := range members {
		if len(m) > 0 {
			out = append(out, g.layer(m))
		}
	}
	return out
}

// compare orders paths by name without the hash, then by full name.
func (g *graph) compare(a, b int32) int {
	if c := strings.Compare(g.short[a], g.short[b]); c != 0 {
		return c
	}
	return cmp.Compare(a, b) // paths are numbered in name order
}

func (g *graph) layer(members []int32) Layer {
	l := Layer{Paths: make([]string, len(members))}
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	for k, i := range sorted {
		l.Paths[k] = g.name[i]
		l.Size += g.size[i]
	}
	return l
}

// step is the ratio between the targets leftover cuts may use: targets on
// a fixed scale stay put while a change moves the total a little.
var step = math.Exp2(0.25)

// stepAbove is the smallest power of step that is at least x.
func stepAbove(x float64) float64 {
	if x <= 1 {
		return 1
	}
	return math.Pow(step, math.Ceil(math.Log(x)/math.Log(step)))
}
