package integration

// Throwaway CI runners and a CI registry (hack/runner), and the GitHub Actions example workflow
// turned into the docker buildx invocations docker/build-push-action makes of it.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/internal/ocitest"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"go.yaml.in/yaml/v3"
)

// hackRunner runs hack/runner with args and returns the KEY=VALUE lines it prints.
func (e *testEnv) hackRunner(ctx context.Context, t *testing.T, args ...string) (map[string]string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(e.Repo, "hack", "runner"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/runner %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 30))
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return vars, nil
}

// runner is a BuildKit daemon that starts empty, like a CI runner's: its own root and socket,
// and a buildx builder (remote driver) on it.
type runner struct {
	Name    string
	Dir     string
	Host    string // BUILDKIT_HOST
	Builder string // buildx builder name
	e       *testEnv
	stopped bool
}

// newRunner starts a runner; it is removed (daemon stopped, state deleted) when the test ends.
func (e *testEnv) newRunner(ctx context.Context, t *testing.T, name string) *runner {
	t.Helper()
	r := &runner{Name: name, Dir: filepath.Join(t.TempDir(), name), e: e}
	t.Cleanup(func() { r.stop(t) })
	vars, err := e.hackRunner(ctx, t, "up", r.Dir)
	if err != nil {
		t.Fatalf("runner %s: %v", name, err)
	}
	r.Host, r.Builder = vars["BUILDKIT_HOST"], vars["BUILDX_BUILDER"]
	if r.Host == "" || r.Builder == "" {
		t.Fatalf("runner %s: hack/runner up printed %v", name, vars)
	}
	return r
}

// stop takes the runner down: its BuildKit state is gone, like a CI runner after its job.
func (r *runner) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := r.e.hackRunner(ctx, t, "down", r.Dir); err != nil {
		t.Errorf("runner %s: %v", r.Name, err)
	}
}

// ciRegistry is a registry standing in for the CI's (ghcr.io in the example), with an access
// log that says which blobs were uploaded.
type ciRegistry struct {
	Addr string // localhost:PORT
	Log  string // access log
}

// newCIRegistry starts a registry on the first free port of 5001…5009 (the ports runners
// trust as plain HTTP); it is removed when the test ends.
func (e *testEnv) newCIRegistry(ctx context.Context, t *testing.T) *ciRegistry {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "registry")
	var errs []string
	for port := 5001; port <= 5009; port++ {
		vars, err := e.hackRunner(ctx, t, "registry-up", dir, "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := e.hackRunner(ctx, t, "registry-down", dir); err != nil {
				t.Errorf("CI registry: %v", err)
			}
		})
		return &ciRegistry{Addr: vars["REGISTRY"], Log: vars["REGISTRY_ACCESS_LOG"]}
	}
	t.Fatalf("no CI registry could start:\n%s", strings.Join(errs, "\n"))
	return nil
}

// mark is the access log's length now: uploadsSince(mark) sees what came after.
func (r *ciRegistry) mark(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(r.Log)
	if err != nil {
		t.Fatalf("registry access log: %v", err)
	}
	return fi.Size()
}

// uploadPut is an access log line completing a blob upload: PUT …/blobs/uploads/…?digest=….
var uploadPut = regexp.MustCompile(`"PUT /v2/([^ ]+)/blobs/uploads/[^ ]*[?&]digest=(sha256(?::|%3A)[0-9a-f]{64})`)

// uploadsSince returns the digests of the blobs uploaded since mark, by repository.
func (r *ciRegistry) uploadsSince(t *testing.T, mark int64) map[string][]string {
	t.Helper()
	f, err := os.Open(r.Log)
	if err != nil {
		t.Fatalf("registry access log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(mark, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := uploadPut.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = append(out[m[1]], strings.Replace(m[2], "%3A", ":", 1))
		}
	}
	return out
}

