package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// depsList is the table hack/lib/deps.sh installs from.
const depsList = "hack/lib/deps.list"

// Sources of a command in deps.list besides a Debian package name.
const (
	srcMachine = "machine" // the machine kind provides it (the Go toolchain, the Docker CLI)
	srcInside  = "inside"  // runs inside a root file system the scripts build, not on the host
	srcGo      = "go:"     // go:PACKAGE@VERSION, built with go install
)

type depEntry struct {
	cmd    string
	source string
	scopes map[string]bool
	line   int
}

// loadDeps reads deps.list: "command source scope..." per line, # comments.
func loadDeps(root string, scopes map[string]bool) (map[string]*depEntry, []problem, error) {
	f, err := os.Open(filepath.Join(root, depsList))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	table := map[string]*depEntry{}
	var probs []problem
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		bad := func(format string, args ...any) {
			probs = append(probs, problem{depsList, n, fmt.Sprintf(format, args...)})
		}
		if len(fields) < 3 {
			bad("want: command source scope... (scope: %s, or - for none)", strings.Join(sortedKeys(scopes), ", "))
			continue
		}
		e := &depEntry{cmd: fields[0], source: fields[1], scopes: map[string]bool{}, line: n}
		for _, s := range fields[2:] {
			switch {
			case s == "-":
			case scopes[s]:
				e.scopes[s] = true
			default:
				bad("unknown scope %q (%s, or -)", s, strings.Join(sortedKeys(scopes), ", "))
			}
		}
		if e.source == srcInside && len(e.scopes) > 0 {
			bad("%s runs inside another root: its scope is -", e.cmd)
		}
		if strings.HasPrefix(e.source, srcGo) {
			pkg, ver, ok := strings.Cut(strings.TrimPrefix(e.source, srcGo), "@")
			if !ok || ver == "" || ver == "latest" || path.Base(pkg) != e.cmd {
				bad("want go:PACKAGE@VERSION (a pinned version) whose last element is %s", e.cmd)
			}
		}
		if prev, dup := table[e.cmd]; dup {
			bad("%s is listed twice (also on line %d)", e.cmd, prev.line)
			continue
		}
		table[e.cmd] = e
	}
	return table, probs, sc.Err()
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// checkDeps: every command the scripts and Go code run is in deps.list, for
// the README commands (entry scripts) whose way it is on; both entry scripts
// call the installer; no entry is stale; Debian packages are the right ones.
func checkDeps(root string) ([]problem, error) {
	entries, err := readmeCommands(root)
	if err != nil {
		return nil, err
	}
	scopes := map[string]bool{}
	for _, e := range entries {
		scopes[path.Base(e)] = true
	}
	table, probs, err := loadDeps(root, scopes)
	if err != nil {
		return nil, err
	}
	s, err := scanScripts(root, "hack", ".ci")
	if err != nil {
		return nil, err
	}
	files, err := trackedFiles(root)
	if err != nil {
		return nil, err
	}
	goUses, err := scanGo(root, files)
	if err != nil {
		return nil, err
	}
	if !s.funcs["n2d_deps"] {
		probs = append(probs, problem{"hack/lib/deps.sh", 0, "defines no n2d_deps function (the installer the entry scripts call)"})
	}
	// The scripts on each entry's way, and the Go code: hack/test runs it.
	ways := map[string]map[string]bool{}
	testScope := ""
	for _, e := range entries {
		scope := path.Base(e)
		ways[scope] = s.reachable(e)
		if s.scripts[e] == nil {
			probs = append(probs, problem{"README.md", 0, fmt.Sprintf("its command %s is not a shell script of the repository", e)})
			continue
		}
		if !s.callsWith(e, "n2d_deps", scope) {
			probs = append(probs, problem{e, 0, fmt.Sprintf("never calls `n2d_deps %s` (hack/lib/deps.sh): a fresh machine would lack what it needs", scope)})
		}
		testScope = scope // the last README command is the test command
	}
	type need struct {
		u      use
		scopes []string
	}
	var needs []need
	for _, u := range s.uses {
		var sc []string
		for scope, way := range ways {
			if way[u.file] {
				sc = append(sc, scope)
			}
		}
		needs = append(needs, need{u, sc})
	}
	for _, u := range goUses {
		needs = append(needs, need{u, []string{testScope}})
	}
	used := map[string]bool{}
	missing := map[string]bool{} // file and command: said once
	for _, n := range needs {
		used[n.u.cmd] = true
		e := table[n.u.cmd]
		if e == nil {
			if !missing[n.u.file+"\x00"+n.u.cmd] {
				missing[n.u.file+"\x00"+n.u.cmd] = true
				probs = append(probs, problem{n.u.file, n.u.line, fmt.Sprintf("runs %s, which %s does not list: add it with the Debian package that has it, so hack/lib/deps.sh installs it", n.u.cmd, depsList)})
			}
			continue
		}
		if e.source == srcInside {
			continue
		}
		for _, scope := range n.scopes {
			if !e.scopes[scope] {
				probs = append(probs, problem{n.u.file, n.u.line, fmt.Sprintf("runs %s on the way of %s, but %s:%d does not list it for %s", n.u.cmd, scope, depsList, e.line, scope)})
			}
		}
	}
	for _, e := range table {
		if strings.HasPrefix(e.cmd, "/") && !used[e.cmd] {
			used[e.cmd] = namedIn(root, files, e.cmd)
		}
		if !used[e.cmd] {
			probs = append(probs, problem{depsList, e.line, fmt.Sprintf("nothing runs %s: remove the line", e.cmd)})
		}
	}
	dp, err := checkPackages(table)
	if err != nil {
		return nil, err
	}
	return append(probs, dp...), nil
}

