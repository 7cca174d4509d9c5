package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/tonistiigi/fsutil"
)

// buildRequest is one build of a `# syntax=` file through BuildKit's dockerfile frontend, the
// way buildctl and buildx send it.
type buildRequest struct {
	// ContextDir is the build context (the flake of the example).
	ContextDir string
	// File is the `# syntax=` file's content; written to a temp dir as "Dockerfile".
	File string
	// Attrs are extra frontend attributes: "target", "build-arg:NAME", …
	Attrs map[string]string
	// OCIDest, when set, receives the image as an OCI layout tarball.
	OCIDest string
	// NoCache disables BuildKit's cache for this build.
	NoCache bool
}

// buildResult is what one build did.
type buildResult struct {
	Response *client.SolveResponse
	Vertices []*client.Vertex // final state of every vertex, by first appearance
	Logs     string           // vertex logs (stdout/stderr of steps, frontend messages)
	// StepLogs are the logs of each vertex on their own, by vertex digest.
	StepLogs map[string]string
	Took     time.Duration
}

// Digest is the exported image's manifest digest.
func (r *buildResult) Digest() string {
	if r == nil || r.Response == nil {
		return ""
	}
	return r.Response.ExporterResponse["containerimage.digest"]
}

// Worked returns the names of the vertices that ran rather than came from the cache.
func (r *buildResult) Worked() []string {
	var out []string
	for _, v := range r.Vertices {
		if v.Started != nil && !v.Cached {
			out = append(out, v.Name)
		}
	}
	return out
}

// syntaxFile returns a file whose first line selects the env's frontend, then the rest.
func (e *testEnv) syntaxFile(rest string) string {
	return "# syntax=" + e.FrontendImage + "\n" + rest
}

// Build arguments of the frontend, spelled as users spell them (frontend/options.go).
const (
	argBuilder      = "NIXOS2DOCKER_BUILDER"
	argSubstituters = "NIXOS2DOCKER_SUBSTITUTERS"
)

// buildArgs are the build arguments every build here passes: the builder image made by the
// harness (the default one is on Docker Hub) and no binary caches (there is no network to one).
func (e *testEnv) buildArgs() map[string]string {
	return map[string]string{argBuilder: e.BuilderImage, argSubstituters: "false"}
}

// buildArgFlags returns buildArgs as repeated CLI flags: flag K=V.
func (e *testEnv) buildArgFlags(flag string) []string {
	var out []string
	for _, k := range sortedKeys(e.buildArgs()) {
		out = append(out, flag, k+"="+e.buildArgs()[k])
	}
	return out
}

// frontendAttrs are the frontend attributes of a build: buildArgs plus extra.
func (e *testEnv) frontendAttrs(extra map[string]string) map[string]string {
	attrs := map[string]string{}
	for k, v := range e.buildArgs() {
		attrs["build-arg:"+k] = v
	}
	for k, v := range extra {
		attrs[k] = v
	}
	return attrs
}

// solve runs one build through the Go client and collects its status.
func (e *testEnv) solve(ctx context.Context, t *testing.T, req buildRequest) (*buildResult, error) {
	t.Helper()
	c := e.client(t)
	dfDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile"), []byte(req.File), 0o644); err != nil {
		return nil, fmt.Errorf("writing the build file: %w", err)
	}
	ctxFS, err := fsutil.NewFS(req.ContextDir)
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", req.ContextDir, err)
	}
	dfFS, err := fsutil.NewFS(dfDir)
	if err != nil {
		return nil, fmt.Errorf("dockerfile dir: %w", err)
	}
	opt := client.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: e.frontendAttrs(req.Attrs),
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
	}
	if req.NoCache {
		opt.FrontendAttrs["no-cache"] = ""
	}
	if req.OCIDest != "" {
		dest := req.OCIDest
		opt.Exports = []client.ExportEntry{{
			Type: client.ExporterOCI,
			Output: func(map[string]string) (io.WriteCloser, error) {
				return os.Create(dest)
			},
		}}
	}
	ch := make(chan *client.SolveStatus)
	res := &buildResult{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.Vertices, res.Logs, res.StepLogs = collectStepStatus(ch)
	}()
	start := time.Now()
	resp, err := c.Solve(ctx, nil, opt, ch)
	wg.Wait()
	res.Took = time.Since(start)
	res.Response = resp
	if err != nil {
		return res, fmt.Errorf("build failed after %s: %w\n--- build log (tail) ---\n%s", res.Took.Round(time.Millisecond), err, tail(res.Logs, 30))
	}
	return res, nil
}

// collectStatus drains a status channel into the final state of each vertex and the logs.
func collectStatus(ch chan *client.SolveStatus) ([]*client.Vertex, string) {
	v, logs, _ := collectStepStatus(ch)
	return v, logs
}

// collectStepStatus is collectStatus with each vertex's logs apart too (the logs of steps that
// run at once interleave in the whole).
func collectStepStatus(ch chan *client.SolveStatus) ([]*client.Vertex, string, map[string]string) {
	byDigest := map[string]*client.Vertex{}
	var order []string
	var logs strings.Builder
	steps := map[string]*strings.Builder{}
	for s := range ch {
		for _, v := range s.Vertexes {
			d := v.Digest.String()
			if _, ok := byDigest[d]; !ok {
				order = append(order, d)
			}
			byDigest[d] = v
		}
		for _, l := range s.Logs {
			logs.Write(l.Data)
			b := steps[l.Vertex.String()]
			if b == nil {
				b = &strings.Builder{}
				steps[l.Vertex.String()] = b
			}
			b.Write(l.Data)
		}
		for _, w := range s.Warnings {
			fmt.Fprintf(&logs, "WARNING: %s\n", w.Short)
		}
	}
	out := make([]*client.Vertex, 0, len(order))
	for _, d := range order {
		out = append(out, byDigest[d])
	}
	stepLogs := make(map[string]string, len(steps))
	for d, b := range steps {
		stepLogs[d] = b.String()
	}
	return out, logs.String(), stepLogs
}

// prune removes everything from BuildKit's cache (cache mounts included): the next build is cold.
func (e *testEnv) prune(ctx context.Context, t *testing.T) {
	t.Helper()
	e.pruneWhere(ctx, t)
}

// pruneWhere prunes BuildKit's cache records matching any of the filters (buildctl prune
// --filter syntax; none: every record), in use or not.
func (e *testEnv) pruneWhere(ctx context.Context, t *testing.T, filters ...string) {
	t.Helper()
	ch := make(chan client.UsageInfo)
	n := 0
	done := make(chan struct{})
	go func() {
		for range ch {
			n++
		}
		close(done)
	}()
	err := e.client(t).Prune(ctx, ch, client.PruneAll, client.WithFilter(filters))
	close(ch)
	<-done
	if err != nil {
		t.Fatalf("pruning %q: %v", filters, err)
	}
	t.Logf("pruned %d cache records matching %q", n, filters)
}

// sortedKeys returns m's keys, sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
