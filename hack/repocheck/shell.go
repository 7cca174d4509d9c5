package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// use is one external command a script or Go file runs.
type use struct {
	cmd  string
	file string
	line int
}

// script is a parsed shell script of the repository.
type script struct {
	rel  string
	file *syntax.File
}

// shellScan is what the scripts run: external commands, and the repository's
// scripts each one runs or sources.
type shellScan struct {
	root    string
	scripts map[string]*script // by path relative to root
	funcs   map[string]bool    // functions defined in any script
	uses    []use
	edges   map[string]map[string]bool // script -> scripts it runs or sources
}

// trackedFiles lists the files git sees in root: tracked ones and new ones
// not ignored, so a script is checked before it is committed.
func trackedFiles(root string) ([]string, error) {
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "-co", "--exclude-standard").Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %w", root, err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		if _, err := os.Lstat(filepath.Join(root, f)); err != nil {
			continue // deleted in the work tree
		}
		files = append(files, f)
	}
	return files, nil
}

// isShell says whether a file is a shell script: a shebang naming sh or bash,
// or a shellcheck shell directive (sourced libraries).
func isShell(data []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for i := 0; i < 5 && sc.Scan(); i++ {
		l := sc.Text()
		if i == 0 && strings.HasPrefix(l, "#!") {
			f := strings.Fields(strings.TrimPrefix(l, "#!"))
			if len(f) > 0 && path.Base(f[0]) == "env" {
				f = f[1:]
			}
			return len(f) > 0 && (path.Base(f[0]) == "sh" || path.Base(f[0]) == "bash")
		}
		if strings.HasPrefix(l, "# shellcheck shell=") {
			return true
		}
	}
	return false
}

