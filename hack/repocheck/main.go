// Command repocheck checks what keeps the repository usable from a fresh clone
// on a fresh machine; hack/test runs it in its static phase:
//
//   - deps: every external command that the scripts under hack/ and .ci/ run,
//     and every tool the Go code looks up or executes by name, is listed in
//     hack/lib/deps.list, which hack/lib/deps.sh installs from; a command used
//     by a script that README's first command (hack/demo) runs is listed for
//     it, one used on the way of the second (hack/test) for that; both scripts
//     call the installer; a listed Debian package is the one that owns the
//     command on this machine;
//   - ci: .ci/run runs README's test command and nothing else, so CI does
//     nothing a newcomer's command would not do itself;
//   - hosts: no tracked file names a package registry host this machine uses
//     (its apt sources, Go proxy and checksum database, debootstrap's default
//     mirror): scripts take them from the machine's configuration.
//
// Usage (from the repository's root):
//
//	go -C hack/repocheck run . -root "$PWD" [deps|ci|hosts]...
//
// With no check named, all run. Problems are printed as file:line: message;
// the exit status is 1 when there is any.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// problem is one finding, located in a file of the repository.
type problem struct {
	file string // relative to the repository root
	line int    // 0: the whole file
	msg  string
}

func (p problem) String() string {
	if p.line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.file, p.line, p.msg)
	}
	return fmt.Sprintf("%s: %s", p.file, p.msg)
}

func main() {
	root := flag.String("root", ".", "the repository's root")
	flag.Parse()
	abs, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "repocheck:", err)
		os.Exit(2)
	}
	checks := flag.Args()
	if len(checks) == 0 {
		checks = []string{"deps", "ci", "hosts"}
	}
	var problems []problem
	for _, c := range checks {
		var ps []problem
		var err error
		switch c {
		case "deps":
			ps, err = checkDeps(abs)
		case "ci":
			ps, err = checkCI(abs)
		case "hosts":
			var hosts map[string]string
			hosts, err = machineRegistryHosts()
			if err == nil {
				ps, err = checkHosts(abs, hosts)
			}
		default:
			err = fmt.Errorf("unknown check %q (deps, ci, hosts)", c)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "repocheck: %s: %v\n", c, err)
			os.Exit(2)
		}
		problems = append(problems, ps...)
	}
	sort.SliceStable(problems, func(i, j int) bool {
		if problems[i].file != problems[j].file {
			return problems[i].file < problems[j].file
		}
		return problems[i].line < problems[j].line
	})
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "repocheck: %d problem(s)\n", len(problems))
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "repocheck: %v: ok\n", checks)
}
