// Package harness drives the real container engines of hack/docker-engine and hack/podman-engine
// from Go tests: it brings an engine up and down, runs, inspects, stops and removes containers
// through its CLI (docker, or podman as root or as a plain user: the subcommands the tests use
// take the same flags and print the same fields),
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

// Image stores a Docker engine runs with (hack/docker-engine up --store).
const (
	// StoreClassic is the overlay2 graph driver: Docker's default before the containerd image
	// store, and what every upgraded install keeps. Its built-in BuildKit has no MergeOp.
	StoreClassic = "classic"
	// StoreContainerd is the containerd image store ("containerd-snapshotter").
	StoreContainerd = "containerd"
)

// Engine is a running hack/docker-engine or hack/podman-engine instance.
type Engine struct {
	// Name says which engine and mode: "docker", "podman", "podman-rootless".
	Name string
	// Host is the DOCKER_HOST value that reaches a Docker engine (unix://...); empty for podman.
	Host string
	// Root, RunDir, Cgroup and Cgroup2Root are the engine's paths as its script reports them.
	Root, RunDir, Cgroup, Cgroup2Root string
	// Store is the image store of a Docker engine (StoreClassic, StoreContainerd).
	Store string

	repo    string
	script  string   // hack/<script>: docker-engine or podman-engine
	env     []string // extra environment of the script (NIXOS2DOCKER_ENGINE_VARIANT=…)
	cli     []string // the CLI's command line before its arguments; nil: docker with Env()
	started bool     // this process brought the engine up, so Stop takes it down
	found   string   // the store of a Docker engine found running, which Stop restores
	// keepCgroups are cgroups (relative to Cgroup2Root) the engine makes once and keeps, so
	// Snapshot does not count them.
	keepCgroups []string
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
	return runScript(ctx, repo, "docker-engine", nil, progress, args...)
}

// runScript runs hack/NAME with args and env added to the environment; stderr (its progress)
// goes to progress if not nil.
func runScript(ctx context.Context, repo, name string, env []string, progress io.Writer, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "hack", name), args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if progress != nil {
		cmd.Stderr = io.MultiWriter(&stderr, progress)
	}
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("hack/%s %s: %w\n%s", name, strings.Join(args, " "), err, TailLines(stderr.String(), 50))
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

// StartEngine brings the engine up with the classic image store (idempotent: an engine already
// running is reused and then left running by Stop). Progress of the script goes to progress (may
// be nil).
func StartEngine(ctx context.Context, progress io.Writer) (*Engine, error) {
	return startDocker(ctx, progress, "", StoreClassic)
}

// StartEngineVariant is StartEngine for a variant of hack/docker-engine ("userns": a second
// engine with dockerd --userns-remap=default); "" is the default engine.
func StartEngineVariant(ctx context.Context, progress io.Writer, variant string) (*Engine, error) {
	return startDocker(ctx, progress, variant, StoreClassic)
}

// StartEngineStore is StartEngine with the given image store: an engine running with the other
// store is restarted, and Stop restarts it with the store it had.
func StartEngineStore(ctx context.Context, progress io.Writer, store string) (*Engine, error) {
	return startDocker(ctx, progress, "", store)
}

func startDocker(ctx context.Context, progress io.Writer, variant, store string) (*Engine, error) {
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	e := &Engine{Name: "docker", repo: repo, script: "docker-engine", Store: store}
	if variant != "" {
		e.Name, e.env = "docker "+variant, []string{"NIXOS2DOCKER_ENGINE_VARIANT=" + variant}
	}
	if _, err := runScript(ctx, repo, e.script, e.env, nil, "status"); err == nil {
		paths, err := runScript(ctx, repo, e.script, e.env, nil, "paths")
		if err != nil {
			return nil, err
		}
		e.found = parseKV(paths)["ENGINE_STORE"]
	}
	out, err := runScript(ctx, repo, e.script, e.env, progress, "up", "--store", store)
	if err != nil {
		return nil, err
	}
	e.started = e.found == ""
	e.Host = parseKV(out)["DOCKER_HOST"]
	if !strings.HasPrefix(e.Host, "unix://") {
		return nil, fmt.Errorf("hack/docker-engine up printed no DOCKER_HOST line: %q", out)
	}
	paths, err := runScript(ctx, repo, e.script, e.env, nil, "paths")
	if err != nil {
		return nil, err
	}
	kv := parseKV(paths)
	e.Root, e.RunDir, e.Cgroup, e.Cgroup2Root = kv["ENGINE_ROOT"], kv["ENGINE_RUN"], kv["ENGINE_CGROUP"], kv["CGROUP2_ROOT"]
	if kv["ENGINE_STORE"] != store {
		return nil, fmt.Errorf("hack/docker-engine up --store %s: the engine runs with the %q image store", store, kv["ENGINE_STORE"])
	}
	return e, nil
}

