// Package nixfile parses the file a user hands to the nixos2docker frontend:
// Dockerfile-style parser directives ("# key=value" lines at the very top:
// syntax, flake, nixpkgs), then an optional body that is a NixOS module.
//
// The directive block follows the rules of BuildKit's Dockerfile directive
// parser (frontend/dockerfile/parser/directives.go): directives are the first
// lines of the file, one per line, and the first line that is not a directive
// (a blank line, an ordinary comment, Nix code) ends them. Unlike Dockerfile,
// where an unknown directive silently turns into a comment, this parser
// reports mistakes a user would otherwise never notice: an unknown or
// malformed directive in the block, a known directive that comes after the
// block ended, a duplicate. The body cannot be checked here (there is no Nix
// parser in Go); Nix checks it in the builder stage and nixeval maps its
// errors back to lines of this file.
//
// Put "# syntax=…" first: BuildKit's Dockerfile frontend, which hands the
// file to ours, stops reading directives at the first key it does not know
// (flake, nixpkgs), so a syntax line after them is never seen.
package nixfile

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Directive keys this parser knows.
const (
	KeySyntax  = "syntax"
	KeyFlake   = "flake"
	KeyNixpkgs = "nixpkgs"
)

var knownKeys = []string{KeySyntax, KeyFlake, KeyNixpkgs}

func isKnown(key string) bool {
	for _, k := range knownKeys {
		if k == key {
			return true
		}
	}
	return false
}

// Directive is one "# key=value" line of the directive block.
type Directive struct {
	Key   string // lower case
	Value string
	Line  int // 1-based
}

// File is a parsed file.
type File struct {
	Name       string
	Directives []Directive
	// Values of the known directives ("" when absent).
	Syntax, Flake, Nixpkgs string
	// Body is the NixOS module, from its first non-blank line to the end
	// of the file; "" when the file has none (or only comments).
	Body string
	// BodyLine is the 1-based line of the body's first line in the file
	// (0 when there is no body).
	BodyLine int
}

// Directive returns the directive with the given key, or nil.
func (f *File) Directive(key string) *Directive {
	for i := range f.Directives {
		if f.Directives[i].Key == key {
			return &f.Directives[i]
		}
	}
	return nil
}

// Error is a problem located in the file.
type Error struct {
	File   string
	Line   int // 1-based
	Column int // 1-based, in bytes
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
}

// Option changes how Parse judges a file.
type Option func(*options)

type options struct {
	flakeOverride string
}

// WithFlakeOverride tells Parse that the flake reference comes from
// elsewhere (the NIXOS_FLAKE build argument), so a file with neither a flake
// directive nor a body is not empty.
func WithFlakeOverride(ref string) Option {
	return func(o *options) { o.flakeOverride = ref }
}

// EmptyFile is the message for a file with nothing to build: no flake
// (directive or NIXOS_FLAKE) and no body. Parse reports it; nixeval's plan
// says the same should a caller skip that check.
const EmptyFile = "empty file: nothing to build; expected a flake directive (\"# flake=.#<name>\") or a NixOS module body"

