package nixfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any bytes give a file or a located *Error, never a panic; a
// parsed file's body starts at its line and directives are the first lines.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("../frontend/testdata/*.nix2docker")
	for _, p := range seeds {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{"", "# flake=.#web\n", "# syntax=x\r\n# flake=#web\r\n{ }", "\xef\xbb\xbf# nixpkgs=\v\n{}", "# flake=.\u00a0\n", "a\rb\rc"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("f", data, WithFlakeOverride("x"))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Line < 1 || e.Column < 1 || e.File != "f" {
				t.Fatalf("error %v (%T) is not located", err, err)
			}
			return
		}
		if file.Body != "" && file.BodyLine < 1 {
			t.Fatalf("body without a line: %+v", file)
		}
		for i, d := range file.Directives {
			if d.Line != i+1 || strings.ContainsAny(d.Value, "\n") {
				t.Fatalf("directive %d: %+v", i, d)
			}
		}
	})
}
