package nixfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want File
	}{
		{
			name: "flake only",
			in:   "# syntax=localhost:5000/nixos2docker\n# flake=.#web\n",
			want: File{
				Directives: []Directive{{"syntax", "localhost:5000/nixos2docker", 1}, {"flake", ".#web", 2}},
				Syntax:     "localhost:5000/nixos2docker", Flake: ".#web",
			},
		},
		{
			name: "a trailing no-break space is not part of the value",
			in:   "# flake=.#web\u00a0\n",
			want: File{Directives: []Directive{{"flake", ".#web", 1}}, Flake: ".#web"},
		},
		{
			name: "CR-only line endings",
			in:   "# flake=.#web\r{ }\r",
			want: File{Directives: []Directive{{"flake", ".#web", 1}}, Flake: ".#web", Body: "{ }\n", BodyLine: 2},
		},
		{
			name: "design example: flake, nixpkgs and a body",
			in: "# syntax=example.com/nixos2docker:1\n# flake=.#web\n# nixpkgs=github:NixOS/nixpkgs/nixos-25.11\n" +
				"{ pkgs, ... }: {\n  services.nginx.enable = true;\n}\n",
			want: File{
				Directives: []Directive{{"syntax", "example.com/nixos2docker:1", 1}, {"flake", ".#web", 2}, {"nixpkgs", "github:NixOS/nixpkgs/nixos-25.11", 3}},
				Syntax:     "example.com/nixos2docker:1", Flake: ".#web", Nixpkgs: "github:NixOS/nixpkgs/nixos-25.11",
				Body:     "{ pkgs, ... }: {\n  services.nginx.enable = true;\n}\n",
				BodyLine: 4,
			},
		},
		{
			name: "body only, blank lines and a comment before it, CRLF, spaces around =, upper-case key",
			in:   "#syntax = x\r\n#  NIXPKGS =  github:NixOS/nixpkgs  \r\n\r\n\r\n# the web server\r\n{ ... }: { }\r\n",
			want: File{
				Directives: []Directive{{"syntax", "x", 1}, {"nixpkgs", "github:NixOS/nixpkgs", 2}},
				Syntax:     "x", Nixpkgs: "github:NixOS/nixpkgs",
				Body:     "# the web server\n{ ... }: { }\n",
				BodyLine: 5,
			},
		},
		{
			name: "ordinary comment ends the block and belongs to the body",
			in:   "# flake=.#web\n# Flake for the web server, see README\n{ services.nginx.enable = true; }",
			want: File{
				Directives: []Directive{{"flake", ".#web", 1}},
				Flake:      ".#web",
				Body:       "# Flake for the web server, see README\n{ services.nginx.enable = true; }\n",
				BodyLine:   2,
			},
		},
		{
			name: "a body of comments only is no body",
			in:   "# flake=.#web\n\n# builds the web server\n#   nothing else\n\n",
			want: File{Directives: []Directive{{"flake", ".#web", 1}}, Flake: ".#web"},
		},
		{
			name: "no directives at all",
			in:   "\uFEFF{ ... }: {\n  boot.isContainer = true;\n}",
			want: File{Body: "{ ... }: {\n  boot.isContainer = true;\n}\n", BodyLine: 1},
		},
		{
			name: "a directive-like comment indented inside the body is Nix's business",
			in:   "# flake=.#web\n{\n  # flake=old\n}\n",
			want: File{Directives: []Directive{{"flake", ".#web", 1}}, Flake: ".#web", Body: "{\n  # flake=old\n}\n", BodyLine: 2},
		},
		{
			name: "unknown key-like comment in the body is a comment",
			in:   "# flake=.#web\n{\n}\n# note=later\n",
			want: File{Directives: []Directive{{"flake", ".#web", 1}}, Flake: ".#web", Body: "{\n}\n# note=later\n", BodyLine: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("nixos.docker", []byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.want.Name = "nixos.docker"
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", *got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in  string
		line, col int
		msg       string // substring
	}{
		{"empty file", "", 1, 1, "empty file"},
		{"whitespace only", "\n\n  \n", 1, 1, "empty file"},
		{"only a syntax line", "# syntax=example.com/nixos2docker\n", 1, 1, "expected a flake directive"},
		{"syntax and nixpkgs but no body", "# syntax=x\n# nixpkgs=github:NixOS/nixpkgs\n# just comments\n", 1, 1, "empty file"},
		{"unknown directive", "# syntax=x\n# flakes=.#web\n", 2, 3, `unknown directive "flakes"`},
		{"unknown directive with dash", "#nix-config=foo\n{}", 1, 2, `unknown directive "nix-config"`},
		{"escape is not ours", "# escape=`\n{}", 1, 3, `unknown directive "escape"`},
		{"malformed: colon", "# syntax=x\n# flake: .#web\n", 2, 3, "malformed flake directive"},
		{"malformed: space", "# flake .#web\n", 1, 3, "malformed flake directive"},
		{"malformed: bare key", "#nixpkgs\n{}", 1, 2, "malformed nixpkgs directive"},
		{"malformed: no value", "# flake=\n{}", 1, 3, "has no value"},
		{"malformed: two refs", "# flake=.#web .#db\n", 1, 9, "contains spaces"},
		{"a vertical tab is no value", "# flake=\v\n{}", 1, 3, "has no value"},
		{"a no-break space inside", "# flake=.#web\u00a0.#db\n", 1, 9, "contains spaces"},
		{"CR-only line endings", "# syntax=x\r# flake=.#web\r# flake=.#db\r", 3, 3, "duplicate flake directive"},
		{"duplicate directive", "# flake=.#a\n# syntax=x\n# FLAKE=.#b\n", 3, 3, "duplicate flake directive (first on line 1)"},
		{"directive after a blank line", "# syntax=x\n\n# flake=.#web\n", 3, 1, "flake directive after the directives ended on line 2"},
		{"directive after the body started", "# syntax=x\n{ ... }: {\n}\n# nixpkgs=github:NixOS/nixpkgs\n", 4, 1, "nixpkgs directive after the body started on line 2"},
		{"directive after an ordinary comment", "# syntax=x\n# my web server\n# flake=.#web\n", 3, 1, "after the body started on line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("nixos.docker", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted %q: %#v", tt.in, f)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is %T, not *Error", err, err)
			}
			if e.File != "nixos.docker" || e.Line != tt.line || e.Column != tt.col || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("got %v, want nixos.docker:%d:%d: …%s…", err, tt.line, tt.col, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "nixos.docker:") {
				t.Errorf("Error() = %q does not start with the file name", err.Error())
			}
		})
	}
}

func TestFlakeOverrideMakesAnEmptyFileValid(t *testing.T) {
	in := []byte("# syntax=example.com/nixos2docker\n")
	if _, err := Parse("f", in); err == nil {
		t.Fatal("without an override the file must be empty")
	}
	f, err := Parse("f", in, WithFlakeOverride("github:o/r#x"))
	if err != nil {
		t.Fatalf("with an override: %v", err)
	}
	if f.Flake != "" || f.Body != "" || f.Syntax != "example.com/nixos2docker" {
		t.Errorf("got %#v", f)
	}
}

func TestDirectiveLookup(t *testing.T) {
	f, err := Parse("f", []byte("# syntax=x\n# nixpkgs=github:NixOS/nixpkgs\n{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := f.Directive(KeyNixpkgs); d == nil || d.Line != 2 || d.Value != "github:NixOS/nixpkgs" {
		t.Errorf("Directive(nixpkgs) = %#v", d)
	}
	if d := f.Directive(KeyFlake); d != nil {
		t.Errorf("Directive(flake) = %#v, want nil", d)
	}
}
