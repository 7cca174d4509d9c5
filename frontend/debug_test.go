package frontend

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// testModule stands for the embedded module files: the golden files then
// change only when the LLB the frontend makes changes, not with the module.
var testModule = fstest.MapFS{
	"nixos/docker-image.nix": {Data: []byte("{ ... }: { }\n")},
}

const specFixture = "../imagespec/testdata/spec-v1.json"

var digestRe = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// normalize makes a dump readable and stable: op digests become op1, op2, …
// in order of appearance, file contents written by Mkfile are replaced by
// their path, and the Nix step's command and environment by a placeholder:
// those belong to nixeval and the module (llb's own tests check that they
// arrive), the golden files hold what this package makes of them.
func normalize(t *testing.T, out []byte) []byte {
	t.Helper()
	ids := map[string]string{}
	var b bytes.Buffer
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("output line is not JSON: %s", line)
		}
		v = maskData(v)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", " ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		dt := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		dt = digestRe.ReplaceAllFunc(dt, func(d []byte) []byte {
			if _, ok := ids[string(d)]; !ok {
				ids[string(d)] = fmt.Sprintf("op%d", len(ids)+1)
			}
			return []byte(ids[string(d)])
		})
		b.Write(dt)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func maskData(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["cwd"]; ok { // an exec op's meta
			for _, k := range []string{"args", "env"} {
				if _, ok := v[k]; ok {
					v[k] = "<from nixeval>"
				}
			}
		}
		if p, ok := v["path"].(string); ok {
			if _, ok := v["data"]; ok {
				v["data"] = "<contents of " + p + ">"
			}
		}
		for k, x := range v {
			v[k] = maskData(x)
		}
	case []any:
		for i, x := range v {
			v[i] = maskData(x)
		}
	}
	return v
}

func runDebug(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := debugLLB(context.Background(), args, &out, &errOut, testModule)
	return out.String(), err
}

func TestGolden(t *testing.T) {
	builder := "build-arg:" + ArgBuilder + "=localhost:5000/nixos2docker/builder:latest"
	cases := []struct {
		name string
		args []string
	}{
		{"flake", []string{"-f", "testdata/flake.nix2docker", "--opt", builder, "--opt", "platform=linux/amd64"}},
		{"flake-body", []string{"-f", "testdata/flake-body.nix2docker", "--opt", builder, "--opt", "platform=linux/amd64",
			"--opt", "build-arg:" + ArgSubstituters + "=false"}},
		{"body-nixpkgs", []string{"-f", "testdata/body-nixpkgs.nix2docker", "--opt", builder, "--opt", "platform=linux/arm64",
			"--opt", "build-arg:" + ArgNixConfig + "=max-jobs = 4"}},
		{"multi-platform", []string{"-f", "testdata/flake.nix2docker", "--opt", builder, "--opt", "platform=linux/amd64,linux/arm64",
			"--opt", "target=api", "--opt", "no-cache"}},
		{"image", []string{"-f", "testdata/flake.nix2docker", "--opt", builder, "--opt", "platform=linux/amd64",
			"--spec", specFixture, "--opt", "build-arg:" + ArgEpoch + "=1700000000", "--opt", "label:org.example=1"}},
		// The same image for a builder without MergeOp (Docker's classic image store).
		{"image-stacked", []string{"-f", "testdata/flake.nix2docker", "--opt", builder, "--opt", "platform=linux/amd64",
			"--spec", specFixture, "--opt", "build-arg:" + ArgEpoch + "=1700000000", "--opt", "label:org.example=1", "--no-mergeop"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// As on an amd64 builder, wherever the test runs.
			out, err := runDebug(t, append([]string{"-build-platform", "linux/amd64"}, c.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			got := normalize(t, []byte(out))
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("LLB differs from %s (go test ./frontend -run TestGolden -update, then review the diff):\n%s", golden, firstDiff(string(want), string(got)))
			}
		})
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\n  want %s\n  got  %s", i+1, w, g)
		}
	}
	return ""
}