// scanScripts parses every shell script under the given top directories.
func scanScripts(root string, tops ...string) (*shellScan, error) {
	files, err := trackedFiles(root)
	if err != nil {
		return nil, err
	}
	s := &shellScan{root: root, scripts: map[string]*script{}, funcs: map[string]bool{}, edges: map[string]map[string]bool{}}
	for _, f := range files {
		in := false
		for _, t := range tops {
			in = in || strings.HasPrefix(f, t+"/")
		}
		if !in {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		if !isShell(data) {
			continue
		}
		pf, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(bytes.NewReader(data), f)
		if err != nil {
			return nil, fmt.Errorf("parsing %w", err)
		}
		s.scripts[f] = &script{rel: f, file: pf}
	}
	for _, sc := range s.scripts {
		syntax.Walk(sc.file, func(n syntax.Node) bool {
			if fd, ok := n.(*syntax.FuncDecl); ok && fd.Name != nil {
				s.funcs[fd.Name.Value] = true
			}
			return true
		})
	}
	for _, sc := range s.scripts {
		s.walk(sc.rel, sc.file, 0)
	}
	return s, nil
}

// walk records the commands run in node; lineBase shifts lines of a node
// parsed from a string (sh -c '...') to the line of that string.
func (s *shellScan) walk(rel string, node syntax.Node, lineBase int) {
	syntax.Walk(node, func(n syntax.Node) bool {
		if c, ok := n.(*syntax.CallExpr); ok {
			s.call(rel, c.Args, lineBase)
		}
		return true
	})
}

// Shell builtins and keywords (bash's; dash's are a subset): never external.
var builtins = map[string]bool{}

func init() {
	for _, b := range strings.Fields(`. : [ alias bg bind break builtin caller cd command compgen complete
		compopt continue declare dirs disown echo enable eval exec exit export false fc fg getopts
		hash help history jobs kill let local logout mapfile popd printf pushd pwd read readarray
		readonly return set shift shopt source suspend test times trap true type typeset ulimit
		umask unalias unset wait`) {
		builtins[b] = true
	}
}

// lit is the word's value when it has no expansion.
func lit(w *syntax.Word) (string, bool) {
	var b strings.Builder
	var add func(parts []syntax.WordPart) bool
	add = func(parts []syntax.WordPart) bool {
		for _, p := range parts {
			switch p := p.(type) {
			case *syntax.Lit:
				b.WriteString(p.Value)
			case *syntax.SglQuoted:
				b.WriteString(p.Value)
			case *syntax.DblQuoted:
				if !add(p.Parts) {
					return false
				}
			default:
				return false
			}
		}
		return true
	}
	if !add(w.Parts) {
		return "", false
	}
	return b.String(), true
}

// litSuffix is the literal text after the word's last expansion (all of it
// when there is none): "$N2D_ROOT/hack/env" gives "/hack/env".
func litSuffix(w *syntax.Word) string {
	var flat []syntax.WordPart
	var flatten func(parts []syntax.WordPart)
	flatten = func(parts []syntax.WordPart) {
		for _, p := range parts {
			if q, ok := p.(*syntax.DblQuoted); ok {
				flatten(q.Parts)
			} else {
				flat = append(flat, p)
			}
		}
	}
	flatten(w.Parts)
	var b strings.Builder
	for _, p := range flat {
		switch p := p.(type) {
		case *syntax.Lit:
			b.WriteString(p.Value)
		case *syntax.SglQuoted:
			b.WriteString(p.Value)
		default:
			b.Reset()
		}
	}
	return b.String()
}

// resolve finds the repository script a word names: its literal tail taken
// relative to the script's directory, then to the root.
func (s *shellScan) resolve(rel string, w *syntax.Word) string {
	suffix := litSuffix(w)
	if suffix == "" || strings.HasSuffix(suffix, "/") {
		return ""
	}
	if _, whole := lit(w); whole && !strings.Contains(suffix, "/") {
		return ""
	}
	for _, c := range []string{path.Join(path.Dir(rel), suffix), path.Join(".", suffix)} {
		if _, ok := s.scripts[c]; ok {
			return c
		}
	}
	return ""
}

func (s *shellScan) edge(from, to string) {
	if s.edges[from] == nil {
		s.edges[from] = map[string]bool{}
	}
	s.edges[from][to] = true
}

// Wrappers that run the command given after their own options. For each,
// the options that take a separate value, and how many operands come
// before the command.
var wrappers = map[string]struct {
	valued   string // options that take the next word as their value
	operands int    // words between the options and the command
}{
	"exec":    {},
	"command": {},
	"builtin": {},
	"nohup":   {},
	"setsid":  {},
	"nice":    {valued: "-n"},
	"stdbuf":  {valued: "-i -o -e"},
	"env":     {valued: "-u -C --unset --chdir"},
	"timeout": {valued: "-s -k --signal --kill-after", operands: 1},
	"flock":   {valued: "-w -E --timeout --conflict-exit-code", operands: 1},
	"xargs":   {valued: "-a -d -E -I -L -n -P -s --arg-file --delimiter --max-args --max-procs --max-chars"},
	"unshare": {valued: "-S -G -R -w --propagation --setgroups --root --wd --setuid --setgid"},
	"nsenter": {valued: "-t -S -G --target --setuid --setgid"},
}

// call records the command of one simple command (args), looking through
// wrappers, `sh -c STRING` and `find -exec`.
func (s *shellScan) call(rel string, args []*syntax.Word, lineBase int) {
	for len(args) > 0 {
		line := lineBase + int(args[0].Pos().Line())
		name, ok := lit(args[0])
		if !ok {
			if to := s.resolve(rel, args[0]); to != "" {
				s.edge(rel, to)
			}
			return // a command named by an expansion: a built tool or "$@"
		}
		if (name == "source" || name == ".") && len(args) > 1 {
			if to := s.resolve(rel, args[1]); to != "" {
				s.edge(rel, to)
			}
			return
		}
		if w, ok := wrappers[name]; ok {
			if !builtins[name] {
				s.uses = append(s.uses, use{name, rel, line})
			}
			rest := args[1:]
			if name == "command" && len(rest) > 0 {
				if o, _ := lit(rest[0]); o == "-v" || o == "-V" {
					return // a probe, not a run
				}
			}
			if name == "flock" && len(rest) > 0 && hasWord(rest, "-c") {
				return // flock FILE -c STRING: rare; not used here
			}
			if dd := indexWord(rest, "--"); dd >= 0 && (name == "unshare" || name == "nsenter") {
				args = rest[dd+1:]
				continue
			}
			valued := strings.Fields(w.valued)
			for len(rest) > 0 {
				o, ok := lit(rest[0])
				if !ok || !strings.HasPrefix(o, "-") || o == "-" {
					if name == "env" && ok && strings.Contains(o, "=") {
						rest = rest[1:] // VAR=value
						continue
					}
					break
				}
				rest = rest[1:]
				if o == "--" {
					break
				}
				for _, v := range valued {
					if o == v && len(rest) > 0 {
						rest = rest[1:]
					}
				}
			}
			if len(rest) <= w.operands {
				return // flock FD, timeout with nothing to run
			}
			args = rest[w.operands:]
			continue
		}
		if name == "chroot" {
			s.uses = append(s.uses, use{name, rel, line})
			return // what it runs comes from the other root
		}
		if strings.Contains(name, "/") {
			if to := s.resolve(rel, args[0]); to != "" {
				s.edge(rel, to)
				return
			}
			if !path.IsAbs(name) {
				return // a relative path outside the scripts: a built binary
			}
			name = path.Base(name)
		}
		if builtins[name] || s.funcs[name] || isAssignmentLike(name) {
			return
		}
		s.uses = append(s.uses, use{name, rel, line})
		switch name {
		case "sh", "bash", "dash":
			for i := 1; i+1 < len(args); i++ {
				o, ok := lit(args[i])
				if !ok || !strings.HasPrefix(o, "-") || strings.HasPrefix(o, "--") {
					break
				}
				if strings.Contains(o, "c") {
					if body, ok := lit(args[i+1]); ok {
						s.parseString(rel, body, line)
					}
					break
				}
			}
		case "find":
			for i := 1; i+1 < len(args); i++ {
				if o, _ := lit(args[i]); o == "-exec" || o == "-execdir" || o == "-ok" || o == "-okdir" {
					s.call(rel, args[i+1:i+2], lineBase)
				}
			}
		}
		return
	}
}

// parseString scans the commands of a shell program given as a string.
func (s *shellScan) parseString(rel, body string, line int) {
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(body), rel)
	if err != nil {
		return // not a program we can read: the string's own checks are the shell's
	}
	s.walk(rel, f, line-1)
}

