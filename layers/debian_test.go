package layers

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A real-world closure: Debian's package graph from this machine's apt
// indexes (/var/lib/apt/lists, filled by apt-get update), read with Nix's
// semantics. A package is a store path named by its name, its version and
// the hashes of its dependencies, so it changes when its version or any
// dependency changes; dependency cycles (Debian has a few, Nix has none)
// become one path. "Before" is the release (bookworm); "after" applies the
// suite's updates and security updates, one at a time or all at once (a
// point release).

// aptLists is where apt keeps the indexes.
const aptLists = "/var/lib/apt/lists"

type debPackage struct {
	name, version, priority string
	size                    int64
	depends                 [][]string // alternatives, names only
	provides                []string
}

type debIndex struct {
	release string
	base    map[string]*debPackage // the release
	updates map[string]*debPackage // newer versions from its -updates/-security suites
	provide map[string][]string    // virtual name → providers, sorted
}

var aptListName = regexp.MustCompile(`_dists_([^_]+)_.*_binary-[^_]+_Packages(\.[a-z0-9]+)?$`)

// readDebian reads the indexes, or says why it cannot.
func readDebian() (*debIndex, error) {
	files, _ := filepath.Glob(filepath.Join(aptLists, "*_Packages*"))
	bySuite := map[string][]*debPackage{}
	for _, f := range files {
		m := aptListName.FindStringSubmatch(f)
		if m == nil {
			continue
		}
		data, err := readAptList(f, m[2])
		if err != nil {
			return nil, err
		}
		bySuite[m[1]] = append(bySuite[m[1]], parseDebPackages(data)...)
	}
	if len(bySuite) == 0 {
		return nil, fmt.Errorf("no package indexes in %s (run apt-get update)", aptLists)
	}
	idx := &debIndex{base: map[string]*debPackage{}, updates: map[string]*debPackage{}, provide: map[string][]string{}}
	for s, ps := range bySuite {
		if idx.release == "" || len(ps) > len(bySuite[idx.release]) || (len(ps) == len(bySuite[idx.release]) && s < idx.release) {
			idx.release = s
		}
	}
	newest := func(into map[string]*debPackage, p *debPackage) {
		if q, ok := into[p.name]; !ok || compareDebVersions(p.version, q.version) > 0 {
			into[p.name] = p
		}
	}
	for _, p := range bySuite[idx.release] {
		newest(idx.base, p)
	}
	for s, ps := range bySuite {
		if strings.HasPrefix(s, idx.release+"-") && !strings.HasSuffix(s, "-backports") {
			for _, p := range ps {
				if b, ok := idx.base[p.name]; ok && compareDebVersions(p.version, b.version) > 0 {
					newest(idx.updates, p)
				}
			}
		}
	}
	for _, p := range idx.base {
		for _, v := range p.provides {
			idx.provide[v] = append(idx.provide[v], p.name)
		}
	}
	for _, ps := range idx.provide {
		slices.Sort(ps)
	}
	return idx, nil
}

// readAptList decompresses an index with apt's own helper.
func readAptList(file, ext string) ([]byte, error) {
	if ext == "" {
		return os.ReadFile(file)
	}
	out, err := exec.Command("/usr/lib/apt/apt-helper", "cat-file", file).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-helper cat-file %s: %w", file, err)
	}
	return out, nil
}

func parseDebPackages(data []byte) []*debPackage {
	var out []*debPackage
	var p *debPackage
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	names := func(s string) []string {
		var out []string
		for _, a := range strings.Split(s, ",") {
			a, _, _ = strings.Cut(strings.TrimSpace(a), " ")
			a, _, _ = strings.Cut(a, ":")
			if a = strings.TrimSpace(a); a != "" {
				out = append(out, a)
			}
		}
		return out
	}
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' {
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			p = &debPackage{name: v}
			out = append(out, p)
		case "Version":
			p.version = v
		case "Priority":
			p.priority = v
		case "Installed-Size":
			kib, _ := strconv.ParseInt(v, 10, 64)
			p.size = kib << 10
		case "Depends", "Pre-Depends":
			for _, group := range strings.Split(v, ",") {
				p.depends = append(p.depends, names(strings.ReplaceAll(group, "|", ",")))
			}
		case "Provides":
			p.provides = names(v)
		}
	}
	return out
}

// compareDebVersions compares Debian versions (deb-version(7)): epoch,
// then upstream version and revision, where runs of non-digits compare
// with letters before non-letters and '~' before everything, even the end.
func compareDebVersions(a, b string) int {
	split := func(v string) (int, string, string) {
		epoch := 0
		if e, rest, ok := strings.Cut(v, ":"); ok {
			epoch, _ = strconv.Atoi(e)
			v = rest
		}
		if i := strings.LastIndexByte(v, '-'); i >= 0 {
			return epoch, v[:i], v[i+1:]
		}
		return epoch, v, ""
	}
	order := func(c byte) int {
		switch {
		case c == '~':
			return -1
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			return int(c)
		default:
			return int(c) + 256
		}
	}
	part := func(a, b string) int {
		for a != "" || b != "" {
			for (a != "" && (a[0] < '0' || a[0] > '9')) || (b != "" && (b[0] < '0' || b[0] > '9')) {
				ca, cb := 0, 0
				if a != "" && (a[0] < '0' || a[0] > '9') {
					ca = order(a[0])
				}
				if b != "" && (b[0] < '0' || b[0] > '9') {
					cb = order(b[0])
				}
				if ca != cb {
					return cmp.Compare(ca, cb)
				}
				a, b = a[1:], b[1:]
			}
			da, db := 0, 0
			for a != "" && a[0] >= '0' && a[0] <= '9' {
				da, a = da*10+int(a[0]-'0'), a[1:]
			}
			for b != "" && b[0] >= '0' && b[0] <= '9' {
				db, b = db*10+int(b[0]-'0'), b[1:]
			}
			if da != db {
				return cmp.Compare(da, db)
			}
		}
		return 0
	}
	ea, ua, ra := split(a)
	eb, ub, rb := split(b)
	return cmp.Or(cmp.Compare(ea, eb), part(ua, ub), part(ra, rb))
}

