package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/tonistiigi/fsutil"
)

// TestBenchFigures prints the build figures hack/bench reports; it asserts nothing about speed.
// It runs only with N2D_BENCH=1 (hack/bench sets it): it prunes BuildKit's cache.
func TestBenchFigures(t *testing.T) {
	if os.Getenv("N2D_BENCH") == "" {
		t.Skip("benchmark figures: run hack/bench")
	}
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := e.toyContext(t)
	spec, err := e.expectedSpec(ctx, t, dir)
	if err != nil {
		t.Fatal(err)
	}
	var closureBytes int64
	for _, p := range spec.Closure {
		closureBytes += p.NarSize
	}

	e.prune(ctx, t)
	cold, coldRes := e.buildToy(ctx, t, dir, nil)
	noop, noopRes := e.buildToy(ctx, t, dir, nil)
	changeToy(t, dir)
	changed, changedRes := e.buildToy(ctx, t, dir, nil)

	total, recreatedNoop := layerBytes(cold, noop)
	_, recreatedChange := layerBytes(noop, changed)
	assembly := assemblyTime(coldRes)
	tarPlain, tarGzip, err := e.plainTar(ctx, t, dir)
	if err != nil {
		t.Fatal(err)
	}

	gib := float64(closureBytes) / (1 << 30)
	perGiB := func(d time.Duration) string {
		if d <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.1f s/GiB", d.Seconds()/gib)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nnixos2docker bench (toy closure: %d paths, %.1f MiB NAR, %d layers, %s compressed)\n",
		len(spec.Closure), float64(closureBytes)/(1<<20), len(cold.Layers), mib(total))
	fmt.Fprintf(&b, "  %-34s %10s  %s\n", "case", "time", "layers re-created")
	fmt.Fprintf(&b, "  %-34s %10s  %s\n", "cold build (cache pruned)", secs(coldRes.Took), "all: "+mib(total))
	fmt.Fprintf(&b, "  %-34s %10s  %s of %s\n", "no-op rebuild", secs(noopRes.Took), mib(recreatedNoop), mib(total))
	fmt.Fprintf(&b, "  %-34s %10s  %s of %s\n", "one-change rebuild (toy-message)", secs(changedRes.Took), mib(recreatedChange), mib(total))
	fmt.Fprintf(&b, "  image assembly (cold, after Nix)   %10s  %s\n", secs(assembly), perGiB(assembly))
	fmt.Fprintf(&b, "  plain tar of the closure           %10s  %s\n", secs(tarPlain), perGiB(tarPlain))
	fmt.Fprintf(&b, "  tar | gzip of the closure          %10s  %s\n", secs(tarGzip), perGiB(tarGzip))
	fmt.Fprintf(&b, "  (assembly: from the end of the Nix step to the end of the export, OCI tarball sent\n"+
		"   to the client included; per GiB is extrapolated from a small closure, so fixed costs dominate)\n")

	// The toy's blob is repetitive text (it compresses 400:1) and small: for a per-GiB figure that
	// means something, the same closure with the blob replaced by incompressible random data.
	big := e.toyContext(t)
	blobMiB := 512
	if v, err := strconv.Atoi(os.Getenv("N2D_BENCH_BLOB_MIB")); err == nil && v > 0 {
		blobMiB = v
	}
	bigBlob(t, big, blobMiB)
	bigImg, bigRes := e.buildToy(ctx, t, big, nil)
	bigAssembly := assemblyTime(bigRes)
	bigPlain, bigGzip, err := e.plainTar(ctx, t, big)
	if err != nil {
		t.Fatal(err)
	}
	var bigTotal int64
	for _, l := range bigImg.Layers {
		bigTotal += l.Size
	}
	bigGiB := float64(blobMiB)/1024 + float64(closureBytes-64<<20)/(1<<30)
	perBigGiB := func(d time.Duration) string { return fmt.Sprintf("%.1f s/GiB", d.Seconds()/bigGiB) }
	fmt.Fprintf(&b, "\nsame closure, blob = %d MiB of random data (%.2f GiB, %s compressed)\n", blobMiB, bigGiB, mib(bigTotal))
	fmt.Fprintf(&b, "  build (blob derivation changed)    %10s\n", secs(bigRes.Took))
	fmt.Fprintf(&b, "  image assembly (after Nix)         %10s  %s\n", secs(bigAssembly), perBigGiB(bigAssembly))
	fmt.Fprintf(&b, "  plain tar of the closure           %10s  %s\n", secs(bigPlain), perBigGiB(bigPlain))
	fmt.Fprintf(&b, "  tar | gzip of the closure          %10s  %s\n", secs(bigGzip), perBigGiB(bigGzip))
	fmt.Print(b.String())
	t.Log(b.String())
}

