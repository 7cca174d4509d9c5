package layers

import (
	"cmp"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"testing"
)

// The layerings the benchmarks compare ours with: nixpkgs dockerTools'
// default (auto-layer) and its former default (the popularity contest),
// and nix2container's.

// layerer splits a closure into at most maxLayers layers, bottom first.
type layerer func(paths []Path, toplevel string, maxLayers int) []Layer

func ours(paths []Path, toplevel string, maxLayers int) []Layer {
	l, err := Assign(paths, Options{MaxLayers: maxLayers, Toplevel: toplevel})
	if err != nil {
		panic(err)
	}
	return l
}

// plainGraph is a closure numbered in input order, self-references dropped.
type plainGraph struct {
	paths []Path
	refs  [][]int32
	users [][]int32
}

func newPlainGraph(paths []Path) *plainGraph {
	g := &plainGraph{paths: paths, refs: make([][]int32, len(paths)), users: make([][]int32, len(paths))}
	index := make(map[string]int32, len(paths))
	for i, p := range paths {
		index[p.Path] = int32(i)
	}
	for i, p := range paths {
		for _, r := range p.References {
			if j := index[r]; j != int32(i) && !slices.Contains(g.refs[i], j) {
				g.refs[i] = append(g.refs[i], j)
				g.users[j] = append(g.users[j], int32(i))
			}
		}
	}
	return g
}

// rootsFirst returns the paths in topological order, users before what they
// reference: the roots in index order, then as Kahn's algorithm frees them.
func (g *plainGraph) rootsFirst() []int32 {
	indeg := make([]int, len(g.paths))
	var topo []int32
	for i := range g.paths {
		if indeg[i] = len(g.users[i]); indeg[i] == 0 {
			topo = append(topo, int32(i))
		}
	}
	for k := 0; k < len(topo); k++ {
		for _, j := range g.refs[topo[k]] {
			if indeg[j]--; indeg[j] == 0 {
				topo = append(topo, j)
			}
		}
	}
	return topo
}

// reach returns the paths reachable from i through next, i excluded.
func reach(next [][]int32, i int32, seen []int32, stamp int32) []int32 {
	var out []int32
	queue := []int32{i}
	seen[i] = stamp
	for k := 0; k < len(queue); k++ {
		for _, j := range next[queue[k]] {
			if seen[j] != stamp {
				seen[j] = stamp
				queue = append(queue, j)
				out = append(out, j)
			}
		}
	}
	return out
}

// pathKey is auto-layer.py's sort key: the name after the hash, then the hash.
func pathKey(p string) (string, string) {
	base := p[strings.LastIndexByte(p, '/')+1:]
	h, name, _ := strings.Cut(base, "-")
	return name, h
}

func comparePathKeys(a, b string) int {
	an, ah := pathKey(a)
	bn, bh := pathKey(b)
	return cmp.Or(cmp.Compare(an, bn), cmp.Compare(ah, bh))
}

// primarySet is a set of auto-layer's primary paths, numbered in the order
// they were chosen (at most 256: every primary keeps a layer of its own,
// so there are never more primaries than layers).
type primarySet [4]uint64

func (s primarySet) with(k int) primarySet { s[k/64] |= 1 << (k % 64); return s }
func (s primarySet) minus(t primarySet) primarySet {
	for w := range s {
		s[w] &^= t[w]
	}
	return s
}
func (s primarySet) meets(t primarySet) bool {
	for w := range s {
		if s[w]&t[w] != 0 {
			return true
		}
	}
	return false
}