// namedIn says whether a file other than deps.list names the path: a file
// entry is used where some script, test or Nix file refers to it.
func namedIn(root string, files []string, p string) bool {
	for _, f := range files {
		if f == depsList {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err == nil && strings.Contains(string(data), p) {
			return true
		}
	}
	return false
}

// checkPackages compares each Debian package of the table with the package
// that owns the command on this machine, where dpkg knows the command's file.
func checkPackages(table map[string]*depEntry) ([]problem, error) {
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		return nil, nil // not a Debian machine: nothing to compare with
	}
	files := map[string][]string{} // command -> candidate files
	var all []string
	for _, e := range table {
		if e.source == srcMachine || e.source == srcInside || strings.HasPrefix(e.source, srcGo) {
			continue
		}
		p, err := exec.LookPath(e.cmd)
		if strings.HasPrefix(e.cmd, "/") {
			p, err = e.cmd, nil
			if _, serr := os.Stat(p); serr != nil {
				err = serr
			}
		}
		if err != nil {
			continue // not installed here: deps.sh installs it
		}
		cands := []string{p}
		if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
			cands = append(cands, r)
		}
		// merged /usr: dpkg may know /bin/x as the package ships it.
		for _, c := range append([]string(nil), cands...) {
			for _, pre := range [][2]string{{"/usr/bin/", "/bin/"}, {"/usr/sbin/", "/sbin/"}, {"/bin/", "/usr/bin/"}, {"/sbin/", "/usr/sbin/"}} {
				if rest, ok := strings.CutPrefix(c, pre[0]); ok {
					cands = append(cands, pre[1]+rest)
				}
			}
		}
		files[e.cmd] = cands
		all = append(all, cands...)
	}
	if len(all) == 0 {
		return nil, nil
	}
	// Exit status 1 when some file is unknown: the known ones are still printed.
	out, _ := exec.Command("dpkg-query", append([]string{"-S"}, all...)...).Output()
	owners := map[string][]string{} // file -> packages
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "diversion ") {
			continue
		}
		pkgs, file, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		for _, p := range strings.Split(pkgs, ", ") {
			p, _, _ = strings.Cut(p, ":") // arch qualifier
			owners[file] = append(owners[file], p)
		}
	}
	var probs []problem
	for cmd, cands := range files {
		var got []string
		for _, c := range cands {
			got = append(got, owners[c]...)
		}
		if len(got) == 0 {
			continue // not from a Debian package here
		}
		e := table[cmd]
		ok := false
		for _, g := range got {
			ok = ok || g == e.source
		}
		if !ok {
			probs = append(probs, problem{depsList, e.line, fmt.Sprintf("%s comes from package %s on this machine, not %s", cmd, strings.Join(got, " or "), e.source)})
		}
	}
	return probs, nil
}
