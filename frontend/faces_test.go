package frontend

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The two faces refuse the same specs, with the same message: the frontend
// (here its debug command, which reads the spec as Build does) and the
// Nix-native assembler (its real command), for skeletons the archive cannot
// write and for documents Go and Nix would read differently.
func TestFacesRefuseTheSameSpecs(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("no go to run the assembler")
	}
	data, err := os.ReadFile(specFixture)
	if err != nil {
		t.Fatal(err)
	}
	spec := string(data)
	skeleton := func(entries string) string {
		return strings.Replace(spec, `"skeleton": [`, `"skeleton": [`+entries+`, `, 1)
	}
	dir := t.TempDir()
	assembler := filepath.Join(dir, "assemble")
	if out, err := exec.Command("go", "build", "-o", assembler, "github.com/nixos2docker/nixos2docker/cmd/nixos2docker-assemble").CombinedOutput(); err != nil {
		t.Fatalf("building the assembler: %v\n%s", err, out)
	}
	for _, tc := range []struct{ name, doc, msg string }{
		{"entry below a symlink", skeleton(`{"path": "/lnk", "type": "symlink", "target": "/x"}, {"path": "/lnk/f", "type": "file"}`), "which is a symlink"},
		{"entry below a file", skeleton(`{"path": "/f", "type": "file"}, {"path": "/f/g", "type": "dir"}`), "which is a file"},
		{"/nix a symlink", skeleton(`{"path": "/nix", "type": "symlink", "target": "/x"}`), "holds the store"},
		{"/nix a file", skeleton(`{"path": "/nix", "type": "file"}`), "holds the store"},
		{"case-mismatched key", strings.Replace(spec, `"version": 1,`, `"version": 1, "Closure": [],`, 1), "case-sensitive"},
		{"duplicate key", strings.Replace(spec, `"version": 1,`, `"version": 1, "closure": [],`, 1), "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
			if err := os.WriteFile(p, []byte(tc.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := runDebug(t, "-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64", "--spec", p)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("frontend: %v, want …%s…", err, tc.msg)
			}
			out, aerr := exec.Command(assembler, "--quiet", "--spec", p, "--out", filepath.Join(dir, "image.tar")).CombinedOutput()
			if aerr == nil || !strings.Contains(string(out), tc.msg) {
				t.Errorf("assembler: %v %s, want …%s…", aerr, out, tc.msg)
			}
			if err != nil {
				// The same message: one validation.
				_, msg, _ := strings.Cut(err.Error(), "image spec: ")
				if !strings.Contains(string(out), msg) {
					t.Errorf("the faces say different things:\nfrontend:  %v\nassembler: %s", err, out)
				}
			}
		})
	}
}
