package integration

// CI runners start empty. A CI that builds with the GitHub Actions example
// (examples/github-actions/build.yml) carries two things from run to run: the layers, in
// BuildKit's exported cache (--cache-to/--cache-from), and the Nix store, which lives in a
// cache mount that no cache export contains, as a store snapshot (NIXOS2DOCKER_STORE=save,
// restored through the named context nixos2docker-store). This test runs the example's
// build-push-action steps as the docker buildx invocations they make, with gha swapped for
// local and registry caches (gha needs GitHub's service), on BuildKit daemons that start
// empty (hack/runner), the way runners do.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// exampleWorkflow is the GitHub Actions example the test runs.
const exampleWorkflow = "examples/github-actions/build.yml"

// ciRepository is github.repository in the simulated runs: the image is <registry>/<it>.
const ciRepository = "owner/toy"

// cacheBackend swaps the example's type=gha caches for one that works here.
type cacheBackend struct {
	name string
	// from and to rewrite one cache-from / cache-to item.
	from, to func(item string) string
}

// ghaScope returns the scope= of a gha cache item ("" if none), and whether it is gha.
func ghaScope(item string) (string, bool) {
	isGHA := false
	scope := ""
	for _, kv := range strings.Split(item, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "type" && v == "gha":
			isGHA = true
		case k == "scope":
			scope = v
		}
	}
	return scope, isGHA
}

// keepMode keeps the mode= of a cache-to item.
func keepMode(item string) string {
	for _, kv := range strings.Split(item, ",") {
		if strings.HasPrefix(kv, "mode=") {
			return "," + kv
		}
	}
	return ""
}

// localCache is a type=local cache: read from src, written to dest (BuildKit's local cache
// export overwrites its index; a CI restores it with actions/cache or similar).
func localCache(src, dest string) cacheBackend {
	return cacheBackend{
		name: "local",
		from: func(item string) string {
			if scope, ok := ghaScope(item); ok {
				return "type=local,src=" + filepath.Join(src, scope)
			}
			return item
		},
		to: func(item string) string {
			if scope, ok := ghaScope(item); ok {
				return "type=local,dest=" + filepath.Join(dest, scope) + keepMode(item)
			}
			return item
		},
	}
}

// registryCache is a type=registry cache in the CI registry: read from ref:<scope><from>,
// written to ref:<scope><to>.
func registryCache(reg *ciRegistry, from, to string) cacheBackend {
	ref := func(scope, suffix string) string { return reg.Addr + "/" + ciRepository + "-cache:" + scope + suffix }
	return cacheBackend{
		name: "registry",
		from: func(item string) string {
			if scope, ok := ghaScope(item); ok {
				return "type=registry,ref=" + ref(scope, from)
			}
			return item
		},
		to: func(item string) string {
			if scope, ok := ghaScope(item); ok {
				return "type=registry,ref=" + ref(scope, to) + keepMode(item)
			}
			return item
		},
	}
}

// ciRun is one simulated run of the example's steps on a runner.
type ciRun struct {
	e       *testEnv
	reg     *ciRegistry
	file    string // the toy's # syntax= file
	caches  []cacheBackend
	noStore bool // drop the nixos2docker-store build context (the control run)
	// storeFrom, if set, replaces the nixos2docker-store build context's value.
	storeFrom string
	repoPath  string // image repository in the CI registry (ghcr.io/<github.repository>)
}