// autoLayer ports nixpkgs' pkgs/build-support/docker/auto-layer.py
// (dockerTools.streamLayeredImage's default since PR #355189) step by step:
// the largest path not yet a primary becomes one, with its own layer; each
// of its dependencies is re-keyed by the set of primaries that use it (the
// new primary's users dropped from the set, the new primary added unless a
// primary among its dependencies already covers it); paths with the same
// set share a layer; primaries are added until the next one would exceed
// the limit. Layers are ordered by the NAR size of their closure.
//
// Two details the script leaves to Python: ties in size are taken in the
// order of the references graph (Nix writes it sorted by path; the script
// pops the last of a stable sort, so the larger path first), and ties in
// closure size by the layer's first path (the script's order there depends
// on set iteration). streamLayeredImage passes maxLayers-1 (default 99; one
// layer is the customisation layer).
func autoLayer(paths []Path, _ string, maxLayers int) []Layer {
	if maxLayers > 256 {
		panic("autoLayer: at most 256 layers")
	}
	g := newPlainGraph(paths)
	n := len(paths)
	bySize := make([]int32, n)
	for i := range bySize {
		bySize[i] = int32(i)
	}
	slices.SortFunc(bySize, func(a, b int32) int {
		return cmp.Or(cmp.Compare(paths[a].NarSize, paths[b].NarSize), cmp.Compare(paths[a].Path, paths[b].Path))
	})
	split := make([]primarySet, n)
	primary := make([]int, n) // 1 + the primary number, 0 if not a primary
	seen := make([]int32, n)
	stamp := int32(0)
	// How many paths have each set: the layer count is the number of keys.
	count := map[primarySet]int{{}: n}
	type move struct {
		i  int32
		to primarySet
	}
	var moves []move
	for k := 0; len(bySize) > 0; k++ {
		p := bySize[len(bySize)-1]
		bySize = bySize[:len(bySize)-1]
		moves = append(moves[:0], move{p, primarySet{}.with(k)})
		stamp++
		deps := reach(g.refs, p, seen, stamp)
		stamp++
		users := reach(g.users, p, seen, stamp)
		var depPrimaries, userPrimaries primarySet
		for _, d := range deps {
			if primary[d] > 0 {
				depPrimaries = depPrimaries.with(primary[d] - 1)
			}
		}
		for _, u := range users {
			if primary[u] > 0 {
				userPrimaries = userPrimaries.with(primary[u] - 1)
			}
		}
		for _, d := range deps {
			s := split[d].minus(userPrimaries)
			if !s.meets(depPrimaries) {
				s = s.with(k)
			}
			moves = append(moves, move{d, s})
		}
		next := maps.Clone(count)
		for _, m := range moves {
			if next[split[m.i]]--; next[split[m.i]] == 0 {
				delete(next, split[m.i])
			}
			next[m.to]++
		}
		if len(next) > maxLayers {
			break
		}
		for _, m := range moves {
			split[m.i] = m.to
		}
		count = next
		primary[p] = k + 1
	}

	groups := map[primarySet][]int32{}
	for i, s := range split {
		groups[s] = append(groups[s], int32(i))
	}
	type info struct {
		layer   Layer
		closure int64
	}
	var infos []info
	for _, members := range groups {
		var l Layer
		stamp++
		var closure int64
		for _, i := range members {
			l.Paths = append(l.Paths, paths[i].Path)
			l.Size += paths[i].NarSize
			if seen[i] != stamp {
				seen[i] = stamp
				closure += paths[i].NarSize
			}
			for _, j := range reach(g.refs, i, seen, stamp) {
				closure += paths[j].NarSize
			}
		}
		slices.SortFunc(l.Paths, comparePathKeys)
		infos = append(infos, info{l, closure})
	}
	slices.SortFunc(infos, func(a, b info) int {
		return cmp.Or(cmp.Compare(a.closure, b.closure), comparePathKeys(a.layer.Paths[0], b.layer.Paths[0]))
	})
	out := make([]Layer, len(infos))
	for i, in := range infos {
		out[i] = in.layer
		slices.Sort(out[i].Paths)
	}
	return out
}

// popularityContest re-implements nixpkgs dockerTools' former default
// layering from its published description (pkgs/build-support/references-by-popularity,
// still reachable through streamLayeredImage's layeringPipeline): the
// reference graph is unrolled into a tree from the roots, every leaf
// counter is merged into its parent, incremented at each merge, and a
// path's popularity is its final count; paths are sorted by popularity
// (most popular first, ties by name without the hash), the first
// maxLayers-1 get a layer each and the rest share the last one.
//
// Unrolled, the count of X is the sum over every path N that has X in its
// closure of the number of root-to-N paths, which is computed here with
// closure bitsets instead of unrolling the tree.
func popularityContest(paths []Path, _ string, maxLayers int) []Layer {
	order, _ := popularityOrder(paths)
	return onePerPath(paths, order, maxLayers)
}

