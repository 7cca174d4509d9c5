package systemd

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
)

// envToyArm64 names the toy example's linux/arm64 image (a `docker load` archive) that
// hack/arm64-e2e builds through the frontend, as one platform of a linux/amd64,linux/arm64 build.
const envToyArm64 = "NIXOS2DOCKER_TOY_ARM64_TAR"

// The toy's init (examples/toy/toy.nix) prints these, and toy-hello prints message.txt.
var (
	toyStartedRe  = regexp.MustCompile(`(?m)^toy init: started$`)
	toyStoppingRe = regexp.MustCompile(`(?m)^toy init: stopping$`)
	toyMessageRe  = regexp.MustCompile(`(?m)^hello from the toy message`)
)

// TestToyArm64Emulated boots the toy's arm64 image in the Docker engine under qemu-user
// emulation (binfmt_misc's qemu-aarch64, fix-binary flag, so the interpreter works inside the
// container): its init runs as PID 1 and prints, the closure's busybox is an aarch64 binary, and
// `docker stop` (the image's stop signal) exits 0.
func TestToyArm64Emulated(t *testing.T) {
	tarPath := needEnv(t, envToyArm64, "hack/arm64-e2e, which builds the toy for linux/amd64,linux/arm64 through the frontend")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := dockerEngine(ctx, t, "")
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := e.DockerStdin(ctx, f, "load")
	if err != nil {
		t.Fatalf("docker load: %v", err)
	}
	m := regexp.MustCompile(`Loaded image(?: ID)?: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("docker load printed no image: %s", out)
	}
	img := m[1]
	arch, err := e.Docker(ctx, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", img)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(arch) != "linux/arm64" {
		t.Fatalf("the loaded toy image is %s, want linux/arm64", strings.TrimSpace(arch))
	}
	before, err := e.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("boots-and-stops", func(t *testing.T) {
		r := &result{Engine: "docker", Mode: "--tmpfs ×3 (the toy: a shell init, not systemd)", Platform: "linux/arm64 (qemu-user)", Boot: "never", Logs: "-"}
		record(t, r)
		c := run(ctx, t, e, append([]string{"--platform", "linux/arm64"}, defaultFlags...), img)
		logs := waitLog(ctx, c, toyMessageRe, 60*time.Second)
		l, ok := c.FirstLine(toyStartedRe)
		if !ok || !toyMessageRe.MatchString(logs) {
			st, _ := c.State(ctx)
			t.Fatalf("the toy's init did not print %s and the message within 60 s (state %+v):\n%s", toyStartedRe, st, logs)
		}
		r.Boot, r.Logs = secs(l.At.Sub(c.Started))+" (init's first line)", "init + toy-hello"
		// Really arm64 code: /bin/sh (the closure's busybox) is an aarch64 ELF (e_machine 0xb7).
		if elf, err := c.Exec(ctx, "cat", "/bin/sh"); err != nil || len(elf) < 20 || elf[18] != 0xb7 || elf[19] != 0 {
			t.Errorf("/bin/sh in the container is not an aarch64 ELF (%v)", err)
		}
		// SIGTERM, not the image's SIGRTMIN+3: qemu-user keeps some host real-time signals for
		// itself and renumbers the guest's, so a host SIGRTMIN+3 does not reach the emulated init
		// as SIGRTMIN+3 (measured: docker stop waited 10 s and killed it, 137).
		stop, exit := stopAndWait(ctx, t, c, "SIGTERM", true)
		if f := strings.Fields(stop); len(f) == 3 {
			stop = "stop SIGTERM, " + f[0] + " " + f[1]
		}
		r.Stop, r.Exit = stop, exit
		if logs, _ := c.Logs(ctx); !toyStoppingRe.MatchString(logs) {
			t.Errorf("the toy's init did not print %s on docker stop:\n%s", toyStoppingRe, harness.TailLines(logs, 10))
		}
	})

	noLeftovers(ctx, t, e, before)
}