// Same shape as BuildKit's directive regexp, with '-' and '_' allowed in keys
// so that "# nix-config=…" is reported as unknown rather than taken as body.
var directiveRe = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$`)

// Parse parses a file. Every error it returns is an *Error.
func Parse(name string, data []byte, opts ...Option) (*File, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	data = bytes.TrimPrefix(data, []byte{0xEF, 0xBB, 0xBF})
	// CRLF (Windows) and CR alone (old Macs) end lines too.
	text := strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n")
	lines := strings.Split(text, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // the final newline ends a line, it does not start one
	}
	f := &File{Name: name}
	errAt := func(line, col int, format string, args ...any) error {
		return &Error{File: name, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
	}

	// The directive block.
	seen := map[string]int{}
	end := len(lines) // index of the first line after the block
	for i, line := range lines {
		n := i + 1
		rest, ok := strings.CutPrefix(line, "#")
		if !ok {
			end = i
			break
		}
		trimmed := strings.TrimLeft(rest, " \t")
		col := len(line) - len(trimmed) + 1
		m := directiveRe.FindStringSubmatch(trimmed)
		if m == nil {
			if k := leadingKnownKey(trimmed); k != "" {
				return nil, errAt(n, col, "malformed %s directive: expected \"# %s=<value>\"", k, k)
			}
			end = i // an ordinary comment: the body starts here
			break
		}
		// RE2's \s lacks \v and Unicode spaces (a no-break space pasted
		// from a web page): trim those too.
		key, value := strings.ToLower(m[1]), strings.TrimFunc(m[2], unicode.IsSpace)
		if !isKnown(key) {
			return nil, errAt(n, col, "unknown directive %q (known directives: %s); directives are the \"# key=value\" lines at the top of the file", m[1], strings.Join(knownKeys, ", "))
		}
		eq := strings.Index(trimmed, "=")
		valueCol := col + eq + 1 + strings.Index(trimmed[eq+1:], value)
		if value == "" {
			return nil, errAt(n, col, "malformed %s directive: it has no value (expected \"# %s=<value>\")", key, key)
		}
		if first, dup := seen[key]; dup {
			return nil, errAt(n, col, "duplicate %s directive (first on line %d)", key, first)
		}
		if key != KeySyntax && strings.IndexFunc(value, unicode.IsSpace) >= 0 {
			return nil, errAt(n, valueCol, "malformed %s directive: %q contains spaces; expected one reference", key, value)
		}
		seen[key] = n
		f.Directives = append(f.Directives, Directive{Key: key, Value: value, Line: n})
		switch key {
		case KeySyntax:
			f.Syntax = value
		case KeyFlake:
			f.Flake = value
		case KeyNixpkgs:
			f.Nixpkgs = value
		}
	}

	// The body. A known directive further down was meant as one: say so
	// rather than let Nix read it as a comment.
	bodyStart := -1
	onlyComments := true
	for i := end; i < len(lines); i++ {
		line := lines[i]
		if strings.TrimSpace(line) == "" {
			continue
		}
		if bodyStart < 0 {
			bodyStart = i
		}
		if rest, ok := strings.CutPrefix(line, "#"); ok {
			trimmed := strings.TrimLeft(rest, " \t")
			if m := directiveRe.FindStringSubmatch(trimmed); m != nil && isKnown(strings.ToLower(m[1])) {
				where := "after the body started on line " + fmt.Sprint(bodyStart+1)
				if bodyStart == i {
					where = fmt.Sprintf("after the directives ended on line %d", end+1)
				}
				return nil, errAt(i+1, 1, "%s directive %s: directives must be the first lines of the file, with no blank line or other line before them", strings.ToLower(m[1]), where)
			}
			continue
		}
		onlyComments = false
	}
	if bodyStart >= 0 && !onlyComments {
		f.Body = strings.Join(lines[bodyStart:], "\n") + "\n"
		f.BodyLine = bodyStart + 1
	}

	if f.Flake == "" && o.flakeOverride == "" && f.Body == "" {
		return nil, errAt(1, 1, "%s", EmptyFile)
	}
	return f, nil
}

// leadingKnownKey returns the known directive key a comment line was
// probably meant to set ("flake .#web", "nixpkgs: …", "flake"), or "". An
// ordinary sentence that starts with such a word ("Flake for the web
// server") is not one.
func leadingKnownKey(comment string) string {
	fields := strings.Fields(comment)
	if len(fields) == 0 {
		return ""
	}
	word, colon := strings.CutSuffix(fields[0], ":")
	if !isKnown(strings.ToLower(word)) {
		return ""
	}
	switch {
	case colon, len(fields) == 1:
		return strings.ToLower(word)
	case len(fields) == 2 && strings.ContainsAny(fields[1], "#:/.") || fields[1] == ":":
		return strings.ToLower(word)
	}
	return ""
}
