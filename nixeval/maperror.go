package nixeval

import (
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/nixos2docker/nixos2docker/nixfile"
)

var (
	ansiRe = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")
	// eval.nix's own errors: "[nixos2docker:WHERE] message".
	tagRe = regexp.MustCompile(`\[nixos2docker:([a-z]+)\] ([^\n]*)`)
	// The last "error:" of a log starts the error itself; the ones before
	// it (Nix >= 2.13) head the trace.
	errorRe = regexp.MustCompile(`(?m)^[ \t]*error:`)
	// Source excerpts and trace furniture.
	excerptRe = regexp.MustCompile(`^\s*(\d+)?\|`)
	atRe      = regexp.MustCompile(`^\s*at .*:\d+:\d+:?$`)
)

// MapError locates an evaluation error of the builder stage (the log of a
// result.json with status "error") in the user's file, for DefaultLayout.
// It returns nil when the error has nothing to do with the file.
func MapError(plan Plan, fileName string, log string) *nixfile.Error {
	return DefaultLayout.MapError(plan, fileName, log)
}

// MapError is MapError for layout l.
func (l Layout) MapError(plan Plan, fileName string, log string) *nixfile.Error {
	log = strings.ReplaceAll(ansiRe.ReplaceAllString(log, ""), "\r", "")
	bodyPath := path.Join(l.Dir, "body.nix")
	at := func(line, col int, msg string) *nixfile.Error {
		if line < 1 {
			line = 1
		}
		if col < 1 {
			col = 1
		}
		return &nixfile.Error{File: fileName, Line: line, Column: col, Msg: msg}
	}
	flakeLine := func() int {
		if plan.Flake == "" {
			return plan.NixpkgsLine
		}
		return plan.FlakeLine
	}

	if m := tagRe.FindAllStringSubmatch(log, -1); m != nil {
		where, msg := m[len(m)-1][1], strings.TrimSpace(m[len(m)-1][2])
		switch where {
		case "flake":
			return at(plan.FlakeLine, 1, msg)
		case "nixpkgs":
			return at(plan.NixpkgsLine, 1, msg)
		case "body":
			return at(plan.BodyLine, 1, msg)
		default:
			return at(flakeLine(), 1, msg)
		}
	}

	block := log
	if idx := errorRe.FindAllStringIndex(log, -1); idx != nil {
		block = log[idx[len(idx)-1][0]:]
	}
	msg := errorMessage(block)
	msg = strings.ReplaceAll(msg, bodyPath, fileName)
	if plan.Flake != "" {
		// With a flake the body is virtualisation.dockerVariant: name its
		// options as the user wrote them.
		msg = strings.ReplaceAll(msg, "`virtualisation.dockerVariant.", "`")
	}

	// A position in the body: the error's own, else the innermost frame of
	// the trace that is in the body.
	posRe := regexp.MustCompile(regexp.QuoteMeta(bodyPath) + `:(\d+):(\d+)`)
	pos := posRe.FindStringSubmatch(block)
	if pos == nil {
		if all := posRe.FindAllStringSubmatch(log, -1); all != nil {
			pos = all[len(all)-1]
		}
	}
	if pos != nil && plan.BodyLine > 0 {
		line, _ := strconv.Atoi(pos[1])
		col, _ := strconv.Atoi(pos[2])
		return at(plan.BodyLine+line-1, col, msg)
	}
	if plan.BodyLine > 0 && strings.Contains(log, bodyPath) {
		return at(plan.BodyLine, 1, msg) // the module system names files, not lines
	}
	if msg == "" {
		return nil
	}
	// Fetching the flake or nixpkgs went wrong.
	switch {
	case strings.Contains(msg, "flake registries") || strings.Contains(msg, "flake.nix") ||
		strings.Contains(msg, "getting status of '"+l.ContextDir) || strings.Contains(msg, "does not provide attribute"):
		return at(flakeLine(), 1, msg)
	}
	return nil
}

// nixIndent is how far Nix indents the lines of an error after the first.
const nixIndent = "       "

// errorMessage is the text of an "error: …" block without positions,
// source excerpts and trace notes.
func errorMessage(block string) string {
	lines := strings.Split(block, "\n")
	var out []string
	for i, line := range lines {
		t := strings.TrimSpace(line)
		if i == 0 {
			t = strings.TrimSpace(strings.TrimPrefix(t, "error:"))
		} else if strings.HasPrefix(t, "(use '--show-trace'") {
			continue
		}
		switch {
		case t == "" && len(out) > 0:
			// Nix 2.8 puts a blank line between the message and its position.
			if i+1 < len(lines) && (atRe.MatchString(lines[i+1]) || strings.TrimSpace(lines[i+1]) == "") {
				return strings.Join(out, "\n")
			}
			continue
		case t == "":
			continue
		case atRe.MatchString(line), excerptRe.MatchString(line), strings.HasPrefix(t, "(stack trace truncated"):
			if len(out) > 0 {
				return strings.Join(out, "\n")
			}
			continue
		}
		if i > 0 {
			// Keep the shape of quoted values: drop only Nix's indentation.
			t = strings.TrimRight(strings.TrimPrefix(line, nixIndent), " ")
			t = strings.TrimPrefix(t, "\t")
		}
		out = append(out, t)
	}
	return strings.Join(out, "\n")
}
