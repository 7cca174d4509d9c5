package integration

// Tests of the harness itself: the images hack/env pushes are real and usable by BuildKit, and
// a `# syntax=` line reaches our frontend. They hold whatever state the frontend is in.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

const frontendBinary = "/bin/nixos2docker-frontend"

// registryDigest asks the local registry for the manifest digest of a tagged image.
func (e *testEnv) registryDigest(ref string) (string, error) {
	repo, tag, ok := strings.Cut(strings.TrimPrefix(ref, e.Registry+"/"), ":")
	if !ok || !strings.HasPrefix(ref, e.Registry+"/") {
		return "", fmt.Errorf("%s is not a tagged image in %s", ref, e.Registry)
	}
	req, err := http.NewRequest(http.MethodHead, fmt.Sprintf("http://%s/v2/%s/manifests/%s", e.Registry, repo, tag), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", strings.Join([]string{
		ocispecs.MediaTypeImageIndex, ocispecs.MediaTypeImageManifest,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
	}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("registry %s: %w", e.Registry, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: registry answered %s", ref, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// TestRegistryServesHarnessImages: the local registry answers for the images hack/env pushed.
func TestRegistryServesHarnessImages(t *testing.T) {
	e := requireEnv(t)
	for _, ref := range []string{e.FrontendImage, e.BuilderImage} {
		d, err := e.registryDigest(ref)
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("%s@%s", ref, d)
	}
}

// gatewayBuild runs f as a client-side frontend against the env's buildkitd.
func (e *testEnv) gatewayBuild(ctx context.Context, t *testing.T, f gwclient.BuildFunc) error {
	t.Helper()
	c := e.client(t)
	ch := make(chan *client.SolveStatus)
	var logs string
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, logs = collectStatus(ch)
	}()
	_, err := c.Build(ctx, client.SolveOpt{}, "nixos2docker-integration", f, ch)
	<-done
	if err != nil {
		return fmt.Errorf("%w\n--- log ---\n%s", err, tail(logs, 30))
	}
	return nil
}

// TestFrontendImagePullable: BuildKit pulls the frontend image from the registry; its config
// runs our binary, which is in the image.
func TestFrontendImagePullable(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := e.gatewayBuild(ctx, t, func(ctx context.Context, c gwclient.Client) (*gwclient.Result, error) {
		_, _, cfgBytes, err := c.ResolveImageConfig(ctx, e.FrontendImage, sourceresolver.Opt{
			ImageOpt: &sourceresolver.ResolveImageOpt{ResolveMode: "pull"},
		})
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", e.FrontendImage, err)
		}
		var img dockerspec.DockerOCIImage
		if err := json.Unmarshal(cfgBytes, &img); err != nil {
			return nil, fmt.Errorf("image config: %w", err)
		}
		if got := strings.Join(img.Config.Entrypoint, " "); got != frontendBinary {
			t.Errorf("frontend image entrypoint = %q, want %q", got, frontendBinary)
		}
		def, err := llb.Image(e.FrontendImage, llb.ResolveModeForcePull).Marshal(ctx)
		if err != nil {
			return nil, fmt.Errorf("marshal: %w", err)
		}
		res, err := c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return nil, fmt.Errorf("pulling %s: %w", e.FrontendImage, err)
		}
		ref, err := res.SingleRef()
		if err != nil {
			return nil, err
		}
		st, err := ref.StatFile(ctx, gwclient.StatRequest{Path: frontendBinary})
		if err != nil {
			return nil, fmt.Errorf("%s in %s: %w", frontendBinary, e.FrontendImage, err)
		}
		if os.FileMode(st.Mode)&0o111 == 0 || st.Size < 1<<20 {
			t.Errorf("%s: mode %v, %d bytes: not an executable frontend binary", frontendBinary, os.FileMode(st.Mode), st.Size)
		}
		return gwclient.NewResult(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBuilderImageRunsNix: the builder image runs Debian's Nix 2.34 in a BuildKit step with the
// harness's nix.conf (flakes on, no sandbox, no substituters) and evaluates and builds offline.
func TestBuilderImageRunsNix(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	script := `set -e
nix --version > /out/version
nix config show > /out/config
nix build --no-link --print-out-paths --expr 'derivation { name = "hello"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo hello > $out" ]; }' --impure > /out/path
cat "$(cat /out/path)" > /out/hello
`
	err := e.gatewayBuild(ctx, t, func(ctx context.Context, c gwclient.Client) (*gwclient.Result, error) {
		run := llb.Image(e.BuilderImage, llb.ResolveModeForcePull).Run(
			llb.Args([]string{"/bin/sh", "-c", script}),
			llb.Network(llb.NetModeNone),
			llb.IgnoreCache,
		)
		out := run.AddMount("/out", llb.Scratch())
		def, err := out.Marshal(ctx)
		if err != nil {
			return nil, fmt.Errorf("marshal: %w", err)
		}
		res, err := c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return nil, fmt.Errorf("nix in %s: %w", e.BuilderImage, err)
		}
		ref, err := res.SingleRef()
		if err != nil {
			return nil, err
		}
		read := func(name string) string {
			b, err := ref.ReadFile(ctx, gwclient.ReadRequest{Filename: name})
			if err != nil {
				t.Errorf("reading %s: %v", name, err)
			}
			return string(b)
		}
		version, config, hello := read("version"), read("config"), read("hello")
		t.Logf("builder image: %s", strings.TrimSpace(version))
		if !strings.Contains(version, " 2.34") {
			t.Errorf("nix --version = %q, want 2.34.x", version)
		}
		for _, want := range []string{"experimental-features = ", "sandbox = false", "substituters = \n"} {
			if !strings.Contains(config, want) {
				t.Errorf("nix config show lacks %q", want)
			}
		}
		if !strings.Contains(config, "flakes") {
			t.Errorf("flakes are not enabled in the builder image's nix.conf")
		}
		if hello != "hello\n" {
			t.Errorf("built derivation holds %q, want %q", hello, "hello\n")
		}
		return gwclient.NewResult(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSyntaxLineReachesFrontend: a file whose first line is `# syntax=<frontend image>` is
// handed to our frontend, not parsed as a Dockerfile. The control build (same file without the
// syntax line) must fail in the Dockerfile parser; the real one must not.
func TestSyntaxLineReachesFrontend(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body := "{ ... }: { }\n"
	emptyCtx := t.TempDir()

	_, controlErr := e.solve(ctx, t, buildRequest{ContextDir: emptyCtx, File: body})
	if controlErr == nil {
		t.Fatal("control: BuildKit's Dockerfile frontend accepted a Nix module; the test cannot tell frontends apart")
	}
	const parserMark = "dockerfile parse error"
	if !strings.Contains(controlErr.Error(), parserMark) && !strings.Contains(controlErr.Error(), "unknown instruction") {
		t.Logf("control error (expected a Dockerfile parse error): %v", controlErr)
	}

	res, err := e.solve(ctx, t, buildRequest{ContextDir: emptyCtx, File: e.syntaxFile(body)})
	if res == nil {
		t.Fatal(err)
	}
	resolved := false
	for _, v := range res.Vertices {
		if strings.Contains(v.Name, e.FrontendImage) && v.Completed != nil && v.Error == "" {
			resolved = true
		}
	}
	if !resolved {
		t.Errorf("no completed vertex resolved %s (vertices: %v)", e.FrontendImage, vertexNames(res))
	}
	if err == nil {
		t.Logf("frontend built the file in %s", res.Took.Round(time.Millisecond))
		return
	}
	msg := err.Error()
	for _, bad := range []string{parserMark, "unknown instruction", "failed to resolve source metadata", "no such host", "not found: not found"} {
		if strings.Contains(msg, bad) {
			t.Fatalf("the syntax line did not reach the frontend (%q): %v", bad, err)
		}
	}
	// The frontend ran and answered with its own error (an empty context has no flake).
	t.Logf("frontend answered with its own error, as expected for an empty context: %s", firstLine(msg))
}

func vertexNames(r *buildResult) []string {
	if r == nil {
		return nil
	}
	var out []string
	for _, v := range r.Vertices {
		out = append(out, v.Name)
	}
	return out
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
