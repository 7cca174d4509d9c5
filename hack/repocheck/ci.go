package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// readmeCommands are the commands of README's first ```sh block, the ones a
// newcomer runs first: the demo, then the tests.
func readmeCommands(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(root, "README.md"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var block strings.Builder
	in, done := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() && !done {
		l := sc.Text()
		switch {
		case !in && strings.TrimSpace(l) == "```sh":
			in = true
		case in && strings.TrimSpace(l) == "```":
			done = true
		case in:
			block.WriteString(l + "\n")
		}
	}
	if !done {
		return nil, fmt.Errorf("README.md has no ```sh block (its first one holds the demo and test commands)")
	}
	prog, err := syntax.NewParser().Parse(strings.NewReader(block.String()), "README.md")
	if err != nil {
		return nil, fmt.Errorf("README.md's first ```sh block: %w", err)
	}
	var cmds []string
	for _, st := range prog.Stmts {
		if c, ok := st.Cmd.(*syntax.CallExpr); ok && len(c.Args) > 0 {
			if name, ok := lit(c.Args[0]); ok {
				cmds = append(cmds, name)
			}
		}
	}
	if len(cmds) != 2 {
		return nil, fmt.Errorf("README.md's first ```sh block has commands %q: want two, the demo and the test command", cmds)
	}
	return cmds, nil
}

// checkCI: .ci/run runs README's test command and nothing else (it may cd
// to the root and set shell options).
func checkCI(root string) ([]problem, error) {
	cmds, err := readmeCommands(root)
	if err != nil {
		return nil, err
	}
	test := cmds[len(cmds)-1]
	const ci = ".ci/run"
	data, err := os.ReadFile(filepath.Join(root, ci))
	if err != nil {
		return nil, err
	}
	prog, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(string(data)), ci)
	if err != nil {
		return nil, fmt.Errorf("parsing %w", err)
	}
	var probs []problem
	ran := 0
	syntax.Walk(prog, func(n syntax.Node) bool {
		if d, ok := n.(*syntax.DeclClause); ok {
			probs = append(probs, problem{ci, int(d.Pos().Line()), d.Variant.Value + ": CI must do only what README's test command does (" + test + ")"})
			return true
		}
		c, ok := n.(*syntax.CallExpr)
		if !ok {
			return true
		}
		line := int(c.Pos().Line())
		if len(c.Args) == 0 {
			probs = append(probs, problem{ci, line, "sets variables: CI must do only what README's test command does (" + test + ")"})
			return true
		}
		args := c.Args
		if name, _ := lit(args[0]); name == "exec" && len(args) > 1 {
			args = args[1:]
		}
		name, ok := lit(args[0])
		switch {
		case ok && (name == "set" || name == "cd" || name == "dirname"):
		case ok && (name == test || name == "./"+test):
			ran++
		default:
			if !ok {
				name = "a command given by an expansion"
			}
			probs = append(probs, problem{ci, line, fmt.Sprintf("runs %s: CI must do only what README's test command (%s) does; install or prepare it there (hack/lib/deps.sh)", name, test)})
		}
		return true
	})
	if ran != 1 {
		probs = append(probs, problem{ci, 0, fmt.Sprintf("runs README's test command %s %d times, want once", test, ran)})
	}
	return probs, nil
}
