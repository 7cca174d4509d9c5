package frontend

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/frontend/subrequests/lint"
	"github.com/moby/buildkit/frontend/subrequests/outline"
	"github.com/moby/buildkit/frontend/subrequests/targets"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/apicaps"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/internal/ocitest"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/tonistiigi/fsutil"
)

// These tests run Build client-side against a real buildkitd (the one
// `hack/env up` starts): the gateway code path without the frontend image.

func buildkitHost(t *testing.T) (string, string) {
	t.Helper()
	host := os.Getenv("BUILDKIT_HOST")
	if host == "" {
		if testenv.InCI() {
			t.Fatal("BUILDKIT_HOST is not set in CI: run `eval \"$(hack/env up)\"` first")
		}
		t.Skip("BUILDKIT_HOST is not set: run `eval \"$(hack/env up)\"` for the real-BuildKit tests")
	}
	builder := os.Getenv("BUILDER_IMAGE")
	if builder == "" {
		builder = "localhost:5000/nixos2docker/builder:latest"
	}
	return host, builder
}

type kitBuild struct {
	file    string
	attrs   map[string]string
	ociDest string
	// ctxDir is the build context; default: the repository's examples/toy
	// and nixos.
	ctxDir string
	// include are more trees of ctxDir in the context.
	include []string
	// secrets are BuildKit secrets the client offers, by id.
	secrets map[string][]byte
	// cacheDest, when set, receives a local cache export (mode=max).
	cacheDest string
	// inspect, when set, sees the frontend's result inside the build.
	inspect func(*gwclient.Result) error
	// caps, when set, are the LLB capabilities the frontend is told the
	// builder has, instead of the real buildkitd's.
	caps *apicaps.CapSet
}

// capsClient is a gateway client that announces other LLB capabilities than
// its builder's: on the real buildkitd it stands for a builder that refuses
// some (Docker's classic image store refuses MergeOp).
type capsClient struct {
	gwclient.Client
	caps apicaps.CapSet
}

func (c capsClient) BuildOpts() gwclient.BuildOpts {
	o := c.Client.BuildOpts()
	o.LLBCaps = c.caps
	return o
}

type kitResult struct {
	resp  *client.SolveResponse
	names []string
	// made are the vertices that ran rather than came from the cache.
	made []string
	logs string
	// warnings are the build's warnings (the frontend's, located in the file).
	warnings []*client.VertexWarning
}

func solveKit(ctx context.Context, t *testing.T, b kitBuild) (*kitResult, error) {
	t.Helper()
	host, builder := buildkitHost(t)
	c, err := client.New(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The toy flake imports ../../nixos/lib: the context is the repository
	// with only those two trees.
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if b.ctxDir != "" {
		root = b.ctxDir
	}
	base, err := fsutil.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	ctxFS, err := fsutil.NewFilterFS(base, &fsutil.FilterOpt{IncludePatterns: append([]string{"examples/toy", "nixos"}, b.include...)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "image.nix2docker"), []byte(b.file), 0o644); err != nil {
		t.Fatal(err)
	}
	dfFS, err := fsutil.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string]string{
		"filename":                     "image.nix2docker",
		"build-arg:" + ArgBuilder:      builder,
		"build-arg:" + ArgSubstituters: "false",
	}
	for k, v := range b.attrs {
		attrs[k] = v
	}
	opt := client.SolveOpt{
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
	}
	if b.secrets != nil {
		opt.Session = append(opt.Session, secretsprovider.FromMap(b.secrets))
	}
	if b.cacheDest != "" {
		opt.CacheExports = []client.CacheOptionsEntry{{Type: "local", Attrs: map[string]string{"dest": b.cacheDest, "mode": "max"}}}
	}
	if b.ociDest != "" {
		opt.Exports = []client.ExportEntry{{Type: client.ExporterOCI, Output: func(map[string]string) (io.WriteCloser, error) {
			return os.Create(b.ociDest)
		}}}
	}
	ch := make(chan *client.SolveStatus)
	res := &kitResult{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen := map[string]*client.Vertex{}
		var logs strings.Builder
		for s := range ch {
			for _, v := range s.Vertexes {
				if seen[v.Digest.String()] == nil {
					res.names = append(res.names, v.Name)
				}
				seen[v.Digest.String()] = v
			}
			for _, l := range s.Logs {
				logs.Write(l.Data)
			}
			res.warnings = append(res.warnings, s.Warnings...)
		}
		res.logs = logs.String()
		for _, v := range seen {
			if v.Started != nil && !v.Cached {
				res.made = append(res.made, v.Name)
			}
		}
	}()
	build := Build
	if b.caps != nil {
		build = func(ctx context.Context, c gwclient.Client) (*gwclient.Result, error) {
			return Build(ctx, capsClient{Client: c, caps: *b.caps})
		}
	}
	if b.inspect != nil {
		inner := build
		build = func(ctx context.Context, c gwclient.Client) (*gwclient.Result, error) {
			res, err := inner(ctx, c)
			if err != nil {
				return nil, err
			}
			return res, b.inspect(res)
		}
	}
	resp, err := c.Build(ctx, opt, "nixos2docker-frontend-test", build, ch)
	<-done
	res.resp = resp
	return res, err
}