// get fetches a manifest or blob from the registry.
func (r *ciRegistry) get(path string, accept ...string) ([]byte, string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+r.Addr+"/v2/"+path, nil)
	if err != nil {
		return nil, "", err
	}
	if len(accept) > 0 {
		req.Header.Set("Accept", strings.Join(accept, ", "))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return data, resp.Header.Get("Content-Type"), nil
}

// image reads repo:tag's linux/amd64 image from the registry, layers and all: its blobs are
// put in an OCI layout, which the project's one reader (internal/ocitest) reads.
func (r *ciRegistry) image(t *testing.T, repo, tag string) *ociImage {
	t.Helper()
	manifestTypes := []string{ocispecs.MediaTypeImageIndex, ocispecs.MediaTypeImageManifest,
		"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"}
	data, mediaType, err := r.get(repo+"/manifests/"+tag, manifestTypes...)
	if err != nil {
		t.Fatalf("%s:%s: %v", repo, tag, err)
	}
	top := ocispecs.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	blobs := map[string][]byte{top.Digest.String(): data}
	// fetch gets a blob and what it names: an index's manifests, a manifest's config and layers.
	var fetch func(d, mediaType string, data []byte)
	fetch = func(d, mediaType string, data []byte) {
		if data == nil {
			if _, ok := blobs[d]; ok {
				return
			}
			kind := "/blobs/"
			if strings.Contains(mediaType, "manifest") || strings.Contains(mediaType, "index") {
				kind = "/manifests/" // a registry need not serve manifests as blobs
			}
			if data, _, err = r.get(repo+kind+d, manifestTypes...); err != nil {
				t.Fatalf("%s:%s: %v", repo, tag, err)
			}
			blobs[d] = data
		}
		switch {
		case strings.Contains(mediaType, "index") || strings.Contains(mediaType, "list"):
			var idx ocispecs.Index
			if err := json.Unmarshal(data, &idx); err != nil {
				t.Fatalf("%s:%s: index %s: %v", repo, tag, d, err)
			}
			for _, m := range idx.Manifests {
				fetch(m.Digest.String(), m.MediaType, nil)
			}
		case strings.Contains(mediaType, "manifest"):
			var m ocispecs.Manifest
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatalf("%s:%s: manifest %s: %v", repo, tag, d, err)
			}
			fetch(m.Config.Digest.String(), m.Config.MediaType, nil)
			for _, l := range m.Layers {
				fetch(l.Digest.String(), l.MediaType, nil)
			}
		}
	}
	fetch(top.Digest.String(), mediaType, data)
	index, err := json.Marshal(ocispecs.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispecs.MediaTypeImageIndex, Manifests: []ocispecs.Descriptor{top}})
	if err != nil {
		t.Fatal(err)
	}
	var layout bytes.Buffer
	tw := tar.NewWriter(&layout)
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for d, data := range blobs {
		add("blobs/"+strings.Replace(d, ":", "/", 1), data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Read(&layout)
	if err != nil {
		t.Fatalf("%s:%s: %v", repo, tag, err)
	}
	return img
}

// --- the GitHub Actions example, as docker/build-push-action runs it ---

// workflowStep is a step of a workflow job.
type workflowStep struct {
	Name string         `yaml:"name"`
	Uses string         `yaml:"uses"`
	If   string         `yaml:"if"`
	With map[string]any `yaml:"with"`
}

// buildPushSteps returns the docker/build-push-action steps of a workflow file, in order.
func buildPushSteps(t *testing.T, file string) []workflowStep {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Jobs map[string]struct {
			Steps []workflowStep `yaml:"steps"`
		} `yaml:"jobs"`
	}
	if err := yaml.Unmarshal(data, &wf); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []workflowStep
	for _, j := range wf.Jobs {
		for _, s := range j.Steps {
			if strings.HasPrefix(s.Uses, "docker/build-push-action@") {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no docker/build-push-action step", file)
	}
	return out
}

// ghEvent is what the expressions of the example workflow evaluate to in one simulated run.
type ghEvent struct {
	Name       string // github.event_name
	Repository string // github.repository
}

var ghExpr = regexp.MustCompile(`\$\{\{\s*(.*?)\s*\}\}`)

// eval evaluates the expressions the example uses (a step's if:, or ${{ … }} in a value). An
// expression it does not know fails: the test must learn what a new one means.
func (ev ghEvent) eval(expr string) (string, error) {
	expr = strings.TrimSpace(expr)
	switch expr {
	case "github.event_name != 'pull_request'":
		return strconv.FormatBool(ev.Name != "pull_request"), nil
	case "github.event_name == 'pull_request'":
		return strconv.FormatBool(ev.Name == "pull_request"), nil
	case "github.repository":
		return ev.Repository, nil
	}
	return "", fmt.Errorf("expression %q: not one the test knows how to evaluate", expr)
}

// expand replaces every ${{ … }} in s.
func (ev ghEvent) expand(s string) (string, error) {
	var err error
	out := ghExpr.ReplaceAllStringFunc(s, func(m string) string {
		v, e := ev.eval(ghExpr.FindStringSubmatch(m)[1])
		if e != nil && err == nil {
			err = e
		}
		return v
	})
	return out, err
}

// runs says whether the step runs in this event.
func (ev ghEvent) runs(s workflowStep) (bool, error) {
	if s.If == "" {
		return true, nil
	}
	cond := s.If
	if m := ghExpr.FindStringSubmatch(cond); m != nil && strings.TrimSpace(cond) == m[0] {
		cond = m[1]
	}
	v, err := ev.eval(cond)
	return v == "true", err
}

// inputList splits a list input the way build-push-action does: one item per line, and for
// tags and platforms also per comma.
func inputList(v string, commas bool) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		items := []string{line}
		if commas {
			items = strings.Split(line, ",")
		}
		for _, it := range items {
			if it = strings.TrimSpace(it); it != "" {
				out = append(out, it)
			}
		}
	}
	return out
}

