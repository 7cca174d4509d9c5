package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Container is a container started by Run.
type Container struct {
	E  *Engine
	ID string
	// Started is when `docker run` was invoked.
	Started time.Time

	mu    sync.Mutex
	lines []LogLine // from Follow
}

// LogLine is one line of the container's output and when the daemon received it (docker logs
// -t), or when the harness read it if the line carried no timestamp.
type LogLine struct {
	At   time.Time
	Text string
}

// Run starts `docker run -d FLAGS... IMAGE ARGS...` and returns the container. flags go before
// the image, args after it.
func (e *Engine) Run(ctx context.Context, flags []string, image string, args ...string) (*Container, error) {
	c := &Container{E: e, Started: time.Now()}
	all := append(append(append([]string{"run", "-d"}, flags...), image), args...)
	out, err := e.Docker(ctx, all...)
	if err != nil {
		return nil, err
	}
	c.ID = strings.TrimSpace(out)
	if c.ID == "" {
		return nil, fmt.Errorf("docker run %s printed no container id", image)
	}
	return c, nil
}

// Short is the container's short id.
func (c *Container) Short() string {
	if len(c.ID) > 12 {
		return c.ID[:12]
	}
	return c.ID
}

// Logs returns the container's whole output (stdout and stderr interleaved).
func (c *Container) Logs(ctx context.Context) (string, error) {
	return c.E.DockerCombined(ctx, "logs", c.ID)
}

// Follow streams the container's output (`docker logs -f -t`) into memory in the background,
// each line stamped with the daemon's time of receipt; Lines and FirstLine read it. It stops
// when the container exits or ctx ends.
func (c *Container) Follow(ctx context.Context) {
	cmd := c.E.dockerCommand(ctx, "logs", "-f", "-t", c.ID)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		c.appendLine("harness: docker logs -f: " + err.Error())
		return
	}
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			c.appendLine(sc.Text())
		}
	}()
}

func (c *Container) appendLine(s string) {
	l := LogLine{At: time.Now(), Text: s}
	if ts, rest, ok := strings.Cut(s, " "); ok {
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			l = LogLine{At: at, Text: rest}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, l)
}

// Lines returns the lines Follow has seen so far.
func (c *Container) Lines() []LogLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]LogLine(nil), c.lines...)
}

// FirstLine returns the first followed line matching re.
func (c *Container) FirstLine(re *regexp.Regexp) (LogLine, bool) {
	for _, l := range c.Lines() {
		if re.MatchString(l.Text) {
			return l, true
		}
	}
	return LogLine{}, false
}

// State is the part of `docker inspect .State` the tests use.
type State struct {
	Status     string
	Running    bool
	ExitCode   int
	OOMKilled  bool
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
}

// State inspects the container.
func (c *Container) State(ctx context.Context) (State, error) {
	out, err := c.E.Docker(ctx, "inspect", "--format", "{{json .State}}", c.ID)
	if err != nil {
		return State{}, err
	}
	var s State
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return State{}, fmt.Errorf("inspect %s: %w", c.Short(), err)
	}
	return s, nil
}

// Exec runs `docker exec C CMD...` and returns stdout+stderr; a non-zero exit is an error.
func (c *Container) Exec(ctx context.Context, cmd ...string) (string, error) {
	return c.E.DockerCombined(ctx, append([]string{"exec", c.ID}, cmd...)...)
}

// Stop runs `docker stop` (with --signal if signal is not empty, -t if timeout is not 0) and
// returns how long it took.
func (c *Container) Stop(ctx context.Context, signal string, timeout time.Duration) (time.Duration, error) {
	args := []string{"stop"}
	if timeout > 0 {
		args = append(args, "-t", fmt.Sprint(int(timeout.Seconds())))
	}
	if signal != "" {
		args = append(args, "--signal", signal)
	}
	t0 := time.Now()
	_, err := c.E.Docker(ctx, append(args, c.ID)...)
	return time.Since(t0), err
}

// Kill sends a signal with `docker kill -s`.
func (c *Container) Kill(ctx context.Context, signal string) error {
	_, err := c.E.Docker(ctx, "kill", "-s", signal, c.ID)
	return err
}

// Wait blocks until the container exits (`docker wait`) and returns its exit code.
func (c *Container) Wait(ctx context.Context) (int, error) {
	out, err := c.E.Docker(ctx, "wait", c.ID)
	if err != nil {
		return -1, err
	}
	var code int
	if _, err := fmt.Sscan(strings.TrimSpace(out), &code); err != nil {
		return -1, fmt.Errorf("docker wait %s: %q: %w", c.Short(), out, err)
	}
	return code, nil
}

// Remove force-removes the container.
func (c *Container) Remove(ctx context.Context) error {
	_, err := c.E.Docker(ctx, "rm", "-f", c.ID)
	return err
}

// LogTail returns the container's last n output lines, or an explanation if they cannot be read.
func (c *Container) LogTail(ctx context.Context, n int) string {
	out, err := c.Logs(ctx)
	if err != nil && out == "" {
		return "(docker logs failed: " + err.Error() + ")"
	}
	if strings.TrimSpace(out) == "" {
		return "(no output)"
	}
	return TailLines(out, n)
}

// Cleanup registers, on t, removal of the container and, if t has failed by then, printing its
// last 50 output lines first.
func (c *Container) Cleanup(t testing.TB) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if t.Failed() {
			t.Logf("container %s: last 50 lines of output:\n%s", c.Short(), c.LogTail(ctx, 50))
		}
		if err := c.Remove(ctx); err != nil {
			t.Errorf("removing container %s: %v", c.Short(), err)
		}
	})
}