// debianClosure is the Nix-style closure of roots, with the packages in
// updated taken from the updates, and a toplevel referencing the roots.
func (idx *debIndex) closure(roots []string, updated func(string) bool) ([]Path, string) {
	pkg := func(name string) *debPackage {
		if u, ok := idx.updates[name]; ok && updated(name) {
			return u
		}
		return idx.base[name]
	}
	resolve := func(alts []string) string {
		for _, a := range alts {
			if _, ok := idx.base[a]; ok {
				return a
			}
		}
		for _, a := range alts {
			if ps := idx.provide[a]; len(ps) > 0 {
				return ps[0]
			}
		}
		return "" // not satisfiable in this suite: left out
	}
	// The package graph of the closure, names sorted so everything after
	// is deterministic.
	deps := map[string][]string{}
	queue := slices.Clone(roots)
	for _, r := range roots {
		deps[r] = nil
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		var ds []string
		for _, alts := range pkg(name).depends {
			if d := resolve(alts); d != "" && d != name && !slices.Contains(ds, d) {
				ds = append(ds, d)
				if _, seen := deps[d]; !seen {
					deps[d] = nil
					queue = append(queue, d)
				}
			}
		}
		slices.Sort(ds)
		deps[name] = ds
	}
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	slices.Sort(names)

	// Tarjan's strongly connected components come out dependencies first.
	index, low := map[string]int{}, map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	var sccs [][]string
	var visit func(string)
	visit = func(v string) {
		index[v], low[v] = len(index), len(index)
		stack = append(stack, v)
		onStack[v] = true
		for _, w := range deps[v] {
			if _, ok := index[w]; !ok {
				visit(w)
				low[v] = min(low[v], low[w])
			} else if onStack[w] {
				low[v] = min(low[v], index[w])
			}
		}
		if low[v] == index[v] {
			var scc []string
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				scc = append(scc, w)
				if w == v {
					break
				}
			}
			slices.Sort(scc)
			sccs = append(sccs, scc)
		}
	}
	for _, n := range names {
		if _, ok := index[n]; !ok {
			visit(n)
		}
	}
	pathOf := map[string]string{}
	var paths []Path
	for _, scc := range sccs {
		h := sha256.New()
		var p Path
		var refs []string
		for _, m := range scc {
			d := pkg(m)
			fmt.Fprintf(h, "%s %s\n", m, d.version)
			p.NarSize += d.size
			for _, dep := range deps[m] {
				if r := pathOf[dep]; r != "" && !slices.Contains(refs, r) {
					refs = append(refs, r)
				}
			}
		}
		slices.Sort(refs)
		for _, r := range refs {
			fmt.Fprintf(h, "%s\n", r)
		}
		name := scc[0] + "-" + pkg(scc[0]).version
		if len(scc) > 1 {
			name = fmt.Sprintf("%s-and-%d-more", scc[0], len(scc)-1)
		}
		p.Path = "/nix/store/" + nix32(h.Sum(nil)) + "-" + storeName(name)
		p.References = refs
		for _, m := range scc {
			pathOf[m] = p.Path
		}
		paths = append(paths, p)
	}
	h := sha256.New()
	top := Path{NarSize: 20 << 10}
	for _, r := range roots {
		top.References = append(top.References, pathOf[r])
		fmt.Fprintf(h, "%s\n", pathOf[r])
	}
	top.Path = "/nix/store/" + nix32(h.Sum(nil)) + "-debian-system"
	return append(paths, top), top.Path
}

// nix32 is the first 32 characters of Nix's base-32 alphabet over sum.
func nix32(sum []byte) string {
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	var b strings.Builder
	for i := range 32 {
		b.WriteByte(alphabet[sum[i%len(sum)]%32])
	}
	return b.String()
}

// storeName keeps the characters Nix allows in a store path name.
func storeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+-._?=", r)) {
			return r
		}
		return '_'
	}, s)
}

// debianRoots is a desktop system of NixOS's scale (about a thousand
// paths, 1.8 GiB): every required, important and standard package and
// task-gnome-desktop.
func (idx *debIndex) debianRoots() []string {
	var roots []string
	for name, p := range idx.base {
		if p.priority == "required" || p.priority == "important" || p.priority == "standard" || name == "task-gnome-desktop" {
			roots = append(roots, name)
		}
	}
	slices.Sort(roots)
	return roots
}

func TestCompareDebVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0},
		{"1.0", "1.1", -1},
		{"1.0~rc1", "1.0", -1},
		{"1:0.9", "2.0", 1},
		{"2.36-9+deb12u10", "2.36-9+deb12u9", 1},
		{"1.2.3-1", "1.2.3-1+b1", -1},
		{"1.0a", "1.0+", -1},
		{"3.0.17-1~deb12u2", "3.0.17-1~deb12u3", -1},
		{"1.10", "1.9", 1},
	} {
		if got := compareDebVersions(c.a, c.b); got != c.want {
			t.Errorf("compareDebVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
