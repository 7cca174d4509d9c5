package nixeval

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos2docker/nixos2docker/storepath"
)

// The fetch-failure patterns take every recorded fetch failure for one
// (testdata/logs/fetch: refused, DNS, timeouts, HTTP 401 and 403, git
// asking for a user name, SSH refusing the key) and no recorded error in a
// file for one; grep -E reads the file run.sh greps the same way.
func TestFetchFailures(t *testing.T) {
	fetch, err := filepath.Glob("testdata/logs/fetch/*.log")
	if err != nil || len(fetch) < 9 {
		t.Fatalf("%d recorded fetch failures: %v", len(fetch), err)
	}
	file, err := filepath.Glob("testdata/logs/nix-*/*.log")
	if err != nil || len(file) < 6 {
		t.Fatalf("%d recorded evaluation errors: %v", len(file), err)
	}
	inv, err := Build(Plan{Flake: ".#x", System: "x86_64-linux"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	patterns := filepath.Join(t.TempDir(), FetchFailuresFile)
	if err := os.WriteFile(patterns, inv.Files[FetchFailuresFile], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("grep"); err != nil {
		t.Fatal("no grep")
	}
	for _, c := range []struct {
		logs []string
		want bool
	}{{fetch, true}, {file, false}} {
		for _, p := range c.logs {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := FetchFailure(string(data)); got != c.want {
				t.Errorf("%s: FetchFailure = %v, want %v", p, got, c.want)
			}
			grepped := exec.Command("grep", "-Eiq", "-f", patterns, p).Run() == nil
			if grepped != c.want {
				t.Errorf("%s: grep -Eiq -f %s = %v, want %v", p, FetchFailuresFile, grepped, c.want)
			}
		}
	}
	hint := string(inv.Files[FetchHintFile])
	for _, s := range Secrets {
		if !strings.Contains(hint, s.ID+": ") {
			t.Errorf("the hint does not name the secret %s:\n%s", s.ID, hint)
		}
	}
}

// run.sh checks the closure it copies against the store-path grammar of
// storepath, and writes no JSON (nixeval does).
func TestRunShUsesTheStorePathGrammar(t *testing.T) {
	if !strings.Contains(string(runSh), "'"+storepath.Pattern+"'") {
		t.Errorf("run.sh does not grep with storepath.Pattern %s", storepath.Pattern)
	}
	if strings.Contains(string(runSh), `{"`) {
		t.Error("run.sh writes JSON")
	}
}
