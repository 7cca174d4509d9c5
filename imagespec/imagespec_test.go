package imagespec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

func fixture(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/spec-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseFixture(t *testing.T) {
	s, err := Parse(fixture(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if s.ImageName != "web" || s.ImageTag != "latest" || s.MaxLayers != 125 {
		t.Errorf("header = %q:%q max %d", s.ImageName, s.ImageTag, s.MaxLayers)
	}
	var total int64
	for _, p := range s.Closure {
		total += p.NarSize
	}
	if len(s.Closure) != 4 || total != 20480+31457280*2+4096 {
		t.Errorf("closure: %d paths, %d bytes", len(s.Closure), total)
	}
	if s.Config.StopSignal != "SIGRTMIN+3" || s.Config.Healthcheck == nil || s.Config.Healthcheck.Interval.Seconds() != 30 {
		t.Errorf("config = %+v", s.Config)
	}
	if got := s.Skeleton[1].FileMode(); got != 0o1777 {
		t.Errorf("/tmp mode = %o", got)
	}
	if got := s.Skeleton[2].FileMode(); got != 0o755 {
		t.Errorf("/etc mode = %o", got)
	}
}

// mutate decodes the fixture into a generic tree, lets f change it and
// re-encodes it, so each bad-input case is one precise edit of a valid spec.
func mutate(t *testing.T, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(fixture(t), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// raw edits the fixture's text: the first old becomes new.
func raw(t *testing.T, old, new string) []byte {
	t.Helper()
	s := string(fixture(t))
	if !strings.Contains(s, old) {
		t.Fatalf("%q is not in the fixture", old)
	}
	return []byte(strings.Replace(s, old, new, 1))
}

func closureAt(m map[string]any, i int) map[string]any {
	return m["closure"].([]any)[i].(map[string]any)
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name  string
		data  []byte
		field string
		want  string
	}{
		{"not json", []byte("{"), "", "not a JSON object"},
		{"missing version", mutate(t, func(m map[string]any) { delete(m, "version") }), "version", "missing"},
		{"unknown version", mutate(t, func(m map[string]any) { m["version"] = 7 }), "version", "unsupported version 7"},
		{"version 0", mutate(t, func(m map[string]any) { m["version"] = 0 }), "version", "unsupported version 0"},
		{"later version, other shape", mutate(t, func(m map[string]any) { m["version"] = 2; m["closure"] = "elsewhere" }), "version", "unsupported version 2"},
		{"not an object", []byte(`[1]`), "", "not a JSON object"},
		{"missing name", mutate(t, func(m map[string]any) { delete(m, "imageName") }), "imageName", "missing"},
		{"maxLayers 1", mutate(t, func(m map[string]any) { m["maxLayers"] = 1 }), "maxLayers", "at least 2"},
		{"maxLayers too many", mutate(t, func(m map[string]any) { m["maxLayers"] = 1000000000 }), "maxLayers", "at most 125"},
		{"entry below a symlink", mutate(t, func(m map[string]any) {
			m["skeleton"] = append(m["skeleton"].([]any), map[string]any{"path": "/lnk", "type": "symlink", "target": "/x"},
				map[string]any{"path": "/lnk/f", "type": "file", "content": ""})
		}), "", "which is a symlink"},
		{"entry below a file", mutate(t, func(m map[string]any) {
			m["skeleton"] = append(m["skeleton"].([]any), map[string]any{"path": "/f/g", "type": "dir"},
				map[string]any{"path": "/f", "type": "file", "content": ""})
		}), "", "which is a file"},
		{"/nix a symlink", mutate(t, func(m map[string]any) {
			m["skeleton"] = append(m["skeleton"].([]any), map[string]any{"path": "/nix", "type": "symlink", "target": "/x"})
		}), "", "holds the store"},
		{"empty closure", mutate(t, func(m map[string]any) { m["closure"] = []any{} }), "closure", "empty"},
		{"missing closure", mutate(t, func(m map[string]any) { delete(m, "closure") }), "closure", "empty"},
		{"duplicate path", mutate(t, func(m map[string]any) {
			closureAt(m, 2)["path"] = closureAt(m, 1)["path"]
		}), "closure[2].path", "appears twice"},
		{"dangling reference", mutate(t, func(m map[string]any) {
			closureAt(m, 2)["references"] = []any{"/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-gone"}
		}), "closure[2].references[0]", "is not in the closure"},
		{"path outside store", mutate(t, func(m map[string]any) { closureAt(m, 3)["path"] = "/usr/lib/x" }), "closure[3].path", "not in /nix/store"},
		{"bad store path", mutate(t, func(m map[string]any) { closureAt(m, 3)["path"] = "/nix/store/short" }), "closure[3].path", "not a store path"},
		{"bad narHash", mutate(t, func(m map[string]any) { closureAt(m, 0)["narHash"] = "md5:x" }), "closure[0].narHash", "not a sha256"},
		{"toplevel not in closure", mutate(t, func(m map[string]any) {
			m["toplevel"] = "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-other"
		}), "toplevel", "not in the closure"},
		{"no entrypoint", mutate(t, func(m map[string]any) { delete(m["config"].(map[string]any), "Entrypoint") }), "config.Entrypoint", "nothing to run"},
		{"wrong type", mutate(t, func(m map[string]any) { m["maxLayers"] = "many" }), "maxLayers", "a string where a number"},
		{"version a string", mutate(t, func(m map[string]any) { m["version"] = "1" }), "version", "not a number"},
		{"array", []byte(`[1]`), "", "not a JSON object"},
		{"trailing data", append(fixture(t), "{}"...), "", "after the document"},
		// Go's encoding/json matches keys case-insensitively, the last of
		// two winning; Nix and people read them exactly.
		{"case-mismatched key", raw(t, `"version": 1,`, `"version": 1, "Closure": [],`), "Closure", "case"},
		{"duplicate key", raw(t, `"version": 1,`, `"version": 1, "closure": [],`), "closure", "twice"},
		{"case-mismatched nested key", raw(t, `"config": {`, `"config": { "entrypoint": ["/x"],`), "config.entrypoint", "Entrypoint"},
		{"case-mismatched key in the closure", raw(t, `"narHash"`, `"Path": "/run/secrets/netrc", "narHash"`), "closure[0].Path", "path"},
		{"duplicate label", raw(t, `"config": {`, `"config": { "Labels": {"a": "1", "a": "2"},`), "config.Labels.a", "twice"},
		{"store path hash not base-32", mutate(t, func(m map[string]any) {
			closureAt(m, 3)["path"] = "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"
		}), "closure[3].path", "base-32"},
		{"store path name with a newline", mutate(t, func(m map[string]any) {
			closureAt(m, 3)["path"] = "/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-a\n.."
		}), "closure[3].path", "name"},
		{"skeleton relative", mutate(t, func(m map[string]any) {
			m["skeleton"].([]any)[0].(map[string]any)["path"] = "init"
		}), "skeleton[0].path", "clean absolute path"},
		{"skeleton in store", mutate(t, func(m map[string]any) {
			m["skeleton"].([]any)[0].(map[string]any)["path"] = "/nix/store/x"
		}), "skeleton[0].path", "inside the store"},
		{"skeleton bad mode", mutate(t, func(m map[string]any) {
			m["skeleton"].([]any)[1].(map[string]any)["mode"] = "rwx"
		}), "skeleton[1].mode", "octal mode"},
		{"skeleton bad type", mutate(t, func(m map[string]any) {
			m["skeleton"].([]any)[1].(map[string]any)["type"] = "fifo"
		}), "skeleton[1].type", "not one of"},
		{"symlink without target", mutate(t, func(m map[string]any) {
			delete(m["skeleton"].([]any)[0].(map[string]any), "target")
		}), "skeleton[0].target", "missing"},
		{"nixRegistration relative", mutate(t, func(m map[string]any) { m["nixRegistration"] = "nix/var/reg" }), "nixRegistration", "clean absolute path"},
		{"nixRegistration in the store", mutate(t, func(m map[string]any) { m["nixRegistration"] = "/nix/store/reg" }), "nixRegistration", "inside it"},
		{"nixRegistration is /nix", mutate(t, func(m map[string]any) { m["nixRegistration"] = "/nix" }), "nixRegistration", "the store or inside it"},
		{"nixRegistration is an entry", mutate(t, func(m map[string]any) { m["nixRegistration"] = "/tmp" }), "nixRegistration", "also skeleton[1]"},
		{"nixRegistration below a symlink", mutate(t, func(m map[string]any) {
			m["skeleton"] = append(m["skeleton"].([]any), map[string]any{"path": "/lnk", "type": "symlink", "target": "/x"})
			m["nixRegistration"] = "/lnk/reg"
		}), "nixRegistration", "below /lnk, which is a symlink"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.data)
			if err == nil {
				t.Fatal("Parse accepted a bad spec")
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			if (c.field != "" && se.Field != c.field) || !strings.Contains(se.Msg, c.want) {
				t.Errorf("error = %q (field %q), want field %q containing %q", err, se.Field, c.field, c.want)
			}
		})
	}
}

// bigSpec is the fixture with a closure of n paths, each referencing up to
// four earlier ones, as a NixOS system's spec has.
func bigSpec(b *testing.B, n int) []byte {
	b.Helper()
	var m map[string]any
	data, err := os.ReadFile("testdata/spec-v1.json")
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		b.Fatal(err)
	}
	closure := m["closure"].([]any)
	for i := range n - len(closure) {
		p := fmt.Sprintf("%s/%032d-pkg%d-1.0", StoreDir, i, i)
		refs := []any{p}
		for k := 1; k <= 4 && k*k <= i; k++ {
			refs = append(refs, fmt.Sprintf("%s/%032d-pkg%d-1.0", StoreDir, i-k*k, i-k*k))
		}
		closure = append(closure, map[string]any{"path": p, "narHash": "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", "narSize": 150000, "references": refs})
	}
	m["closure"] = closure
	out, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkParse parses a 20,000-path spec (about 6 MB of JSON).
func BenchmarkParse(b *testing.B) {
	data := bigSpec(b, 20000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
