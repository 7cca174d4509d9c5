package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
)

// Calls whose argument at index names a tool the Go code runs.
var goToolCalls = map[string]int{
	"exec.Command":        0,
	"exec.CommandContext": 1,
	"exec.LookPath":       0,
	"testenv.Need":        1,
	"Need":                1, // inside package testenv
}

// scanGo lists the tools the repository's Go files run or look up by a
// literal name (exec.Command("nix-build", …), testenv.Need(t, "git") …).
func scanGo(root string, files []string) ([]use, error) {
	var uses []use
	fset := token.NewFileSet()
	for _, f := range files {
		if !strings.HasSuffix(f, ".go") {
			continue
		}
		af, err := parser.ParseFile(fset, filepath.Join(root, f), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var fn string
			switch f := call.Fun.(type) {
			case *ast.Ident:
				fn = f.Name
			case *ast.SelectorExpr:
				if pkg, ok := f.X.(*ast.Ident); ok {
					fn = pkg.Name + "." + f.Sel.Name
				}
			}
			i, ok := goToolCalls[fn]
			if !ok || i >= len(call.Args) {
				return true
			}
			bl, ok := call.Args[i].(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				return true
			}
			name, err := strconv.Unquote(bl.Value)
			if err != nil || name == "" {
				return true
			}
			// An absolute path is listed as such (a file the table checks
			// for, like /usr/lib/apt/apt-helper, which is not on PATH).
			if strings.Contains(name, "/") && !filepath.IsAbs(name) {
				return true
			}
			uses = append(uses, use{name, f, fset.Position(bl.Pos()).Line})
			return true
		})
	}
	return uses, nil
}
