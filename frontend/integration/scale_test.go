package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestBenchScale prints rebuild figures of the toy grown to a NixOS-sized closure (hack/bench
// --scale sets N2D_BENCH_SCALE="PATHS:GIB,…"): for each size, a cold build (BuildKit's cache
// pruned), no-op rebuilds, rebuilds after an edit of a file Nix does not use, and one-change
// rebuilds (examples/toy/message.txt: three small paths change), each through `docker buildx
// build --push` to the local registry, with the bytes of layers re-created, next to plain tar
// and tar | gzip of the whole closure and of the changed paths, the Nix step's share of each
// rebuild, and the floor of the same builder and registry (a two-line Dockerfile's no-op and
// one-file rebuilds, pushed the same way). It asserts nothing about speed.
func TestBenchScale(t *testing.T) {
	scales := os.Getenv("N2D_BENCH_SCALE")
	if scales == "" {
		t.Skip("scaled benchmark figures: run hack/bench --scale")
	}
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("N2D_BENCH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	var out strings.Builder
	for _, s := range strings.Split(scales, ",") {
		n, gib, err := parseScale(s)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString(e.benchScale(ctx, t, n, gib, runs))
	}
	fmt.Print(out.String())
	t.Log(out.String())
}

func parseScale(s string) (int, float64, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	n, err1 := strconv.Atoi(a)
	gib, err2 := strconv.ParseFloat(b, 64)
	if !ok || err1 != nil || err2 != nil || n < 1 || gib <= 0 {
		return 0, 0, fmt.Errorf("N2D_BENCH_SCALE: %q is not PATHS:GIB (e.g. 600:0.5)", s)
	}
	return n, gib, nil
}

// scaleJSON is examples/toy/scale.json for n paths holding gib GiB: sizes drawn from a
// log-normal distribution (a few large paths, many small ones, as a system's closure), scaled
// to the total; each path references up to three earlier ones, recent or popular (early).
func scaleJSON(n int, gib float64) []byte {
	rng := rand.New(rand.NewPCG(uint64(n), 600))
	type entry struct {
		Size int64 `json:"size"`
		Refs []int `json:"refs"`
	}
	raw := make([]float64, n)
	var sum float64
	for i := range raw {
		raw[i] = math.Exp(rng.NormFloat64() * 1.8)
		sum += raw[i]
	}
	total := gib * (1 << 30)
	entries := make([]entry, n)
	for k := range entries {
		entries[k].Size = max(1, int64(raw[k]/sum*total))
		entries[k].Refs = []int{}
		for range rng.IntN(4) {
			if k == 0 {
				break
			}
			var r int
			if rng.IntN(2) == 0 {
				r = k - 1 - rng.IntN(min(k, 20))
			} else {
				u := rng.Float64()
				r = int(float64(k) * u * u)
			}
			if !slices.Contains(entries[k].Refs, r) {
				entries[k].Refs = append(entries[k].Refs, r)
			}
		}
		slices.Sort(entries[k].Refs)
	}
	data, _ := json.Marshal(map[string]any{"paths": entries})
	return data
}

// scaledBuild is one `docker buildx build --push` and what it made.
type scaledBuild struct {
	took     time.Duration
	assembly time.Duration // from the end of the Nix step to the end of the build
	nix      time.Duration // the Nix step, when it ran
	layers   []ocispecs.Descriptor
	ran      []string // vertices that ran (not cached)
}

func (e *testEnv) benchScale(ctx context.Context, t *testing.T, n int, gib float64, runs int) string {
	t.Helper()
	dir := e.toyContext(t)
	if err := os.WriteFile(filepath.Join(dir, toyFlakeDir, "scale.json"), scaleJSON(n, gib), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "toy.nix2docker")
	if err := os.WriteFile(file, []byte(e.toyFile()), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("%s/nixos2docker/bench-scale:%d-%g", e.Registry, n, gib)
	build := func(what string) scaledBuild {
		t.Helper()
		b, err := e.buildxPush(ctx, file, dir, ref)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %s, ran %d vertices: %s", what, secs(b.took), len(b.ran), strings.Join(b.ran, "; "))
		return b
	}
	load0 := loadAverage()
	e.prune(ctx, t)
	cold := build("cold build")
	total := blobBytes(cold.layers)

	type row struct {
		name      string
		times     []time.Duration
		nix       []time.Duration
		recreated int64
		ranVertex int
	}
	prev := cold
	measure := func(name string, edit func(int)) row {
		r := row{name: name}
		for i := range runs {
			if edit != nil {
				edit(i)
			}
			b := build(fmt.Sprintf("%s %d/%d", name, i+1, runs))
			r.times = append(r.times, b.took)
			r.nix = append(r.nix, b.nix)
			r.recreated = max(r.recreated, newBytes(prev.layers, b.layers))
			r.ranVertex = max(r.ranVertex, len(b.ran))
			prev = b
		}
		return r
	}
	noop := measure("no-op rebuild", nil)
	unrelated := filepath.Join(dir, "unrelated.txt")
	contextOnly := measure("context-only edit", func(i int) {
		if err := os.WriteFile(unrelated, []byte(fmt.Sprintf("edit %d at %s\n", i, time.Now().UTC().Format(time.RFC3339Nano))), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	var before string // the context before the last change
	oneChange := measure("one-change rebuild", func(int) {
		before = t.TempDir()
		if err := os.CopyFS(before, os.DirFS(dir)); err != nil {
			t.Fatal(err)
		}
		changeToy(t, dir)
	})
	floor := e.dockerfileFloor(ctx, t, runs)
	load1 := loadAverage()
	ref0 := e.referenceFigures(ctx, t, before, dir)

	var b strings.Builder
	gibs := float64(ref0.closureBytes) / (1 << 30)
	fmt.Fprintf(&b, "\nnixos2docker bench: toy grown to %d paths, %.2f GiB (NAR: %d paths, %.2f GiB), %d layers, %s compressed\n",
		n, gib, ref0.closurePaths, gibs, len(cold.layers), mib(total))
	fmt.Fprintf(&b, "  machine load (1-minute average) before / after: %s / %s; %d runs per rebuild case\n", load0, load1, runs)
	fmt.Fprintf(&b, "  %-28s %22s  %s\n", "case", "time min / median / max", "layers re-created (compressed); vertices run")
	fmt.Fprintf(&b, "  %-28s %22s  all: %s; %d\n", "cold build (cache pruned)", secs(cold.took), mib(total), len(cold.ran))
	fmt.Fprintf(&b, "  %-28s %22s  %.0f MB/s of closure\n", "  of which after Nix", secs(cold.assembly), float64(ref0.closureBytes)/1e6/cold.assembly.Seconds())
	for _, r := range []row{noop, contextOnly, oneChange} {
		fmt.Fprintf(&b, "  %-28s %22s  %s of %s; %d\n", r.name, spread(r.times), mib(r.recreated), mib(total), r.ranVertex)
		if r.nix[0] > 0 {
			fmt.Fprintf(&b, "  %-28s %22s\n", "  of which the Nix step", spread(r.nix))
		}
	}
	fmt.Fprintf(&b, "  %-28s %22s  (BuildKit's floor here: a FROM scratch + COPY Dockerfile)\n", "Dockerfile no-op rebuild", spread(floor.noop))
	fmt.Fprintf(&b, "  %-28s %22s\n", "Dockerfile one-file change", spread(floor.change))
	fmt.Fprintf(&b, "  %-28s %22s  %.0f MB/s\n", "plain tar of the closure", secs(ref0.tarClosure), float64(ref0.closureBytes)/1e6/ref0.tarClosure.Seconds())
	fmt.Fprintf(&b, "  %-28s %22s  %.0f MB/s\n", "tar | gzip of the closure", secs(ref0.gzipClosure), float64(ref0.closureBytes)/1e6/ref0.gzipClosure.Seconds())
	fmt.Fprintf(&b, "  %-28s %22s  (%d paths, %s)\n", "plain tar of changed paths", secs(ref0.tarChanged), ref0.changedPaths, mib(ref0.changedBytes))
	fmt.Fprintf(&b, "  %-28s %22s\n", "tar | gzip of changed paths", secs(ref0.gzipChanged))
	fmt.Fprintf(&b, "  cold assembly throughput / tar | gzip throughput: %.2f\n", ref0.gzipClosure.Seconds()/cold.assembly.Seconds())
	return b.String()
}

// spread prints the minimum, median and maximum of ds.
func spread(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("%.2f / %.2f / %.2f s", s[0].Seconds(), s[len(s)/2].Seconds(), s[len(s)-1].Seconds())
}

// floorFigures are the times of the smallest build BuildKit does, with the same builder,
// flags and registry as the toy's: what no frontend can go below.
type floorFigures struct{ noop, change []time.Duration }

// dockerfileFloor times a two-line Dockerfile (FROM scratch, COPY one file) pushed like the
// toy: runs no-op rebuilds, then runs rebuilds with the file changed.
func (e *testEnv) dockerfileFloor(ctx context.Context, t *testing.T, runs int) floorFigures {
	t.Helper()
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM scratch\nCOPY message.txt /\n")
	write("message.txt", "first\n")
	ref := e.Registry + "/nixos2docker/bench-floor:latest"
	build := func() time.Duration {
		res, err := run(ctx, nil, "docker", "buildx", "build", "--builder", e.BuildxBuilder, "--progress=plain",
			"--provenance=false", "--output", "type=image,name="+ref+",push=true", dir)
		if err != nil {
			t.Fatalf("Dockerfile floor: %v", err)
		}
		return res.Took
	}
	build()
	var f floorFigures
	for range runs {
		f.noop = append(f.noop, build())
	}
	for i := range runs {
		write("message.txt", fmt.Sprintf("change %d at %s\n", i, time.Now().UTC().Format(time.RFC3339Nano)))
		f.change = append(f.change, build())
	}
	return f
}

// buildxPush builds the toy with `docker buildx build --push`, timing the command, and reads
// the vertices it ran and the pushed manifest's layers.
func (e *testEnv) buildxPush(ctx context.Context, file, dir, ref string) (scaledBuild, error) {
	args := append([]string{"buildx", "build", "--builder", e.BuildxBuilder,
		"--progress=rawjson", "--provenance=false", "-f", file, "--target", toyTarget},
		e.buildArgFlags("--build-arg")...)
	res, err := run(ctx, nil, "docker", append(args, "--output", "type=image,name="+ref+",push=true", dir)...)
	if err != nil {
		return scaledBuild{}, err
	}
	b := scaledBuild{took: res.Took}
	vertices, err := rawJSONVertices(res.Stderr)
	if err != nil {
		return b, err
	}
	var nixEnd, end time.Time
	for _, v := range vertices {
		if v.Completed == nil {
			continue
		}
		if v.Completed.After(end) {
			end = *v.Completed
		}
		if strings.HasPrefix(v.Name, "nix: build") && v.Completed.After(nixEnd) {
			nixEnd = *v.Completed
		}
		if !v.Cached && v.Started != nil {
			took := v.Completed.Sub(*v.Started)
			b.ran = append(b.ran, fmt.Sprintf("%s (%.2f s)", v.Name, took.Seconds()))
			if strings.HasPrefix(v.Name, "nix: build") {
				b.nix += took
			}
		}
	}
	if !nixEnd.IsZero() {
		b.assembly = end.Sub(nixEnd)
	}
	b.layers, err = e.manifestLayers(ref)
	return b, err
}

// rawJSONVertices reads buildx's --progress=rawjson output: one SolveStatus per line.
func rawJSONVertices(stderr string) ([]*client.Vertex, error) {
	byDigest := map[string]*client.Vertex{}
	var order []string
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var s client.SolveStatus
		if err := json.Unmarshal(line, &s); err != nil {
			return nil, fmt.Errorf("buildx rawjson: %w", err)
		}
		for _, v := range s.Vertexes {
			d := v.Digest.String()
			if _, ok := byDigest[d]; !ok {
				order = append(order, d)
			}
			byDigest[d] = v
		}
	}
	out := make([]*client.Vertex, 0, len(order))
	for _, d := range order {
		out = append(out, byDigest[d])
	}
	return out, sc.Err()
}

// manifestLayers reads the layers of a tagged single-platform image in the local registry.
func (e *testEnv) manifestLayers(ref string) ([]ocispecs.Descriptor, error) {
	repo, tag, _ := strings.Cut(strings.TrimPrefix(ref, e.Registry+"/"), ":")
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/%s/manifests/%s", e.Registry, repo, tag), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", ocispecs.MediaTypeImageManifest+", application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: registry answered %s", ref, resp.Status)
	}
	var m ocispecs.Manifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return m.Layers, nil
}

func blobBytes(ls []ocispecs.Descriptor) (n int64) {
	for _, l := range ls {
		n += l.Size
	}
	return n
}

// newBytes is the compressed size of the layers of after that before does not have.
func newBytes(before, after []ocispecs.Descriptor) (n int64) {
	old := map[string]bool{}
	for _, l := range before {
		old[l.Digest.String()] = true
	}
	for _, l := range after {
		if !old[l.Digest.String()] {
			n += l.Size
		}
	}
	return n
}

// loadAverage is the 1-minute load average of the machine, as uptime prints it.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// reference are the plain-tar figures of a scaled toy: the closure of after's toplevel, and
// the paths in it that before's does not have.
type reference struct {
	closurePaths, changedPaths int
	closureBytes, changedBytes int64
	tarClosure, gzipClosure    time.Duration
	tarChanged, gzipChanged    time.Duration
}

// referenceFigures builds both toplevels with Nix in one BuildKit step on the same machine
// (its store on a tmpfs, so nothing stays behind) and times plain tar and tar | gzip, the
// page cache warm, as the builds' own reads are.
func (e *testEnv) referenceFigures(ctx context.Context, t *testing.T, before, after string) reference {
	t.Helper()
	attr := `#nixosConfigurations.` + toyTarget + `.config.system.build.toplevel`
	script := `set -e
a=$(nix build --no-link --print-out-paths "path:/a?dir=` + toyFlakeDir + attr + `")
b=$(nix build --no-link --print-out-paths "path:/b?dir=` + toyFlakeDir + attr + `")
nix-store -qR "$a" | sort > /tmp/a
nix-store -qR "$b" | sort > /tmp/b
comm -13 /tmp/a /tmp/b > /tmp/changed
paths=$(cat /tmp/b); changed=$(cat /tmp/changed)
cat $(find $paths -type f) > /dev/null
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms); tar -cf - $paths | cat > /dev/null
t1=$(ms); tar -cf - $paths | gzip -c > /dev/null
t2=$(ms); tar -cf - $changed | cat > /dev/null
t3=$(ms); tar -cf - $changed | gzip -c > /dev/null
t4=$(ms)
echo "$(wc -l < /tmp/b) $(du -scb $paths | tail -1 | cut -f1) $(wc -l < /tmp/changed) $(du -scb $changed | tail -1 | cut -f1) $((t1-t0)) $((t2-t1)) $((t3-t2)) $((t4-t3))" > /out/figures
`
	out, err := e.runInBuilder(ctx, t, map[string]string{"a": before, "b": after}, script, "figures",
		llb.AddMount("/nix", llb.Scratch(), llb.Tmpfs()))
	if err != nil {
		t.Fatalf("reference figures: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 8 {
		t.Fatalf("reference figures: unexpected output %q", out)
	}
	num := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	ms := func(i int) time.Duration { return time.Duration(num(i)) * time.Millisecond }
	return reference{
		closurePaths: int(num(0)), closureBytes: num(1), changedPaths: int(num(2)), changedBytes: num(3),
		tarClosure: ms(4), gzipClosure: ms(5), tarChanged: ms(6), gzipChanged: ms(7),
	}
}

// TestScaledOneChangeRebuild: the toy grown to 200 store paths holding 200 MiB of random data
// (a size CI affords). After a one-change rebuild (three small paths change), exactly the layers
// holding a changed path are re-created: only their steps ran (BuildKit's cache status), each
// copied its own paths and nothing else (the steps' logs), and the Nix step copied no store path.
func TestScaledOneChangeRebuild(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	if err := os.WriteFile(filepath.Join(dir, toyFlakeDir, "scale.json"), scaleJSON(200, 200.0/1024), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := e.buildToy(ctx, t, dir, nil)
	changeToy(t, dir)
	after, res := e.buildToy(ctx, t, dir, nil)
	t.Logf("one-change rebuild of %d layers took %s", len(after.Layers), res.Took.Round(time.Millisecond))

	old := layerOf(before)
	oldDigests := map[string]bool{}
	for _, l := range before.Layers {
		oldDigests[l.Digest] = true
	}
	want := map[string]bool{} // the paths of the layers holding a changed path
	changedLayers, paths := 0, 0
	for i, l := range after.Layers {
		ps := l.StorePaths()
		paths += len(ps)
		fresh := slices.ContainsFunc(ps, func(p string) bool { _, ok := old[p]; return !ok })
		switch {
		case len(ps) == 0: // the skeleton: it points at the toplevel, which changed
		case fresh:
			changedLayers++
			for _, p := range ps {
				want[p] = true
			}
			if oldDigests[l.Digest] {
				t.Errorf("layer %d holds a changed path but kept its digest", i+1)
			}
		case !oldDigests[l.Digest]:
			t.Errorf("layer %d (%s) holds only unchanged paths but was re-created", i+1, short(l.Digest))
		}
	}
	if changedLayers == 0 || len(want) > paths/4 {
		t.Fatalf("%d of %d layers hold changed paths (%d of %d paths): the change is not the small one this test is about", changedLayers, len(after.Layers), len(want), paths)
	}

	// What ran: the layer steps print the paths they copy; the Nix step says what it builds.
	copied := map[string]bool{}
	ranSteps := 0
	for _, v := range res.Vertices {
		log := res.StepLogs[v.Digest.String()]
		if strings.HasPrefix(v.Name, "nix: build") && strings.Contains(log, "copying") {
			t.Errorf("the Nix step copied store paths:\n%s", tail(log, 10))
		}
		if v.Cached || v.Started == nil {
			continue
		}
		for _, line := range strings.Split(log, "\n") {
			_, list, ok := strings.Cut(line, "nixos2docker: copying ")
			if !ok {
				continue
			}
			_, list, _ = strings.Cut(list, ":")
			ranSteps++
			for _, p := range strings.Fields(list) {
				if copied[p] {
					t.Errorf("%s copied twice", p)
				}
				copied[p] = true
			}
		}
	}
	if ranSteps != changedLayers {
		t.Errorf("%d layer steps ran, want the %d that hold a changed path", ranSteps, changedLayers)
	}
	for p := range copied {
		if !want[p] {
			t.Errorf("%s was copied, but its layer holds no changed path", p)
		}
	}
	for p := range want {
		if !copied[p] {
			t.Errorf("%s is in a re-created layer but no step copied it", p)
		}
	}
	t.Logf("%d of %d layers re-created, %d of %d store paths copied", changedLayers, len(after.Layers)-1, len(copied), paths)
}