// StartPodman sets hack/podman-engine up (idempotent, like StartEngine) and returns the engine
// driven as root, or as its plain user n2d (rootless podman) if rootless.
func StartPodman(ctx context.Context, progress io.Writer, rootless bool) (*Engine, error) {
	repo, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	e := &Engine{Name: "podman", repo: repo, script: "podman-engine", keepCgroups: []string{"/libpod_parent", "/libpod_parent/conmon"}}
	sub := "podman"
	if rootless {
		e.Name, sub = "podman-rootless", "podman-rootless"
	}
	e.cli = []string{filepath.Join(repo, "hack", "podman-engine"), sub}
	_, statusErr := runScript(ctx, repo, e.script, nil, nil, "status")
	if _, err := runScript(ctx, repo, e.script, nil, progress, "up"); err != nil {
		return nil, err
	}
	e.started = statusErr != nil
	paths, err := runScript(ctx, repo, e.script, nil, nil, "paths")
	if err != nil {
		return nil, err
	}
	kv := parseKV(paths)
	e.Root, e.RunDir, e.Cgroup, e.Cgroup2Root = kv["ENGINE_ROOT"], kv["ENGINE_RUN"], kv["ENGINE_CGROUP"], kv["CGROUP2_ROOT"]
	for i, c := range e.keepCgroups {
		e.keepCgroups[i] = e.Cgroup + c
	}
	return e, nil
}

// Rootless is the podman engine e driven as its plain user n2d (rootless podman): same
// namespaces and cgroup, the user's own storage and containers. Stop and Down of either take
// the whole engine down.
func (e *Engine) Rootless() *Engine {
	r := *e
	r.Name = "podman-rootless"
	r.cli = []string{e.cli[0], "podman-rootless"}
	r.started = false
	return &r
}

// Started says whether this process brought the engine up (and Stop will take it down).
func (e *Engine) Started() bool { return e.started }

// Stop takes the engine down if this process brought it up; an engine that was already running
// is left to whoever started it, with the image store it had.
func (e *Engine) Stop(ctx context.Context, progress io.Writer) error {
	if !e.started {
		if e.found != "" && e.found != e.Store {
			_, err := runScript(ctx, e.repo, e.script, e.env, progress, "up", "--store", e.found)
			return err
		}
		return nil
	}
	_, err := runScript(ctx, e.repo, e.script, e.env, progress, "down")
	return err
}

// Down takes the engine down whoever started it.
func (e *Engine) Down(ctx context.Context, progress io.Writer) error {
	_, err := runScript(ctx, e.repo, e.script, e.env, progress, "down")
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

// dockerCommand is the engine's CLI: podman through hack/podman-engine; for Docker, the host's
// CLI when there is one, otherwise the engine's own through hack/docker-engine docker.
func (e *Engine) dockerCommand(ctx context.Context, args ...string) *exec.Cmd {
	if e.cli != nil {
		return exec.CommandContext(ctx, e.cli[0], append(append([]string{}, e.cli[1:]...), args...)...)
	}
	var cmd *exec.Cmd
	if _, err := exec.LookPath("docker"); err == nil {
		cmd = exec.CommandContext(ctx, "docker", args...)
	} else {
		cmd = exec.CommandContext(ctx, filepath.Join(e.repo, "hack", "docker-engine"), append([]string{"docker"}, args...)...)
	}
	cmd.Env = e.Env()
	return cmd
}

// Command is the engine's CLI with args, not started (for streaming its output).
func (e *Engine) Command(ctx context.Context, args ...string) *exec.Cmd {
	return e.dockerCommand(ctx, args...)
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
		return string(out), fmt.Errorf("%s %s: %w: %s", e.cliName(), shortArgs(args), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// DockerCombined runs the docker CLI and returns stdout and stderr interleaved (docker logs
// writes the container's stderr to its own stderr).
func (e *Engine) DockerCombined(ctx context.Context, args ...string) (string, error) {
	cmd := e.dockerCommand(ctx, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", e.cliName(), shortArgs(args), err, TailLines(string(out), 5))
	}
	return string(out), nil
}

// Ctr runs containerd's own client (ctr) against the Docker engine's containerd, with stdin if
// not nil, and returns its stdout and stderr interleaved; a non-zero exit is an error (carrying
// the exit code as an *exec.ExitError).
func (e *Engine) Ctr(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.repo, "hack", "docker-engine"), append([]string{"ctr"}, args...)...)
	cmd.Env = append(os.Environ(), e.env...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", shortArgs(args), err, TailLines(string(out), 5))
	}
	return string(out), nil
}

// CLIName names the engine's CLI in messages: "docker", "podman", "podman-rootless".
func (e *Engine) CLIName() string { return e.cliName() }

// cliName names the CLI in errors.
func (e *Engine) cliName() string {
	if e.cli != nil {
		return e.Name
	}
	return "docker"
}

// ExecNet runs a command in the daemon's network namespace, where published ports are.
func (e *Engine) ExecNet(ctx context.Context, args ...string) (string, error) {
	return runScript(ctx, e.repo, e.script, e.env, nil, append([]string{"exec-net"}, args...)...)
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