const toyFile = "# syntax=localhost:5000/nixos2docker/frontend\n# flake=.?dir=examples/toy#toy\n"

func TestBuildKitToy(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	oci := filepath.Join(t.TempDir(), "image.tar")
	res, err := solveKit(ctx, t, kitBuild{
		file:    toyFile,
		attrs:   map[string]string{"build-arg:" + ArgEpoch: "1700000000", "label:org.example.test": "yes"},
		ociDest: oci,
	})
	if err != nil {
		t.Fatalf("build: %v\nlogs:\n%s", err, res.logs)
	}
	var nixStep, layerSteps bool
	for _, n := range res.names {
		if strings.HasPrefix(n, "nix: build nixosConfigurations.toy docker image spec") {
			nixStep = true
		}
		if strings.HasPrefix(n, "layer 1/") {
			layerSteps = true
		}
	}
	if !nixStep || !layerSteps {
		t.Errorf("progress names %q: want the nix step and layer steps named", res.names)
	}

	cfg, layers := readOCI(t, oci)
	if len(layers) < 2 || len(layers) != len(cfg.History) {
		t.Fatalf("%d layers, %d history entries", len(layers), len(cfg.History))
	}
	if cfg.Config.Labels["org.example.test"] != "yes" {
		t.Errorf("labels %v", cfg.Config.Labels)
	}
	if cfg.Created == nil || cfg.Created.Unix() != 1700000000 {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH", cfg.Created)
	}
	if len(cfg.Config.Entrypoint) == 0 {
		t.Errorf("no entrypoint: %+v", cfg.Config)
	}
	// Every store path is in exactly one layer, every layer's paths are
	// named in its history entry.
	seen := map[string]int{}
	for i, files := range layers {
		for _, f := range files {
			rest, ok := strings.CutPrefix(f, "nix/store/")
			if !ok || rest == "" {
				continue
			}
			top, _, _ := strings.Cut(rest, "/")
			if _, dup := seen[top]; dup && seen[top] != i {
				t.Errorf("%s is in layers %d and %d", top, seen[top], i)
			}
			seen[top] = i
			if !strings.Contains(cfg.History[i].CreatedBy, "/nix/store/"+top) {
				t.Errorf("history of layer %d does not name %s", i, top)
			}
		}
	}
	if len(seen) < 3 {
		t.Errorf("only %d store paths in the image", len(seen))
	}
	last := strings.Join(layers[len(layers)-1], " ")
	if strings.Contains(last, "nix/store/") {
		t.Errorf("the skeleton layer holds store paths: %s", last)
	}

	// Modes and times: sticky /tmp, private /root, every entry owned by
	// root; what the build made (the skeleton) stamped with SOURCE_DATE_EPOCH,
	// the store (its files and /nix, /nix/store) with Nix's time 1 in every
	// layer, so that store layers do not depend on the epoch (imagemodel).
	img := readImage(t, oci)
	modes := map[string]int64{}
	for _, e := range img.Layers[len(img.Layers)-1].Entries {
		modes[e.Name] = e.Mode
	}
	if modes["tmp"] != 0o1777 || modes["root"] != 0o700 {
		t.Errorf("skeleton modes: /tmp %o, /root %o (all: %v)", modes["tmp"], modes["root"], modes)
	}
	for i, l := range img.Layers {
		for _, e := range l.Entries {
			want := int64(1700000000)
			if e.Name == "nix" || e.Name == "nix/store" || strings.HasPrefix(e.Name, "nix/store/") {
				want = 1
			}
			if e.ModTime.Unix() != want || e.UID != 0 || e.GID != 0 {
				t.Errorf("layer %d: %s has mtime %v (want %d), owner %d:%d", i, e.Name, e.ModTime.Unix(), want, e.UID, e.GID)
			}
		}
	}
}

