package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary runs main itself when asked (arguments joined by the ASCII
// unit separator), so the tests see real exit
// codes and output.
func TestMain(m *testing.M) {
	if args := os.Getenv("N2D_MAIN_ARGS"); args != "" {
		os.Args = append([]string{"nixos2docker-frontend"}, strings.Split(args, "\x1f")...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "N2D_MAIN_ARGS="+strings.Join(args, "\x1f"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

func TestLLBCommand(t *testing.T) {
	out, stderr, code := run(t, "llb", "-f", "../../testdata/flake.nix2docker", "--opt", "platform=linux/amd64",
		"--spec", "../../../imagespec/testdata/spec-v1.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("not a JSON line: %s", l)
		}
	}
	if !strings.Contains(out, `"stage":"builder"`) || !strings.Contains(out, `"stage":"image"`) || !strings.Contains(out, `"stage":"config"`) {
		t.Errorf("stages missing from:\n%.500s", out)
	}
}

func TestLLBCommandLocatedError(t *testing.T) {
	_, stderr, code := run(t, "llb", "-f", "../../testdata/unknown-directive.nix2docker")
	if code == 0 {
		t.Fatal("exit 0 for a broken file")
	}
	if !strings.HasPrefix(stderr, "../../testdata/unknown-directive.nix2docker:3:3: unknown directive") {
		t.Errorf("stderr %q does not start with FILE:LINE:COL: msg", stderr)
	}
}

func TestUsage(t *testing.T) {
	_, stderr, code := run(t, "frobnicate")
	if code != 2 || !strings.Contains(stderr, "usage:") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