// nixConfs returns, per target platform, the nix.conf the builder stage
// writes for the Nix step (the Mkfile data the golden files mask).
func nixConfs(t *testing.T, out string) map[string]string {
	t.Helper()
	confs := map[string]string{}
	platform := ""
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct {
			Stage    string
			Platform string
			Op       struct {
				Op struct {
					File struct {
						Actions []struct {
							Action struct {
								Mkfile *struct {
									Path string
									Data []byte
								}
							}
						}
					}
				}
			}
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("output line is not JSON: %s", line)
		}
		if v.Stage != "" {
			platform = v.Platform
		}
		for _, a := range v.Op.Op.File.Actions {
			if m := a.Action.Mkfile; m != nil && m.Path == "/nix.conf" {
				confs[platform] = string(m.Data)
			}
		}
	}
	return confs
}

// TestEmulatedNixStep: a Nix step for a platform the builder does not run
// natively (qemu-user through binfmt_misc) gets filter-syscalls = false, as
// Nix's seccomp filter cannot be loaded there; a native one keeps the
// filter; NIX_CONFIG, written after it, can turn it back on.
func TestEmulatedNixStep(t *testing.T) {
	const off = "\nfilter-syscalls = false\n"
	for _, tt := range []struct {
		build    string
		emulated map[string]bool
	}{
		{"linux/amd64", map[string]bool{"linux/amd64": false, "linux/arm64": true}},
		{"linux/arm64", map[string]bool{"linux/amd64": true, "linux/arm64": false}},
		{"linux/arm64/v8", map[string]bool{"linux/amd64": true, "linux/arm64": false}},
	} {
		t.Run(tt.build, func(t *testing.T) {
			out, err := runDebug(t, "-build-platform", tt.build, "-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64,linux/arm64")
			if err != nil {
				t.Fatal(err)
			}
			confs := nixConfs(t, out)
			if len(confs) != 2 {
				t.Fatalf("nix.conf for %d platforms, want 2: %v", len(confs), confs)
			}
			for p, want := range tt.emulated {
				conf, ok := confs[p]
				if !ok {
					t.Fatalf("no nix.conf for %s", p)
				}
				if got := strings.Contains(conf, off); got != want {
					t.Errorf("on a %s builder, the %s Nix step has filter-syscalls = false: %v, want %v:\n%s", tt.build, p, got, want, conf)
				}
			}
		})
	}
	out, err := runDebug(t, "-build-platform", "linux/amd64", "-f", "testdata/flake.nix2docker", "--opt", "platform=linux/arm64",
		"--opt", "build-arg:"+ArgNixConfig+"=filter-syscalls = true")
	if err != nil {
		t.Fatal(err)
	}
	conf := nixConfs(t, out)["linux/arm64"]
	if i, j := strings.Index(conf, off), strings.Index(conf, "\nfilter-syscalls = true\n"); i < 0 || j < i {
		t.Errorf("NIX_CONFIG's filter-syscalls = true does not come after the frontend's false:\n%s", conf)
	}
	if _, err := runDebug(t, "-build-platform", "linux/nope/x/y", "-f", "testdata/flake.nix2docker"); err == nil || !strings.Contains(err.Error(), "-build-platform") {
		t.Errorf("a bad -build-platform: %v", err)
	}
}

