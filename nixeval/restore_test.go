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
// with their references, and verifies their contents. Then what a snapshot
// must not do: change the registration of a path the store has; register a
// path the store holds unregistered (being built), or one the snapshot does
// not hold; name something that is not a store path, or write a line Nix
// would read otherwise than run.sh; lead out of itself through a symbolic
// link (a file it links to never reaches the log); bring a device, fifo or
// set-id file; leave a store path owned by a build user. Each is refused
// with a message and leaves the store as it was, or (owners) is made right.
func TestRestoreStore(t *testing.T) {
	needNix(t, "nix-store", "nix-build", "unshare")
	// run.sh's restore and the test's odd snapshots, on this machine.
	testenv.Need(t, "uniq")
	testenv.Need(t, "mkfifo")
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

# What follows is refused, or kept to what the snapshot may do.
reg=nix/var/nix/nixos2docker-registration
variant() { rm -rf "$ROOT/$1"; cp -a "$ROOT/snap" "$ROOT/$1"; }
untouched() { # the store has no path but those named
	_left=$(ls -A /nix/store | grep -vx '\.links' | xargs)
	[ "$_left" = "$*" ] && echo "store untouched" || echo "store holds: $_left"
}
echo "== the store's own paths keep their registration"
fresh
other=$(drv other)
oh=$(nix-store -q --hash "$other")
cp -a "$other" "$ROOT/other"
variant forged
cp -a "$other" "$ROOT/forged/nix/store/"
printf '%s\n%s\n%s\n\n1\n%s\n' "$other" "sha256:$(printf '%064d' 0)" 7 "$a" >>"$ROOT/forged/$reg"
NIXOS2DOCKER_STORE_FROM=$ROOT/forged restore_store
[ "$(nix-store -q --hash "$other")" = "$oh" ] && [ -z "$(nix-store -q --references "$other")" ] && echo "other as Nix made it"
nix-store --verify-path "$other" && echo "other verified"
echo "== a path in the store that is not valid"
fresh
mkdir -p "$a"
echo partial >"$a/x"
NIXOS2DOCKER_STORE_FROM=$ROOT/snap restore_store
[ "$(cat "$a/x")" = partial ] && echo "a left as it was"
untouched "$(basename "$a")"
echo "== registers a path it does not hold"
fresh
variant holes
rm -rf "$ROOT/holes$a"
NIXOS2DOCKER_STORE_FROM=$ROOT/holes restore_store
untouched
echo "== not a store path"
fresh
variant notstore
printf '/etc/passwd\nsha256:%064d\n7\n\n0\n' 0 >>"$ROOT/notstore/$reg"
NIXOS2DOCKER_STORE_FROM=$ROOT/notstore restore_store
untouched
echo "== a line Nix reads otherwise"
fresh
variant plus
printf '%s\n%s\n7\n\n+1\n%s\n' "$other" "sha256:$(printf '%064d' 0)" "$a" >>"$ROOT/plus/$reg"
cp -a "$ROOT/other" "$ROOT/plus$other"
NIXOS2DOCKER_STORE_FROM=$ROOT/plus restore_store
untouched
echo "== a hash Nix cannot read"
fresh
variant hash
printf '%s\nsha256:%s\n7\n\n0\n' "$other" "$(printf '%052d' 0 | tr 0 e)" >>"$ROOT/hash/$reg"
cp -a "$ROOT/other" "$ROOT/hash$other"
NIXOS2DOCKER_STORE_FROM=$ROOT/hash restore_store
untouched
echo "== links out of the snapshot"
fresh
echo SECRET-VALUE >"$ROOT/secret"
variant link
rm "$ROOT/link/$reg"
ln -s "$ROOT/secret" "$ROOT/link/$reg"
NIXOS2DOCKER_STORE_FROM=$ROOT/link restore_store
mkdir -p "$ROOT/link2"
ln -s "$ROOT/snap/nix" "$ROOT/link2/nix"
NIXOS2DOCKER_STORE_FROM=$ROOT/link2 restore_store
untouched
echo "== files no store holds"
fresh
variant setuid
chmod 4555 "$ROOT/setuid$b"
NIXOS2DOCKER_STORE_FROM=$ROOT/setuid restore_store
variant fifo
mkdir "$ROOT/fifo$other"
mkfifo "$ROOT/fifo$other/pipe"
printf '%s\n%s\n7\n\n0\n' "$other" "sha256:$(printf '%064d' 0)" >>"$ROOT/fifo/$reg"
NIXOS2DOCKER_STORE_FROM=$ROOT/fifo restore_store
untouched
echo "== owners"
fresh
variant owners
chown -h 30001:30000 "$ROOT/owners$a" "$ROOT/owners$b"
NIXOS2DOCKER_STORE_FROM=$ROOT/owners restore_store
echo "owners: $(stat -c %u:%g "$a" "$b" | tr '\n' ' ')"
nix-store --verify --check-contents && echo "verified"
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
	var a, b string
	for _, f := range strings.Fields(sections[""]) {
		if v, ok := strings.CutPrefix(f, "a="); ok {
			a = v
		}
		if v, ok := strings.CutPrefix(f, "b="); ok {
			b = v
		}
	}
	if a == "" || b == "" {
		t.Fatalf("no store paths made:\n%s", log)
	}
	for sec, want := range map[string][]string{
		"":                       {"store saved: 4 store paths", "unregistered left out"},
		"fresh store, snapshot":  {"store snapshot restored: 4 of its 4 store paths copied", "refs: " + a, "b holds: " + a},
		"again: nothing to do":   {"store snapshot: the store already has its 4 paths"},
		"store in use, snapshot": {"store snapshot restored: 4 of its 4 store paths copied", "refs: " + a, "other still valid"},
		"fresh store, image":     {"store snapshot restored: 2 of its 2 store paths copied", "refs: " + a, "b holds: " + a},
		"not a snapshot":         {"no /nix/var/nix/nixos2docker-registration in it"},
		"the store's own paths keep their registration": {"store snapshot restored: 4 of its 5 store paths copied", "other as Nix made it", "other verified"},
		"a path in the store that is not valid":         {"Nix refused its registration", "a left as it was", "store untouched"},
		"registers a path it does not hold":             {"registers " + a + " but does not hold it: not restored", "store untouched"},
		"not a store path":                              {"/etc/passwd", "are not in the form Nix reads there", "store untouched"},
		"a line Nix reads otherwise":                    {`has "+1" references`, "store untouched"},
		"a hash Nix cannot read":                        {"H sha256:eeee", "are not in the form Nix reads there", "store untouched"},
		"links out of the snapshot":                     {"/nix/var/nix/nixos2docker-registration is a symbolic link: not restored", "/nix is a symbolic link: not restored", "store untouched"},
		"files no store holds":                          {"setuid" + b, "/pipe", "cannot be in a Nix store", "store untouched"},
		"owners":                                        {"store snapshot restored: 4 of its 4", "owners: 0:0 0:0", "verified"},
	} {
		for _, w := range want {
			if !strings.Contains(sections[sec], w) {
				t.Errorf("%s: output lacks %q:\n%s", sec, w, sections[sec])
			}
		}
	}
	if strings.Contains(log, "SECRET-VALUE") {
		t.Errorf("a file a snapshot links to reached the log")
	}
	if t.Failed() {
		t.Logf("whole output:\n%s", log)
	}
}
