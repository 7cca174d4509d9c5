// Package harness drives the real Docker engine of hack/docker-engine from Go tests: it brings
// the engine up and down, runs, inspects, stops and removes containers through the docker CLI,
// accounts for leftovers (containers, processes, cgroups, mounts) before and after a test, and
// prints a container's last output lines when a test fails. The systemd e2e (e2e/systemd) and
// the BuildKit integration tests share it, so both talk to the same engine the same way.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Engine is a running hack/docker-engine instance.
type Engine struct {
	// Host is the DOCKER_HOST value that reaches the engine (unix://...).
	Host string
	// Root, RunDir, Cgroup and Cgroup2Root are the engine's paths as hack/docker-engine reports them.
	Root, RunDir, Cgroup, Cgroup2Root string

	repo    string
	started bool // this process brought the engine up, so Stop takes it down
}

// RepoRoot finds the repository root (the directory holding hack/docker-engine) from the
// working directory upwards; tests run in their package directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("repo root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "docker-engine")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repo root: no hack/docker-engine above the working directory")
		}
		dir = parent
	}
}

// script runs hack/docker-engine with args; stderr (its progress) goes to progress if not nil.
func script(ctx context.Context, repo string, progress io.Writer, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "hack", "docker-engine"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("hack/docker-engine %s: %w\n%s", strings.Join(args, " "), err, TailLines(stderr.String(), 50))
	}
	return string(out), nil
}

func parseKV(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}

// StartEngine brings the engine up (idempotent: an engine already running is reused and then
// left running by Stop). Progress of the script goes to progress (may be nil).
func StartEngine(ctx context.Context, progress io.Writer) (*Engine, error) {
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	e := &Engine{repo: repo}
	_, statusErr := script(ctx, repo, nil, "status")
	out, err := script(ctx, repo, progress, "up")
	if err != nil {
		return nil, err
	}
	e.started = statusErr != nil
	e.Host = parseKV(out)["DOCKER_HOST"]
	if !strings.HasPrefix(e.Host, "unix://") {
		return nil, fmt.Errorf("hack/docker-engine up printed no DOCKER_HOST line: %q", out)
	}
	paths, err := script(ctx, repo, nil, "paths")
	if err != nil {
		return nil, err
	}
	kv := parseKV(paths)
	e.Root, e.RunDir, e.Cgroup, e.Cgroup2Root = kv["ENGINE_ROOT"], kv["ENGINE_RUN"], kv["ENGINE_CGROUP"], kv["CGROUP2_ROOT"]
	return e, nil
}

// Started says whether this process brought the engine up (and Stop will take it down).
func (e *Engine) Started() bool { return e.started }

// Stop takes the engine down if this process brought it up; an engine that was already running
// is left to whoever started it.
func (e *Engine) Stop(ctx context.Context, progress io.Writer) error {
	if !e.started {
		return nil
	}
	_, err := script(ctx, e.repo, progress, "down")
	return err
}

// Down takes the engine down whoever started it.
func (e *Engine) Down(ctx context.Context, progress io.Writer) error {
	_, err := script(ctx, e.repo, progress, "down")
	return err
}

// Env is os.Environ() with DOCKER_HOST pointing at the engine, for commands (docker, buildx)
// that should talk to it.
func (e *Engine) Env() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") && !strings.HasPrefix(kv, "DOCKER_CONTEXT=") {
			env = append(env, kv)
		}
	}
	return append(env, "DOCKER_HOST="+e.Host)
}

// dockerCommand is the docker CLI against the engine: the host's CLI when there is one,
// otherwise the engine's own through hack/docker-engine docker.
func (e *Engine) dockerCommand(ctx context.Context, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if _, err := exec.LookPath("docker"); err == nil {
		cmd = exec.CommandContext(ctx, "docker", args...)
	} else {
		cmd = exec.CommandContext(ctx, filepath.Join(e.repo, "hack", "docker-engine"), append([]string{"docker"}, args...)...)
	}
	cmd.Env = e.Env()
	return cmd
}

// Docker runs the docker CLI with args and returns its stdout; the error carries stderr.
func (e *Engine) Docker(ctx context.Context, args ...string) (string, error) {
	return e.DockerStdin(ctx, nil, args...)
}

// DockerStdin is Docker with stdin (e.g. for `docker import -` or `docker load`).
func (e *Engine) DockerStdin(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := e.dockerCommand(ctx, args...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", shortArgs(args), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// DockerCombined runs the docker CLI and returns stdout and stderr interleaved (docker logs
// writes the container's stderr to its own stderr).
func (e *Engine) DockerCombined(ctx context.Context, args ...string) (string, error) {
	cmd := e.dockerCommand(ctx, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", shortArgs(args), err, TailLines(string(out), 5))
	}
	return string(out), nil
}

// ExecNet runs a command in the daemon's network namespace, where published ports are.
func (e *Engine) ExecNet(ctx context.Context, args ...string) (string, error) {
	return script(ctx, e.repo, nil, append([]string{"exec-net"}, args...)...)
}

func shortArgs(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// TailLines returns the last n lines of s.
func TailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