// TestDebugStages checks what the golden files hold, so a careless -update
// cannot bless a broken stage.
func TestDebugStages(t *testing.T) {
	out, err := runDebug(t, "-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64,linux/arm64", "--spec", specFixture)
	if err == nil || !strings.Contains(err.Error(), "the image spec is for x86_64-linux, but aarch64-linux was requested") {
		t.Fatalf("a spec for one system used for two platforms: err %v", err)
	}
	out, err = runDebug(t, "-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64", "--spec", specFixture)
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	var execs, merges, layerSteps, nixSteps int
	stage := ""
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatal(err)
		}
		if s, ok := v["stage"].(string); ok {
			stages = append(stages, s)
			stage = s
		}
		if strings.Contains(line, `"exec"`) {
			execs++
			// Both read the store cache (sharing SHARED, the zero value, is
			// omitted): the Nix step writes it, each layer step reads it.
			if !strings.Contains(line, `"cacheOpt":{"ID":"nixos2docker-nix-x86_64-linux"}`) {
				t.Errorf("a step without the shared store cache: %s", line)
			}
			if strings.Contains(line, "nixos2docker-layer") {
				layerSteps++
			} else if stage == "image" {
				nixSteps++
			}
		}
		if strings.Contains(line, `"merge"`) {
			merges++
		}
	}
	if strings.Join(stages, ",") != "builder,image,config" {
		t.Errorf("stages %v", stages)
	}
	// The builder step, then one step per store layer (the fixture's three);
	// the image does not depend on the Nix step: its layers are their paths.
	if execs != 4 || layerSteps != 3 || nixSteps != 0 || merges != 1 {
		t.Errorf("%d exec ops (%d layer steps, %d Nix steps in the image), %d merge ops", execs, layerSteps, nixSteps, merges)
	}
	if !strings.Contains(out, DefaultBuilder) {
		t.Errorf("the default builder image %s is not used", DefaultBuilder)
	}
}

// NIXOS2DOCKER_STORE=save: the LLB is the store snapshot's, one exec on the
// builder image with the Nix step's store cache mount.
func TestDebugSaveStore(t *testing.T) {
	out, err := runDebug(t, "-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64", "--opt", "build-arg:NIXOS2DOCKER_STORE=save")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, `{"platform":"linux/amd64","stage":"save"}`) || strings.Contains(out, `"stage":"builder"`) {
		t.Errorf("stages of a save build:\n%s", out)
	}
	if strings.Count(out, `"exec"`) != 1 || !strings.Contains(out, `"cacheOpt":{"ID":"nixos2docker-nix-x86_64-linux"}`) ||
		!strings.Contains(out, "run.sh") || !strings.Contains(out, DefaultBuilder) {
		t.Errorf("the save step is not one exec on the builder image with the store cache mount:\n%s", out)
	}
}

func TestDebugBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	spec, err := os.ReadFile(specFixture)
	if err != nil {
		t.Fatal(err)
	}
	unknownVersion := write("v2.json", strings.Replace(string(spec), `"version": 1`, `"version": 2`, 1))
	dangling := write("dangling.json", strings.Replace(string(spec),
		`"references": ["/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc-2.42"]`,
		`"references": ["/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc-2.42", "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-libidn2-2.3.8"]`, 1))
	oneLayer := write("onelayer.json", strings.Replace(string(spec), `"maxLayers": 125`, `"maxLayers": 1`, 1))
	empty := write("empty.nix2docker", "")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown directive", []string{"-f", "testdata/unknown-directive.nix2docker"}, "testdata/unknown-directive.nix2docker:3:"},
		{"no flake no nixpkgs", []string{"-f", "testdata/no-nixpkgs.nix2docker"}, "testdata/no-nixpkgs.nix2docker:2:1: no flake and no nixpkgs"},
		{"empty", []string{"-f", empty}, empty + ":1:1: "},
		{"unsupported platform", []string{"-f", "testdata/flake.nix2docker", "--opt", "platform=linux/riscv64"}, "unsupported platform linux/riscv64"},
		{"spec of unknown version", []string{"-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64", "--spec", unknownVersion}, unknownVersion + ": image spec: version: unsupported version 2"},
		{"dangling reference", []string{"-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64", "--spec", dangling}, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-libidn2-2.3.8 (referenced by"},
		{"maxLayers < 2", []string{"-f", "testdata/flake.nix2docker", "--opt", "platform=linux/amd64", "--spec", oneLayer}, "maxLayers: 1 is too small"},
		{"bad epoch", []string{"-f", "testdata/flake.nix2docker", "--opt", "build-arg:SOURCE_DATE_EPOCH=yesterday"}, "SOURCE_DATE_EPOCH"},
		{"bad option", []string{"-f", "testdata/flake.nix2docker", "--opt", "frobnicate=1"}, "unknown option"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := runDebug(t, c.args...)
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}