// invocation is the docker command line of a build-push-action step of the example, with the
// toy as its context, file and target, the CI registry for ghcr.io and the run's caches.
func (c ciRun) invocation(t *testing.T, step workflowStep, contextDir string) []string {
	t.Helper()
	call := buildxCall{Substitute: func(input, v string) string {
		switch input {
		case "context":
			return contextDir
		case "file":
			return c.file
		case "target":
			return toyTarget
		}
		// The image goes to the run's repository; the store snapshot is always the first run's.
		repo := ciRepository
		if input == "tags[]" {
			repo = c.repoPath
		}
		v = strings.ReplaceAll(v, "ghcr.io/"+ciRepository, c.reg.Addr+"/"+repo)
		var items []string
		for _, b := range c.caches {
			switch input {
			case "cache-from[]":
				items = append(items, b.from(v))
			case "cache-to[]":
				items = append(items, b.to(v))
			}
		}
		if len(items) > 0 {
			return strings.Join(slices.Compact(items), "\x00")
		}
		return v
	}}
	args, err := call.args(ghEvent{Name: "push", Repository: ciRepository}, step)
	if err != nil {
		t.Fatalf("%s: %v", exampleWorkflow, err)
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "--build-context" || !strings.HasPrefix(args[i+1], "nixos2docker-store=") {
			continue
		}
		switch {
		case c.noStore:
			args = slices.Delete(args, i, i+2)
			i--
		case c.storeFrom != "":
			args[i+1] = "nixos2docker-store=" + c.storeFrom
		}
	}
	// The harness's builder image (the default is on Docker Hub) and no binary caches.
	return slices.Insert(args, 2, c.e.buildArgFlags("--build-arg")...)
}

// exampleSteps returns the example's image build step and its store save step.
func exampleSteps(t *testing.T, repo string) (build, save workflowStep) {
	t.Helper()
	steps := buildPushSteps(t, filepath.Join(repo, exampleWorkflow))
	var builds, saves []workflowStep
	for _, s := range steps {
		if strings.Contains(fmt.Sprint(s.With["build-args"]), "NIXOS2DOCKER_STORE=save") {
			saves = append(saves, s)
		} else {
			builds = append(builds, s)
		}
	}
	if len(builds) != 1 || len(saves) != 1 {
		t.Fatalf("%s: want one image build step and one NIXOS2DOCKER_STORE=save step, got %d and %d", exampleWorkflow, len(builds), len(saves))
	}
	ev := ghEvent{Name: "push", Repository: ciRepository}
	for _, s := range []workflowStep{builds[0], saves[0]} {
		if ok, err := ev.runs(s); err != nil || !ok {
			t.Fatalf("%s: step %q does not run on a push to main (%v)", exampleWorkflow, s.Name, err)
		}
	}
	if ok, _ := (ghEvent{Name: "pull_request", Repository: ciRepository}).runs(saves[0]); ok {
		t.Errorf("%s: the save step runs on pull requests too: a pull request would replace main's store snapshot", exampleWorkflow)
	}
	return builds[0], saves[0]
}