// buildxCall is a step turned into a docker buildx build command line.
type buildxCall struct {
	// Substitute rewrites values after expression expansion: the CI registry for ghcr.io, a
	// cache type that works here for gha, the toy for the example's context, file and target.
	// input is the input's name, with "[]" for one item of a list input; an item may become
	// several, separated by NUL.
	Substitute func(input, value string) string
}

// args returns the arguments of `docker` for a build-push-action step, input by input as
// build-push-action passes them (its --iidfile, --metadata-file and attestation defaults
// aside). An input it does not know fails.
func (c buildxCall) args(ev ghEvent, s workflowStep) ([]string, error) {
	get := func(name string) (string, error) {
		v, ok := s.With[name]
		if !ok {
			return "", nil
		}
		str, err := ev.expand(fmt.Sprint(v))
		if err != nil {
			return "", fmt.Errorf("step %q, %s: %w", s.Name, name, err)
		}
		return c.Substitute(name, str), nil
	}
	args := []string{"buildx", "build"}
	known := map[string]bool{}
	lists := []struct {
		input, flag string
		commas      bool
	}{
		{"build-args", "--build-arg", false}, {"build-contexts", "--build-context", false},
		{"tags", "--tag", true}, {"cache-from", "--cache-from", false}, {"cache-to", "--cache-to", false},
		{"outputs", "--output", false}, {"labels", "--label", false},
	}
	for _, l := range lists {
		known[l.input] = true
		v, err := get(l.input)
		if err != nil {
			return nil, err
		}
		for _, it := range inputList(v, l.commas) {
			// An item may become several, separated by NUL (one cache for several backends).
			for _, x := range strings.Split(c.Substitute(l.input+"[]", it), "\x00") {
				args = append(args, l.flag, x)
			}
		}
	}
	for _, in := range []struct{ input, flag string }{{"file", "--file"}, {"target", "--target"}} {
		known[in.input] = true
		v, err := get(in.input)
		if err != nil {
			return nil, err
		}
		if v != "" {
			args = append(args, in.flag, v)
		}
	}
	known["platforms"] = true
	v, err := get("platforms")
	if err != nil {
		return nil, err
	}
	if p := inputList(v, true); len(p) > 0 {
		args = append(args, "--platform", strings.Join(p, ","))
	}
	for _, b := range []struct{ input, flag string }{{"load", "--load"}, {"push", "--push"}, {"no-cache", "--no-cache"}} {
		known[b.input] = true
		v, err := get(b.input)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(v, "true") {
			args = append(args, b.flag)
		}
	}
	known["context"] = true
	ctxDir, err := get("context")
	if err != nil {
		return nil, err
	}
	for name := range s.With {
		if !known[name] {
			return nil, fmt.Errorf("step %q: input %q is not one the test maps to buildx", s.Name, name)
		}
	}
	return append(args, ctxDir), nil
}

