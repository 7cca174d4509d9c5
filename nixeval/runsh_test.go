package nixeval

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// run.sh's JSON string writer, run by every shell at hand (dash is
// Debian's /bin/sh, bash is the nixos/nix image's, busybox is the smallest),
// must give JSON that decodes to the input: quotes, backslashes, UTF-8,
// colour codes (dropped), tabs (spaces), a last line without a newline.
func TestRunShJSONString(t *testing.T) {
	src := string(runSh)
	start := strings.Index(src, "json_string() {")
	end := strings.Index(src[start:], "\n}\n")
	if start < 0 || end < 0 {
		t.Fatal("json_string not found in run.sh")
	}
	fn := src[start : start+end+3]
	in := "error: unknown target \"we\\\"b\\\\x\" ü\n\t… at /x:1:2:\n\x1b[31;1mred\x1b[0m \\\\ \"\"\n\nlast line"
	want := "error: unknown target \"we\\\"b\\\\x\" ü\n … at /x:1:2:\n[31;1mred[0m \\\\ \"\"\n\nlast line\n"
	ran := 0
	for _, shell := range [][]string{{"dash"}, {"bash", "--posix"}, {"busybox", "sh"}, {"sh"}} {
		if _, err := exec.LookPath(shell[0]); err != nil {
			continue
		}
		ran++
		cmd := exec.Command(shell[0], append(shell[1:], "-c", fn+"json_string")...)
		cmd.Stdin = strings.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s: %v\n%s", shell[0], err, stderr.String())
			continue
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Errorf("%s: not a JSON string: %v\n%s", shell[0], err, out)
			continue
		}
		if got != want {
			t.Errorf("%s: got %q\nwant %q", shell[0], got, want)
		}
	}
	if ran == 0 {
		t.Fatal("no shell to run run.sh's functions")
	}
}
