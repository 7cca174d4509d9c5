package nixeval

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

// runShFunctions returns run.sh's functions (everything between the first
// helper and the mode dispatch), to run one of them on its own.
func runShFunctions(t *testing.T) string {
	t.Helper()
	src := string(runSh)
	start := strings.Index(src, "say() {")
	end := strings.Index(src, "\nsay \"$(nix --version)\"")
	if start < 0 || end < 0 {
		t.Fatal("run.sh's functions not found")
	}
	return src[start:end]
}

// TestRestoreStore runs run.sh's save_store and restore_store with real Nix
// in a mount namespace whose /nix starts empty, as a fresh builder's store
// cache mount does: a store is made (a derivation and one it references) and
// saved (a path not registered yet is left out), and the snapshot restored
// into a fresh /nix and into a /nix that already holds other paths (the
// snapshot's are added, the others stay); an image's closure with its Nix
// registration restores the same way. Every time Nix then knows the paths,
// with their references, and verifies their contents.
func TestRestoreStore(t *testing.T) {
	needNix(t, "nix-store", "nix-build", "unshare")
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "restoring a store needs root (a mount namespace with its own /nix)")
	}
	root := t.TempDir()
	script := runShFunctions(t) + `
set -eu
export NIX_CONFIG='build-users-group =
substituters =
sandbox = false
experimental-features = nix-command'
export HOME=$ROOT/home XDG_CACHE_HOME=$ROOT/cache
tmp=$ROOT/tmp
fresh() { umount /nix 2>/dev/null || true; mount -t tmpfs tmpfs /nix; mkdir -p /nix/store; rm -rf "$tmp"; mkdir -p "$tmp"; }
check() { # the paths are valid, a references b's content is right
	nix-store --verify --check-contents
	echo "refs: $(nix-store -q --references "$b" | tr '\n' ' ')"
	echo "b holds: $(cat "$b")"
}
# a, and b whose content names a (so b references a); other, on its own.
expr='let d = name: text: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${text} > $out" ]; }; a = d "a" "hello"; in { inherit a; b = d "b" "${a}"; other = d "other" "x"; }'
drv() { nix-build --no-out-link -E "$expr" -A "$1"; }
mkdir -p /nix
mount --make-rprivate /
fresh
a=$(drv a)
b=$(drv b)
echo "a=$a b=$b"
# run.sh save, while another path is being built (a store in use: what is
# not registered yet stays out)
mkdir -p "$ROOT/snap"
mkdir /nix/store/00000000000000000000000000000000-unregistered
out=$ROOT/snap save_store
rm -r /nix/store/00000000000000000000000000000000-unregistered
[ ! -e "$ROOT/snap/nix/store/00000000000000000000000000000000-unregistered" ] && echo "unregistered left out"
# an image: its closure and its registration
mkdir -p "$ROOT/image/nix/store" "$ROOT/image/nix/var/nix"
cp -a "$a" "$b" "$ROOT/image/nix/store/"
nix-store --dump-db "$a" "$b" >"$ROOT/image/nix/var/nix/nixos2docker-registration"

echo "== fresh store, snapshot"
fresh
NIXOS2DOCKER_STORE_FROM=$ROOT/snap restore_store
check
echo "== again: nothing to do"
mkdir -p "$tmp"
NIXOS2DOCKER_STORE_FROM=$ROOT/snap restore_store
echo "== store in use, snapshot"
fresh
other=$(drv other)
NIXOS2DOCKER_STORE_FROM=$ROOT/snap restore_store
check
nix-store --check-validity "$other" && echo "other still valid"
echo "== fresh store, image"
fresh
NIXOS2DOCKER_STORE_FROM=$ROOT/image restore_store
check
echo "== not a snapshot"
mkdir -p "$ROOT/empty"
NIXOS2DOCKER_STORE_FROM=$ROOT/empty restore_store
`
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "--", "/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), "ROOT="+root, "PATH=/usr/bin:/bin:"+os.Getenv("PATH"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	log := out.String()
	sections := map[string]string{}
	name := ""
	for _, line := range strings.Split(log, "\n") {
		if n, ok := strings.CutPrefix(line, "== "); ok {
			name = n
			continue
		}
		sections[name] += line + "\n"
	}
	var a string
	for _, f := range strings.Fields(sections[""]) {
		if v, ok := strings.CutPrefix(f, "a="); ok {
			a = v
		}
	}
	if a == "" {
		t.Fatalf("no store paths made:\n%s", log)
	}
	for sec, want := range map[string][]string{
		"":                       {"store saved: 4 store paths", "unregistered left out"},
		"fresh store, snapshot":  {"store snapshot restored: 4 of its 4 store paths copied", "refs: " + a, "b holds: " + a},
		"again: nothing to do":   {"store snapshot: the store already has its 4 paths"},
		"store in use, snapshot": {"store snapshot restored: 4 of its 4 store paths copied", "refs: " + a, "other still valid"},
		"fresh store, image":     {"store snapshot restored: 2 of its 2 store paths copied", "refs: " + a, "b holds: " + a},
		"not a snapshot":         {"no /nix/var/nix/nixos2docker-registration in it"},
	} {
		for _, w := range want {
			if !strings.Contains(sections[sec], w) {
				t.Errorf("%s: output lacks %q:\n%s", sec, w, sections[sec])
			}
		}
	}
	if t.Failed() {
		t.Logf("whole output:\n%s", log)
	}
}