// --- what a build printed ---

// buildLog is the --progress=plain output of one docker buildx build.
type buildLog struct {
	Text string
	Took time.Duration
}

// errorLines are the lines that say ERROR (buildx prints a failed step's, and BuildKit's
// client-side log errors, that way).
func (l buildLog) errorLines() []string {
	var out []string
	for _, line := range strings.Split(l.Text, "\n") {
		if strings.Contains(line, "ERROR") {
			out = append(out, line)
		}
	}
	return out
}

var (
	plainVertex = regexp.MustCompile(`^#(\d+) (.*)$`)
	plainDone   = regexp.MustCompile(`^#(\d+) DONE ([0-9.]+)s$`)
)

// step returns the time of the first step whose name starts with prefix (0 if it did not run,
// e.g. CACHED) and its log lines.
func (l buildLog) step(prefix string) (time.Duration, []string) {
	id := ""
	var took time.Duration
	var lines []string
	for _, line := range strings.Split(l.Text, "\n") {
		if m := plainDone.FindStringSubmatch(line); m != nil && m[1] == id {
			s, _ := strconv.ParseFloat(m[2], 64)
			took = time.Duration(s * float64(time.Second))
			continue
		}
		m := plainVertex.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch {
		case id == "" && (strings.HasPrefix(m[2], prefix) || strings.Contains(m[2], "] "+prefix)):
			id = m[1]
		case m[1] == id:
			lines = append(lines, m[2])
		}
	}
	return took, lines
}

// nixStore is what run.sh says the Nix step did to the store.
type nixStore struct {
	Built    int     // new store paths: built, fetched or copied in (sources)
	AddedMiB float64 // bytes added to the store
	Restored string  // the snapshot restore line, if any
	Ran      bool
}

var storeLine = regexp.MustCompile(`nixos2docker: store: (\d+) new paths \(built, fetched or copied in\), \d+ new derivations, ([0-9.]+) MiB added`)

func (l buildLog) nixStore() nixStore {
	var s nixStore
	_, lines := l.step("nix: build ")
	for _, line := range lines {
		if m := storeLine.FindStringSubmatch(line); m != nil {
			s.Ran = true
			s.Built, _ = strconv.Atoi(m[1])
			s.AddedMiB, _ = strconv.ParseFloat(m[2], 64)
		}
		if i := strings.Index(line, "nixos2docker: "); i >= 0 && strings.Contains(line, " restored: ") {
			s.Restored = line[i:]
		}
	}
	return s
}

// buildx runs docker with args on a runner's builder, with --progress=plain.
func (r *runner) buildx(ctx context.Context, t *testing.T, args []string) buildLog {
	t.Helper()
	full := append([]string{args[0], args[1], "--builder", r.Builder, "--progress=plain"}, args[2:]...)
	res, err := run(ctx, nil, "docker", full...)
	if err != nil {
		t.Fatalf("runner %s: %v", r.Name, err)
	}
	return buildLog{Text: res.Stderr + res.Stdout, Took: res.Took}
}
