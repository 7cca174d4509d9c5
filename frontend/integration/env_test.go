package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// testEnv is what hack/env prints and hack/integration exports.
type testEnv struct {
	BuildkitHost  string // unix://…/buildkitd.sock
	Registry      string // localhost:5000
	FrontendImage string // localhost:5000/nixos2docker/frontend:dev
	BuilderImage  string // localhost:5000/nixos2docker/builder:latest
	BuildxBuilder string // the remote-driver buildx builder on BuildkitHost
	Buildctl      string // path of the pinned buildctl
	Repo          string // repository root
}

// requireEnv returns the environment, or skips the test when it is not set up, naming the
// command that sets it up. Under CI a missing environment fails the test instead.
func requireEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{
		BuildkitHost:  os.Getenv("BUILDKIT_HOST"),
		Registry:      os.Getenv("REGISTRY"),
		FrontendImage: os.Getenv("FRONTEND_IMAGE"),
		BuilderImage:  os.Getenv("BUILDER_IMAGE"),
		BuildxBuilder: os.Getenv("BUILDX_BUILDER"),
	}
	var missing []string
	for _, kv := range [][2]string{
		{"BUILDKIT_HOST", e.BuildkitHost}, {"REGISTRY", e.Registry},
		{"FRONTEND_IMAGE", e.FrontendImage}, {"BUILDER_IMAGE", e.BuilderImage},
	} {
		if kv[1] == "" {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("integration environment not set (%s): run hack/integration", strings.Join(missing, ", "))
		testenv.SkipOrFail(t, "%s", msg)
	}
	if e.BuildxBuilder == "" {
		e.BuildxBuilder = "nixos2docker"
	}
	e.Buildctl = "buildctl"
	if bin := os.Getenv("N2D_BIN"); bin != "" {
		e.Buildctl = filepath.Join(bin, "buildctl")
	}
	e.Repo = testenv.RepoRoot(t)
	return e
}

// client connects to the env's buildkitd; closed when the test ends.
func (e *testEnv) client(t *testing.T) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, e.BuildkitHost)
	if err != nil {
		t.Fatalf("connecting to buildkitd at %s: %v", e.BuildkitHost, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cmdResult is a finished command: its output and how long it took.
type cmdResult struct {
	Stdout, Stderr string
	Took           time.Duration
}

// run runs a command with extra environment, returning its output; err wraps the exit status
// and the tail of stderr.
func run(ctx context.Context, env []string, name string, args ...string) (cmdResult, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := cmdResult{Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	if err != nil {
		return res, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(res.Stderr, 40))
	}
	return res, nil
}

// buildctl runs the pinned buildctl against the env's buildkitd.
func (e *testEnv) buildctl(ctx context.Context, args ...string) (cmdResult, error) {
	return run(ctx, nil, e.Buildctl, append([]string{"--addr", e.BuildkitHost}, args...)...)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