func isAssignmentLike(name string) bool {
	return strings.HasPrefix(name, "-") || name == "" || strings.ContainsAny(name, "={}")
}

func indexWord(ws []*syntax.Word, v string) int {
	for i, w := range ws {
		if l, ok := lit(w); ok && l == v {
			return i
		}
	}
	return -1
}

func hasWord(ws []*syntax.Word, v string) bool { return indexWord(ws, v) >= 0 }

// reachable is every script that entry runs or sources, directly or not,
// entry included.
func (s *shellScan) reachable(entry string) map[string]bool {
	seen := map[string]bool{entry: true}
	todo := []string{entry}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		for next := range s.edges[cur] {
			if !seen[next] {
				seen[next] = true
				todo = append(todo, next)
			}
		}
	}
	return seen
}

// callsWith says whether the script calls name with exactly these arguments
// (literal words) at its top level or in a function.
func (s *shellScan) callsWith(rel string, want ...string) bool {
	sc := s.scripts[rel]
	if sc == nil {
		return false
	}
	found := false
	syntax.Walk(sc.file, func(n syntax.Node) bool {
		c, ok := n.(*syntax.CallExpr)
		if !ok || len(c.Args) != len(want) {
			return true
		}
		for i, w := range c.Args {
			if l, ok := lit(w); !ok || l != want[i] {
				return true
			}
		}
		found = true
		return false
	})
	return found
}