// pruned says whether BuildKit's cache was emptied under a build (other
// tests on a shared buildkitd prune it for cold builds): the toy's bottom
// layer (its 64 MiB blob) never changes, so it is redone only then.
func pruned(res *kitResult) bool {
	for _, n := range res.made {
		if strings.HasPrefix(n, "layer 1/") {
			return true
		}
	}
	return false
}

// twice runs first, then second, again while a prune got in between.
func twice(t *testing.T, first, second func() *kitResult) *kitResult {
	t.Helper()
	for attempt := 1; ; attempt++ {
		first()
		res := second()
		if !pruned(res) {
			return res
		}
		if attempt == 3 {
			t.Fatalf("the unchanged bottom layer was redone in 3 attempts: the cache was pruned each time, or layers are not reused (made: %q)", res.made)
		}
		t.Logf("the cache was pruned between the two builds; again (attempt %d)", attempt+1)
	}
}

// toyContext copies the toy's context, so that others editing the tree do
// not change it between two builds of a test.
func toyContext(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"examples/toy", "nixos"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join("..", sub))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A change to one derivation's input redoes only the layers holding what
// changed; the rest come from BuildKit's cache.
func TestBuildKitOneChange(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := toyContext(t)
	msg := filepath.Join(dir, "examples/toy/message.txt")
	build := func() *kitResult {
		res, err := solveKit(ctx, t, kitBuild{file: toyFile, ctxDir: dir})
		if err != nil {
			t.Fatalf("build: %v\nlogs:\n%s", err, res.logs)
		}
		return res
	}
	n := 0
	write := func() {
		n++
		if err := os.WriteFile(msg, []byte(fmt.Sprintf("message %d %s", n, time.Now())), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res := twice(t, func() *kitResult { write(); return build() }, func() *kitResult { write(); return build() })
	var total, made int
	for _, n := range res.names {
		if strings.HasPrefix(n, "layer ") {
			total++
		}
	}
	for _, n := range res.made {
		if strings.HasPrefix(n, "layer ") {
			made++
		}
	}
	if made == 0 || made >= total-1 {
		t.Errorf("one changed derivation redid %d of %d layers: %q", made, total, res.made)
	}
	t.Logf("one change: %d of %d layers redone: %q", made, total, res.made)
}

// A secret reaches the Nix step without entering its cache key: the same
// build with a secret offered is a cache hit.
func TestBuildKitSecretNotInCacheKey(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := toyContext(t)
	res := twice(t, func() *kitResult {
		res, err := solveKit(ctx, t, kitBuild{file: toyFile, ctxDir: dir})
		if err != nil {
			t.Fatalf("build: %v\nlogs:\n%s", err, res.logs)
		}
		return res
	}, func() *kitResult {
		res, err := solveKit(ctx, t, kitBuild{file: toyFile, ctxDir: dir, secrets: map[string][]byte{
			"nixconf": []byte("# a secret nix.conf line\n"),
			"netrc":   []byte("machine cache.example login u password p\n"),
		}})
		if err != nil {
			t.Fatalf("build with secrets: %v\nlogs:\n%s", err, res.logs)
		}
		return res
	})
	for _, n := range res.made {
		if strings.HasPrefix(n, "nix: build nixosConfigurations") || strings.HasPrefix(n, "layer ") {
			t.Errorf("%q ran again: a secret changed its cache key", n)
		}
	}
}

// Two builds from nothing (no cache, fresh Nix store) give the same image.
func TestBuildKitReproducible(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var digests []string
	for i := 0; i < 2; i++ {
		oci := filepath.Join(t.TempDir(), "image.tar")
		res, err := solveKit(ctx, t, kitBuild{
			file:    toyFile,
			attrs:   map[string]string{"build-arg:" + ArgEpoch: "1700000000", "no-cache": ""},
			ociDest: oci,
		})
		if err != nil {
			t.Fatalf("build %d: %v\nlogs:\n%s", i+1, err, res.logs)
		}
		digests = append(digests, readImage(t, oci).ManifestDigest)
		var layers int
		for _, n := range res.made {
			if strings.HasPrefix(n, "layer ") {
				layers++
			}
		}
		if layers < 2 {
			t.Errorf("build %d made %d layers: --no-cache must redo them (made: %q)", i+1, layers, res.made)
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same file gave %s and %s", digests[0], digests[1])
	}
}

func TestBuildKitTargets(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var list targets.List
	res, err := solveKit(ctx, t, kitBuild{
		file:  "# flake=.?dir=examples/toy\n",
		attrs: map[string]string{"requestid": targets.SubrequestsTargetsDefinition.Name},
		inspect: func(r *gwclient.Result) error {
			return json.Unmarshal(r.Metadata["result.json"], &list)
		},
	})
	if err != nil {
		t.Fatalf("--call targets: %v\nlogs:\n%s", err, res.logs)
	}
	var names []string
	for _, tg := range list.Targets {
		names = append(names, tg.Name)
	}
	if got := strings.Join(names, ","); got != "toy,toy-aarch64-linux,toy-x86_64-linux" {
		t.Errorf("targets %q", got)
	}
}

func TestBuildKitOutline(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var o outline.Outline
	if _, err := solveKit(ctx, t, kitBuild{
		file:  toyFile,
		attrs: map[string]string{"requestid": outline.SubrequestsOutlineDefinition.Name},
		inspect: func(r *gwclient.Result) error {
			return json.Unmarshal(r.Metadata["result.json"], &o)
		},
	}); err != nil {
		t.Fatal(err)
	}
	args := map[string]string{}
	for _, a := range o.Args {
		args[a.Name] = a.Value
	}
	if args[ArgFlake] != ".?dir=examples/toy#toy" || args[ArgBuilder] != DefaultBuilder {
		t.Errorf("outline args %v", args)
	}
	if len(o.Secrets) == 0 || o.Secrets[0].Name != "netrc" {
		t.Errorf("outline secrets %+v", o.Secrets)
	}
}

func TestBuildKitCheck(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var lr lint.LintResults
	if _, err := solveKit(ctx, t, kitBuild{
		file:  toyFile,
		attrs: map[string]string{"requestid": lint.SubrequestLintDefinition.Name},
		inspect: func(r *gwclient.Result) error {
			return json.Unmarshal(r.Metadata["result.json"], &lr)
		},
	}); err != nil {
		t.Fatal(err)
	}
	if len(lr.Warnings) != 0 || lr.Error != nil || len(lr.Sources) != 1 || lr.Sources[0].Filename != "image.nix2docker" {
		t.Errorf("check of a good file: %+v", lr)
	}
}

// With SBOM requested, every image gets an SPDX attestation of its closure.
func TestBuildKitSBOM(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oci := filepath.Join(t.TempDir(), "image.tar")
	res, err := solveKit(ctx, t, kitBuild{
		file:    toyFile,
		attrs:   map[string]string{"attest:sbom": "generator=docker/buildkit-syft-scanner"},
		ociDest: oci,
	})
	if err != nil {
		t.Fatalf("build: %v\nlogs:\n%s", err, res.logs)
	}
	blobs := readBlobs(t, oci)
	var idx ocispecs.Index
	if err := json.Unmarshal(blobs["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	// The layout's index points at the image index, which holds the image
	// and its attestation manifest.
	var inner ocispecs.Index
	if err := json.Unmarshal(blobs[blobPath(idx.Manifests[0].Digest.String())], &inner); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, d := range inner.Manifests {
		if d.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			continue
		}
		var m ocispecs.Manifest
		if err := json.Unmarshal(blobs[blobPath(d.Digest.String())], &m); err != nil {
			t.Fatal(err)
		}
		for _, l := range m.Layers {
			if l.Annotations["in-toto.io/predicate-type"] != "https://spdx.dev/Document" {
				continue
			}
			var stmt struct {
				Predicate struct {
					SPDXVersion string `json:"spdxVersion"`
					Packages    []struct {
						Name    string `json:"name"`
						Version string `json:"versionInfo"`
					} `json:"packages"`
				} `json:"predicate"`
			}
			if err := json.Unmarshal(blobs[blobPath(l.Digest.String())], &stmt); err != nil {
				t.Fatal(err)
			}
			if stmt.Predicate.SPDXVersion != "SPDX-2.3" || len(stmt.Predicate.Packages) < 3 {
				t.Errorf("SPDX predicate %+v", stmt.Predicate)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no SPDX attestation in %+v", inner.Manifests)
	}
}

func TestBuildKitBadFile(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := solveKit(ctx, t, kitBuild{file: "# syntax=x\n# flake=.?dir=examples/toy#toy\n# nixpgks=github:NixOS/nixpkgs\n"})
	if err == nil {
		t.Fatal("a file with an unknown directive built")
	}
	if !strings.Contains(err.Error(), "image.nix2docker:3:") {
		t.Errorf("error %q does not name the line", err)
	}
	srcs := errdefs.Sources(err)
	if len(srcs) == 0 || srcs[0].Info.Filename != "image.nix2docker" || srcs[0].Ranges[0].Start.Line != 3 {
		t.Fatalf("no BuildKit source location for line 3: %+v", srcs)
	}
}

// A Nix evaluation error about the body comes back from the builder stage
// located at the body's line of the user's file. (The toy is not NixOS, so
// Nix rejects the body before parsing it; a body syntax error needs nixpkgs,
// which is not on these machines: nixeval's tests map those.)
func TestBuildKitBodyError(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	file := "# syntax=x\n# flake=.?dir=examples/toy#toy\n\n{ ... }: {\n  networking.hostName = \"bad\";\n}\n"
	res, err := solveKit(ctx, t, kitBuild{file: file})
	if err == nil {
		t.Fatal("a body on a configuration that is not NixOS built")
	}
	if !strings.Contains(err.Error(), "image.nix2docker:4:1: the body needs a NixOS configuration") {
		t.Errorf("error %q does not name line 4\nlogs:\n%s", err, res.logs)
	}
	srcs := errdefs.Sources(err)
	if len(srcs) == 0 || srcs[0].Info.Filename != "image.nix2docker" || srcs[0].Ranges[0].Start.Line != 4 {
		t.Errorf("no BuildKit source location for line 4: %+v", srcs)
	}
}

// An unknown --target names the ones that exist, located at the flake
// directive.
func TestBuildKitUnknownTarget(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := solveKit(ctx, t, kitBuild{file: "# flake=.?dir=examples/toy\n", attrs: map[string]string{"target": "nope"}})
	if err == nil {
		t.Fatal("an unknown target built")
	}
	for _, want := range []string{"image.nix2docker:1:", `unknown target "nope"`, `"toy-x86_64-linux"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if srcs := errdefs.Sources(err); len(srcs) == 0 || srcs[0].Ranges[0].Start.Line != 1 {
		t.Errorf("no BuildKit source location for line 1: %+v", srcs)
	}
}

// A multi-platform result (here of one platform: the builder image is
// amd64 only) is an index whose manifest names its platform.
func TestBuildKitMultiPlatformResult(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	oci := filepath.Join(t.TempDir(), "image.tar")
	res, err := solveKit(ctx, t, kitBuild{
		file:    toyFile,
		attrs:   map[string]string{"platform": "linux/amd64", "multi-platform": "true"},
		ociDest: oci,
	})
	if err != nil {
		t.Fatalf("build: %v\nlogs:\n%s", err, res.logs)
	}
	blobs := readBlobs(t, oci)
	var idx, inner ocispecs.Index
	if err := json.Unmarshal(blobs["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blobs[blobPath(idx.Manifests[0].Digest.String())], &inner); err != nil {
		t.Fatal(err)
	}
	if len(inner.Manifests) != 1 || inner.Manifests[0].Platform == nil ||
		inner.Manifests[0].Platform.OS != "linux" || inner.Manifests[0].Platform.Architecture != "amd64" {
		t.Errorf("index manifests %+v", inner.Manifests)
	}
}

func TestBuildKitUnsupportedPlatform(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := solveKit(ctx, t, kitBuild{file: toyFile, attrs: map[string]string{"platform": "linux/s390x"}})
	if err == nil || !strings.Contains(err.Error(), "unsupported platform linux/s390x") {
		t.Fatalf("error %v, want unsupported platform", err)
	}
}

// readOCI reads an OCI layout tarball of one image: its config and the file
// names of each layer.
func readOCI(t *testing.T, p string) (*dockerspec.DockerOCIImage, [][]string) {
	t.Helper()
	img := readImage(t, p)
	var layers [][]string
	for _, l := range img.Layers {
		var names []string
		for _, e := range l.Entries {
			names = append(names, e.Name)
		}
		layers = append(layers, names)
	}
	return &img.Config, layers
}

// readImage reads the linux/amd64 image of an OCI layout tarball.
func readImage(t *testing.T, p string) *ocitest.Image {
	t.Helper()
	img, err := ocitest.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func blobPath(d string) string { return "blobs/" + strings.Replace(d, ":", "/", 1) }

func readBlobs(t *testing.T, p string) map[string][]byte {
	t.Helper()
	files, err := ocitest.FilesOf(p)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// layerIndex is the 1-based index of a layer step's progress name ("layer
// 3/5: …"), 0 for other steps.
func layerIndex(name string) int {
	var i, n int
	if _, err := fmt.Sscanf(name, "layer %d/%d", &i, &n); err != nil {
		return 0
	}
	return i
}

// On a builder without MergeOp the frontend stacks the same layers: the same
// files in the same layers with the same config, a warning at the `# syntax=`
// line saying what that costs, and, after a change, every layer from the
// lowest changed one up re-created.
func TestBuildKitStacked(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := toyContext(t)
	noMerge := capsWithout(classicStoreReason, pb.CapMergeOp)
	tmp := t.TempDir()
	build := func(name string, caps *apicaps.CapSet) (*kitResult, *ocitest.Image) {
		oci := filepath.Join(tmp, name+".tar")
		res, err := solveKit(ctx, t, kitBuild{file: toyFile, ctxDir: dir, ociDest: oci, caps: caps,
			attrs: map[string]string{"build-arg:" + ArgEpoch: "1700000000"}})
		if err != nil {
			t.Fatalf("%s build: %v\nlogs:\n%s", name, err, res.logs)
		}
		img, err := ocitest.ReadFile(oci)
		if err != nil {
			t.Fatal(err)
		}
		return res, img
	}
	mres, merged := build("merged", nil)
	sres, stacked := build("stacked", &noMerge)

	// The line that says which layering was taken: the merge step's name,
	// or the warning.
	hasMerge := func(r *kitResult) bool {
		return slices.ContainsFunc(r.names, func(n string) bool { return strings.HasPrefix(n, "merge ") })
	}
	if !hasMerge(mres) || len(mres.warnings) != 0 {
		t.Errorf("merged build: steps %q, %d warnings: want a merge step, no warning", mres.names, len(mres.warnings))
	}
	if hasMerge(sres) {
		t.Errorf("stacked build has a merge step: %q", sres.names)
	}
	if len(sres.warnings) != 1 {
		t.Fatalf("stacked build: %d warnings, want 1", len(sres.warnings))
	}
	w := sres.warnings[0]
	t.Logf("warning: %s", w.Short)
	if !strings.Contains(string(w.Short), "layers stacked") || !strings.Contains(string(w.Short), "re-creates every layer above it") {
		t.Errorf("warning %q does not say what was taken and what it costs", w.Short)
	}
	if len(w.Range) != 1 || w.Range[0].Start.Line != 1 || w.SourceInfo == nil || w.SourceInfo.Filename != "image.nix2docker" {
		t.Errorf("warning not located at the # syntax= line: %+v %+v", w.Range, w.SourceInfo)
	}

	for _, d := range ocitest.Compare(merged, stacked, ocitest.Leeway{NoopDirs: true}) {
		t.Errorf("stacked differs from merged: %s", d)
	}
	t.Logf("%d layers, the same in both layerings", len(stacked.Layers))

	// A change re-creates the layers holding it and every layer above.
	if err := os.WriteFile(filepath.Join(dir, "examples/toy/message.txt"), []byte("changed "+time.Now().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	again, changed := build("stacked-changed", &noMerge)
	var made []int
	for _, n := range again.made {
		if i := layerIndex(n); i > 0 {
			made = append(made, i)
		}
	}
	slices.Sort(made)
	lowest := 0
	for i := range stacked.Layers {
		if !slices.Equal(ocitest.Lines(stacked.Layers[i].Entries), ocitest.Lines(changed.Layers[i].Entries)) {
			lowest = i + 1
			break
		}
	}
	if lowest == 0 {
		t.Fatal("the change changed no layer")
	}
	want := []int{}
	for i := lowest; i <= len(changed.Layers); i++ {
		want = append(want, i)
	}
	if !slices.Equal(made, want) {
		t.Errorf("after a change in layer %d, layers %v were re-created, want %v (%q)", lowest, made, want, again.made)
	}
	t.Logf("a change in layer %d/%d re-created layers %v", lowest, len(changed.Layers), made)
}

// A builder that can make the layers neither way fails before the Nix step,
// located at the `# syntax=` line, saying what to do. (Which capability is
// missing matters little: any BuildKit dockerui runs on has what stacking
// needs, so this stands for a builder older than that, short of the file op
// itself, which dockerui checks first.)
func TestBuildKitNoLayering(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	old := capsWithout("test: an old builder", pb.CapMergeOp, pb.CapMetaDescription)
	res, err := solveKit(ctx, t, kitBuild{file: "# flake=.?dir=examples/toy#toy\n# syntax=x\n", caps: &old})
	if err == nil {
		t.Fatal("built without MergeOp and file ops")
	}
	for _, want := range []string{"image.nix2docker:2:1: this builder cannot make the image's layers", "docker buildx create --use", "containerd-snapshotter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if srcs := errdefs.Sources(err); len(srcs) == 0 || srcs[0].Ranges[0].Start.Line != 2 {
		t.Errorf("no BuildKit source location for line 2: %+v", srcs)
	}
	for _, n := range res.names {
		if strings.HasPrefix(n, "nix: ") {
			t.Errorf("the Nix step %q was started", n)
		}
	}
}