// bigBlob rewrites the toy's blob derivation in the context dir to MiB of random data.
func bigBlob(t *testing.T, dir string, mibs int) {
	t.Helper()
	file := filepath.Join(dir, toyFlakeDir, "toy.nix")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const old = `yes "nixos2docker toy blob" | head -c 67108864 > "$out"`
	if !strings.Contains(string(src), old) {
		t.Fatalf("%s: the blob derivation changed (no %q): update the bench", file, old)
	}
	repl := fmt.Sprintf(`head -c %d /dev/urandom > "$out"`, mibs<<20)
	if err := os.WriteFile(file, []byte(strings.Replace(string(src), old, repl, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// mib formats a byte count for the table (B, KiB or MiB).
func mib(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// layerBytes returns the compressed size of after's layers, and of those among them that are
// not in before (re-created).
func layerBytes(before, after *ociImage) (total, recreated int64) {
	old := map[string]bool{}
	for _, l := range before.Layers {
		old[l.Digest] = true
	}
	for _, l := range after.Layers {
		total += l.Size
		if !old[l.Digest] {
			recreated += l.Size
		}
	}
	return total, recreated
}

// assemblyTime is the wall time of a build after its Nix builder step ended: layer states,
// merge, export and compression.
func assemblyTime(r *buildResult) time.Duration {
	var nixEnd, end time.Time
	for _, v := range r.Vertices {
		if v.Completed == nil {
			continue
		}
		if v.Completed.After(end) {
			end = *v.Completed
		}
		if strings.HasPrefix(v.Name, "nix:") || strings.Contains(v.Name, "nix build") {
			if v.Completed.After(nixEnd) {
				nixEnd = *v.Completed
			}
		}
	}
	if nixEnd.IsZero() {
		return 0
	}
	return end.Sub(nixEnd)
}

// plainTar times, in a BuildKit step of the builder image on the same machine, a plain tar of
// the toy toplevel's closure and a tar | gzip (what layer compression costs), after Nix built it.
func (e *testEnv) plainTar(ctx context.Context, t *testing.T, dir string) (plain, gzipped time.Duration, err error) {
	t.Helper()
	script := `set -e
top=$(nix build --no-link --print-out-paths "path:/src?dir=` + toyFlakeDir + `#nixosConfigurations.` + toyTarget + `.config.system.build.toplevel")
paths=$(nix-store -qR "$top")
cat $(find $paths -type f) > /dev/null   # warm the page cache: time tar, not the disk
t0=$(date +%s%N); tar -cf - $paths | cat > /dev/null; t1=$(date +%s%N)
tar -cf - $paths | gzip -c > /dev/null; t2=$(date +%s%N)
echo "$((t1 - t0)) $((t2 - t1))" > /out/times
`
	out, err := e.runInBuilder(ctx, t, map[string]string{"src": dir}, script, "times")
	if err != nil {
		return 0, 0, fmt.Errorf("timing a plain tar of the closure: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("tar timing: unexpected output %q", out)
	}
	a, _ := strconv.ParseInt(f[0], 10, 64)
	b, _ := strconv.ParseInt(f[1], 10, 64)
	return time.Duration(a), time.Duration(b), nil
}

// runInBuilder runs script in a step of the builder image, with no network and never from the
// cache, each of dirs mounted read-only at /NAME, and returns the file its /out holds.
func (e *testEnv) runInBuilder(ctx context.Context, t *testing.T, dirs map[string]string, script, file string, opts ...llb.RunOption) ([]byte, error) {
	t.Helper()
	locals := map[string]fsutil.FS{}
	opts = append(opts, llb.Args([]string{"/bin/sh", "-c", script}), llb.Network(llb.NetModeNone), llb.IgnoreCache)
	for _, name := range sortedKeys(dirs) {
		fs, err := fsutil.NewFS(dirs[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dirs[name], err)
		}
		locals[name] = fs
		opts = append(opts, llb.AddMount("/"+name, llb.Local(name), llb.Readonly))
	}
	var out []byte
	_, err := e.client(t).Build(ctx, client.SolveOpt{LocalMounts: locals}, "nixos2docker-bench",
		func(ctx context.Context, c gwclient.Client) (*gwclient.Result, error) {
			def, err := llb.Image(e.BuilderImage).Run(opts...).AddMount("/out", llb.Scratch()).Marshal(ctx)
			if err != nil {
				return nil, err
			}
			res, err := c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
			if err != nil {
				return nil, err
			}
			ref, err := res.SingleRef()
			if err != nil {
				return nil, err
			}
			out, err = ref.ReadFile(ctx, gwclient.ReadRequest{Filename: file})
			return gwclient.NewResult(), err
		}, nil)
	return out, err
}