// onePerPath gives each of the first maxLayers-1 paths of order a layer
// and puts the rest in the last one.
func onePerPath(paths []Path, order []string, maxLayers int) []Layer {
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
	g := newPlainGraph(paths)
	topo := g.rootsFirst()
	routes := make([]float64, n) // root-to-N path counts
	for _, i := range topo {
		if len(g.users[i]) == 0 {
			routes[i] = 1
		}
		for _, j := range g.refs[i] {
			routes[j] += routes[i]
		}
	}
	words := (n + 63) / 64
	closure := make([]uint64, n*words)
	for k := n - 1; k >= 0; k-- {
		i := int(topo[k])
		c := closure[i*words : (i+1)*words]
		c[i/64] |= 1 << (i % 64)
		for _, j := range g.refs[i] {
			for w, v := range closure[int(j)*words : int(j+1)*words] {
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
	return rank(paths, pop)
}

// rank sorts paths by score, highest first, ties by name without the hash.
func rank(paths []Path, score []float64) ([]string, map[string]float64) {
	order := make([]int, len(paths))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(score[b], score[a]), comparePathKeys(paths[a].Path, paths[b].Path))
	})
	names := make([]string, len(paths))
	byName := map[string]float64{}
	for k, i := range order {
		names[k] = paths[i].Path
		byName[paths[i].Path] = score[i]
	}
	return names, byName
}

// nix2container ports nix2container's layering (closure/popularity.go,
// closure/layered.go, nix/layers.go in nlewo/nix2container): a path's score
// is 1 plus the scores of its referrers (the number of reference chains
// ending at it), paths are ranked by score, the first maxLayers-1 get a
// layer each and the rest share the last. Its maxLayers defaults to 1: one
// layer for the whole closure. (Its ties follow gonum's topological sort,
// which is not stable; here they are broken by name.)
func nix2container(paths []Path, _ string, maxLayers int) []Layer {
	return onePerPath(paths, nix2containerOrder(paths), maxLayers)
}

func nix2containerOrder(paths []Path) []string {
	g := newPlainGraph(paths)
	score := make([]float64, len(paths))
	for _, i := range g.rootsFirst() {
		score[i]++
		for _, j := range g.refs[i] {
			score[j] += score[i]
		}
	}
	order, _ := rank(paths, score)
	return order
}

// nix2containerDefault is nix2container with its default maxLayers (1).
func nix2containerDefault(paths []Path, toplevel string, _ int) []Layer {
	return nix2container(paths, toplevel, 1)
}

// A small graph whose layers were computed by auto-layer.py itself, for
// every limit: the port gives the same layers in the same order.
func TestAutoLayerMatchesScript(t *testing.T) {
	sizes := map[rune]int64{'A': 100, 'B': 50, 'C': 40, 'D': 30, 'E': 5, 'F': 60, 'G': 1}
	edges := map[rune]string{'A': "BC", 'B': "D", 'C': "DE", 'F': "EG"}
	path := func(c rune) string { return "/nix/store/" + strings.Repeat(string(c), 32) + "-" + string(c) }
	var paths []Path
	for _, c := range "ABCDEFG" {
		p := Path{Path: path(c), NarSize: sizes[c]}
		for _, r := range edges[c] {
			p.References = append(p.References, path(r))
		}
		paths = append(paths, p)
	}
	for limit, want := range map[int]string{
		1: "ABCDEFG",
		2: "FG ABCDE",
		3: "E FG ABCD",
		4: "E FG BD AC",
		5: "E FG BD AC", // a fifth primary would make seven layers
		7: "G E D F C B A",
	} {
		var got []string
		for _, l := range autoLayer(paths, "", limit) {
			var s string
			for _, p := range l.Paths {
				s += p[len(p)-1:]
			}
			got = append(got, s)
		}
		if g := strings.Join(got, " "); g != want {
			t.Errorf("limit %d: %s, want %s", limit, g, want)
		}
	}
}