// TestCIRunnersCarryTheCache: the example workflow on runners that start empty.
//
//  1. Runner "first" (a push to main, nothing cached anywhere): the build step exports the
//     layers to a local and a registry cache and pushes the image; the save step pushes the
//     store snapshot. The local cache export is whole, and no line says ERROR but BuildKit's
//     known duplicate writes to a local cache (see localCacheExport.known) and, on this first
//     run only, its failed lookup of the store snapshot that no save step has made yet.
//  2. Runners "local" and "registry" (fresh): one change to the toy, built with that cache
//     backend and the store snapshot. The layers holding only unchanged store paths keep their
//     digests and are not uploaded again; the Nix step builds only what changed (as many store
//     paths as the same rebuild on the warm runner "first").
//  3. Runner "nostore" (fresh, the same change without the store snapshot): the control, whose
//     Nix step builds the whole closure; runner "image": the previous image as the snapshot,
//     the alternative without a save step, whose Nix step makes what only building needed.
//  4. The same change on "first" (warm): the reference figures.
//
// Times and store figures are logged, never asserted.
func TestCIRunnersCarryTheCache(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	buildStep, saveStep := exampleSteps(t, e.Repo)
	reg := e.newCIRegistry(ctx, t)
	file := filepath.Join(t.TempDir(), "toy.nix2docker")
	if err := os.WriteFile(file, []byte(e.toyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	orig := e.toyContext(t)
	// Two different one-line changes, so each fresh runner has layers of its own to upload.
	changed := map[string]string{"local": e.toyContext(t), "registry": e.toyContext(t), "warm": e.toyContext(t), "nostore": e.toyContext(t), "image": e.toyContext(t)}
	// For figures at a NixOS closure's size (not asserted, not in CI): N2D_CICACHE_BLOB_MIB=1024
	// makes the toy's blob that many MiB of random data.
	if v := os.Getenv("N2D_CICACHE_BLOB_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("N2D_CICACHE_BLOB_MIB=%q: want a number of MiB", v)
		}
		for _, dir := range append([]string{orig}, slices.Collect(maps.Values(changed))...) {
			bigBlob(t, dir, n)
		}
	}
	for _, name := range []string{"local", "registry"} {
		changeToy(t, changed[name])
	}
	copyTree(t, changed["local"], changed["warm"])
	copyTree(t, changed["local"], changed["nostore"])
	copyTree(t, changed["local"], changed["image"])

	caches := t.TempDir()
	firstCaches := []cacheBackend{localCache(filepath.Join(caches, "none"), filepath.Join(caches, "first")), registryCache(reg, "", "")}
	run := ciRun{e: e, reg: reg, file: file, repoPath: ciRepository, caches: firstCaches}

	type figure struct {
		name  string
		log   buildLog
		nix   time.Duration
		store nixStore
		up    int
	}
	var figures []figure
	// record keeps a build's figures and fails on ERROR lines, but those known() explains.
	record := func(name string, l buildLog, uploads int, known ...func(string) bool) figure {
		nix, _ := l.step("nix: build ")
		f := figure{name: name, log: l, nix: nix, store: l.nixStore(), up: uploads}
		figures = append(figures, f)
		var bad []string
	lines:
		for _, line := range l.errorLines() {
			for _, k := range known {
				if k(line) {
					continue lines
				}
			}
			bad = append(bad, line)
		}
		if len(bad) > 0 {
			t.Errorf("%s: the build printed ERROR lines:\n  %s", name, strings.Join(bad, "\n  "))
		}
		return f
	}
	uploaded := func(m int64) int {
		n := 0
		for _, ds := range reg.uploadsSince(t, m) {
			n += len(ds)
		}
		return n
	}

	// 1. The first run. The store snapshot it names does not exist yet: BuildKit shows the
	// failed lookup, and the frontend warns and builds from an empty store.
	first := e.newRunner(ctx, t, "first")
	m := reg.mark(t)
	firstLog := first.buildx(ctx, t, run.invocation(t, buildStep, orig))
	localExport := filepath.Join(caches, "first", "nixos2docker")
	dup := checkLocalCache(t, localExport)
	record("first run (cold, exports the caches)", firstLog, uploaded(m), snapshotLookup, firstCacheImport, dup.known)
	if !strings.Contains(firstLog.Text, "store snapshot nixos2docker-store not loaded") {
		t.Errorf("the first run (no store snapshot yet) does not warn that it builds without one:\n%s", tail(firstLog.Text, 30))
	}
	t.Logf("local cache export: %d blobs, %d of them in two chains; %d ERROR lines are BuildKit writing one of those twice at once", dup.blobs, len(dup.twice), dup.lines)
	firstImg := reg.image(t, ciRepository, "latest")
	m = reg.mark(t)
	saveLog := first.buildx(ctx, t, run.invocation(t, saveStep, orig))
	record("first run, save step", saveLog, uploaded(m))
	_, saveLines := saveLog.step("nix: save the store")
	t.Logf("store snapshot: %s", strings.Join(grepLines(saveLines, "store saved"), "; "))
	if len(grepLines(saveLines, "store saved")) == 0 {
		t.Errorf("the save step did not save the store:\n%s", tail(saveLog.Text, 30))
	}

	// 2. Fresh runners, one change, each cache backend.
	fresh := map[string]figure{}
	for _, name := range []string{"local", "registry"} {
		var backend cacheBackend
		if name == "local" {
			backend = localCache(filepath.Join(caches, "first"), filepath.Join(caches, "after-"+name))
		} else {
			backend = registryCache(reg, "", "-after-"+name)
		}
		r := e.newRunner(ctx, t, name)
		rc := run
		rc.caches = []cacheBackend{backend}
		m := reg.mark(t)
		l := r.buildx(ctx, t, rc.invocation(t, buildStep, changed[name]))
		uploads := reg.uploadsSince(t, m)[ciRepository]
		var known []func(string) bool
		if name == "local" {
			known = append(known, checkLocalCache(t, filepath.Join(caches, "after-"+name, "nixos2docker")).known)
		}
		f := record("fresh runner, one change, "+name+" cache", l, len(uploads), known...)
		fresh[name] = f
		r.stop(t)
		img := reg.image(t, ciRepository, "latest")
		checkReuse(t, name, firstImg, img, uploads)
		if f.store.Restored == "" || !strings.Contains(f.store.Restored, "restored") {
			t.Errorf("%s: the Nix step did not restore the store snapshot (%q)", name, f.store.Restored)
		}
	}

	// 2b. A fresh runner, nothing changed (a re-run of the same commit): nothing is uploaded.
	same := e.newRunner(ctx, t, "same")
	sc := run
	sc.caches = []cacheBackend{registryCache(reg, "", "-after-same")}
	m = reg.mark(t)
	l := same.buildx(ctx, t, sc.invocation(t, buildStep, orig))
	sameUploads := reg.uploadsSince(t, m)[ciRepository]
	record("fresh runner, nothing changed, registry cache", l, len(sameUploads))
	same.stop(t)
	if img := reg.image(t, ciRepository, "latest"); img.ManifestDigest != firstImg.ManifestDigest {
		t.Errorf("nothing changed, but the fresh runner's image is %s, the first run's %s", img.ManifestDigest, firstImg.ManifestDigest)
	}
	for _, d := range sameUploads {
		for _, layer := range firstImg.Layers {
			if layer.Digest == d {
				t.Errorf("nothing changed, but layer %s was uploaded again", short(d))
			}
		}
	}

	// 3. The control: a fresh runner without the store snapshot.
	nostore := e.newRunner(ctx, t, "nostore")
	rc := run
	rc.caches, rc.noStore = []cacheBackend{localCache(filepath.Join(caches, "first"), filepath.Join(caches, "after-nostore"))}, true
	rc.repoPath = ciRepository + "-nostore"
	l = nostore.buildx(ctx, t, rc.invocation(t, buildStep, changed["nostore"]))
	control := record("fresh runner, one change, no store snapshot", l, 0, checkLocalCache(t, filepath.Join(caches, "after-nostore", "nixos2docker")).known)
	nostore.stop(t)

	// 3b. The alternative: the previous image itself as the snapshot (its closure and the Nix
	// registration it carries), no save step. What Nix used only to build (build-time
	// dependencies, sources) is not in an image: the Nix step makes it again.
	prev := e.newRunner(ctx, t, "image")
	pc := run
	pc.caches = []cacheBackend{localCache(filepath.Join(caches, "first"), filepath.Join(caches, "after-image"))}
	pc.repoPath = ciRepository + "-image"
	pc.storeFrom = "docker-image://" + reg.Addr + "/" + ciRepository + "@" + firstImg.ManifestDigest
	l = prev.buildx(ctx, t, pc.invocation(t, buildStep, changed["image"]))
	fromImage := record("fresh runner, one change, previous image as snapshot", l, 0, checkLocalCache(t, filepath.Join(caches, "after-image", "nixos2docker")).known)
	prev.stop(t)
	if !strings.Contains(fromImage.store.Restored, "store snapshot restored: ") {
		t.Errorf("the previous image was not restored as a snapshot (%q)", fromImage.store.Restored)
	}

	// 4. The same change on the warm runner.
	wc := run
	wc.caches = []cacheBackend{localCache(filepath.Join(caches, "first"), filepath.Join(caches, "after-warm"))}
	// The image repository the fresh runners pushed to: the warm run's new layers are there
	// already (the same change as the "local" runner's), so its time is the build's own.
	l = first.buildx(ctx, t, wc.invocation(t, buildStep, changed["warm"]))
	warm := record("warm runner, one change", l, 0, checkLocalCache(t, filepath.Join(caches, "after-warm", "nixos2docker")).known)

	for _, f := range []figure{warm, control, fromImage, fresh["local"], fresh["registry"]} {
		if !f.store.Ran {
			t.Fatalf("%s: no store report from the Nix step (run.sh's \"nixos2docker: store: …\" line):\n%s", f.name, tail(f.log.Text, 40))
		}
	}
	for _, name := range []string{"local", "registry"} {
		if got, want := fresh[name].store.Built, warm.store.Built; got != want {
			t.Errorf("%s: the Nix step built or fetched %d store paths; the warm runner %d for the same change", name, got, want)
		}
	}
	if fromImage.store.Built < warm.store.Built || fromImage.store.Built >= control.store.Built {
		t.Errorf("with the previous image as the snapshot the Nix step made %d store paths: want at least the warm runner's %d and fewer than without a snapshot (%d)", fromImage.store.Built, warm.store.Built, control.store.Built)
	}
	if control.store.Built <= warm.store.Built {
		t.Errorf("without the store snapshot the Nix step built %d store paths, not more than the warm runner's %d: the control shows nothing", control.store.Built, warm.store.Built)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%-48s %9s %9s %22s %8s\n", "run", "build", "Nix step", "built or fetched", "uploads")
	for _, f := range figures {
		built := "-"
		if f.store.Ran {
			built = fmt.Sprintf("%d paths, %.1f MiB", f.store.Built, f.store.AddedMiB)
		}
		fmt.Fprintf(&b, "%-48s %8.2fs %8.2fs %22s %8d\n", f.name, f.log.Took.Seconds(), f.nix.Seconds(), built, f.up)
	}
	for _, f := range figures {
		if f.store.Restored != "" {
			fmt.Fprintf(&b, "%s: %s\n", f.name, f.store.Restored)
		}
	}
	t.Logf("figures (blob uploads to the image repository and cache):\n%s", b.String())
	for _, f := range []figure{warm, fresh["registry"]} {
		_, lines := f.log.step("nix: build ")
		t.Logf("%s, the Nix step:\n  %s", f.name, strings.Join(lines, "\n  "))
	}
}

// snapshotLookup: an ERROR line of BuildKit's failed lookup of the store snapshot (the first
// run, before any save step).
func snapshotLookup(line string) bool {
	return strings.Contains(line, ":nix-store") && strings.Contains(line, "not found")
}

// firstCacheImport: an ERROR line of BuildKit's import of a registry cache that no build has
// exported yet: the first run.
func firstCacheImport(line string) bool {
	return strings.Contains(line, "failed to configure registry cache importer") && strings.Contains(line, "not found")
}

// localCacheExport is what checkLocalCache found in a local cache export.
type localCacheExport struct {
	blobs int
	// twice are the blobs the cache config lists in more than one chain (a layer on its own
	// and in the merged image).
	twice map[string]bool
	lines int // ERROR lines known() accepted
}

// known accepts the one ERROR line BuildKit's local cache export is known to print:
// "(*service).Write failed … ref layer-sha256:X locked …" for a blob X the export writes twice
// at once (since BuildKit v0.27, cache blobs are pushed in parallel, a blob as many times as
// the cache config lists it: once per chain). The second writer waits for the first and then
// finds the blob there, so the export is whole; the client logs each wait as an error. (The
// merge cannot be left out of the export: BuildKit v0.34.2 honours llb.WithoutExportCache only
// for cache keys, not for the result of an op that ran, solver/edge.go execOp.)
func (x *localCacheExport) known(line string) bool {
	m := lockedWrite.FindStringSubmatch(line)
	if m == nil || !x.twice["sha256:"+m[1]] {
		return false
	}
	x.lines++
	return true
}

var lockedWrite = regexp.MustCompile(`\(\*service\)\.Write failed.*ref layer-sha256:([0-9a-f]{64}) locked`)

// checkLocalCache checks a local cache export is whole (every blob its cache config names is
// there, with that digest) and returns the blobs its config lists in more than one chain.
func checkLocalCache(t *testing.T, dir string) *localCacheExport {
	t.Helper()
	read := func(d string) []byte {
		alg, hex, _ := strings.Cut(d, ":")
		data, err := os.ReadFile(filepath.Join(dir, "blobs", alg, hex))
		if err != nil {
			t.Fatalf("local cache export %s: %v", dir, err)
		}
		if got := digest.FromBytes(data).String(); got != d {
			t.Fatalf("local cache export %s: blob %s holds %s", dir, d, got)
		}
		return data
	}
	var idx ocispecs.Index
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatalf("local cache export: %v", err)
	}
	if err := json.Unmarshal(data, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("local cache export %s: index.json: %v, %d manifests", dir, err, len(idx.Manifests))
	}
	var man ocispecs.Manifest
	if err := json.Unmarshal(read(idx.Manifests[0].Digest.String()), &man); err != nil {
		t.Fatalf("local cache export %s: manifest: %v", dir, err)
	}
	var cfg struct {
		Layers []struct {
			Blob string `json:"blob"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(read(man.Config.Digest.String()), &cfg); err != nil {
		t.Fatalf("local cache export %s: cache config: %v", dir, err)
	}
	x := &localCacheExport{twice: map[string]bool{}}
	seen := map[string]bool{}
	for _, l := range cfg.Layers {
		if seen[l.Blob] {
			x.twice[l.Blob] = true
			continue
		}
		seen[l.Blob] = true
		read(l.Blob)
	}
	x.blobs = len(seen)
	if x.blobs == 0 {
		t.Fatalf("local cache export %s has no layers", dir)
	}
	return x
}

// checkReuse: in the image a fresh runner pushed, the layers holding only store paths the first
// image has keep their digests and were not uploaded again; layers with new paths are new and
// were uploaded.
func checkReuse(t *testing.T, name string, first, img *ociImage, uploads []string) {
	t.Helper()
	oldPaths := layerOf(first)
	oldLayers := map[string]bool{}
	for _, l := range first.Layers {
		oldLayers[l.Digest] = true
	}
	up := map[string]bool{}
	for _, d := range uploads {
		up[d] = true
	}
	reused, fresh := 0, 0
	for i, l := range img.Layers {
		var newPaths []string
		for _, p := range l.StorePaths() {
			if _, ok := oldPaths[p]; !ok {
				newPaths = append(newPaths, p)
			}
		}
		switch {
		case len(l.StorePaths()) == 0:
			// The skeleton points at the toplevel, which changed.
		case len(newPaths) == 0:
			reused++
			if !oldLayers[l.Digest] {
				t.Errorf("%s: layer %d (%s) holds only unchanged store paths but has a new digest", name, i, short(l.Digest))
			}
			if up[l.Digest] {
				t.Errorf("%s: layer %d (%s) holds only unchanged store paths but was uploaded again", name, i, short(l.Digest))
			}
		default:
			fresh++
			if oldLayers[l.Digest] {
				t.Errorf("%s: layer %d (%s) holds new store paths %v but kept its digest", name, i, short(l.Digest), newPaths)
			}
			if !up[l.Digest] {
				t.Errorf("%s: layer %d (%s) is new but was not uploaded (uploads: %v)", name, i, short(l.Digest), uploads)
			}
		}
	}
	if fresh == 0 || reused == 0 {
		t.Fatalf("%s: %d layers reused and %d new: the change did not make the test's case", name, reused, fresh)
	}
	t.Logf("%s: %d layers reused, %d new; %d blobs uploaded to the image repository", name, reused, fresh, len(uploads))
}

// grepLines returns the lines that contain s.
func grepLines(lines []string, s string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// copyTree copies the directory src over dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}
