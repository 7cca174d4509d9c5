package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// repo makes a git work tree with the files (path: content); files are
// untracked, which trackedFiles lists too.
func repo(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if out, err := exec.Command("git", "init", "-q", root).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestScanScripts(t *testing.T) {
	root := repo(t, map[string]string{
		"hack/main": `#!/usr/bin/env bash
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/l.sh"
helper() { echo hi; }
helper
cat <<END
notacommand arg
END
exec plain1
exec 9>/tmp/lock
setsid unshare -m -- wrapped1
timeout "$t" wrapped2 x
flock -w 5 9
flock /tmp/lock wrapped3
find . -exec found1 {} +
sh -c 'inner1 && inner2'
env -i A=b wrapped4
command -v probed >/dev/null
x=$(subst1 | piped1)
"$N2D_BIN/builtbinary"
"$root/hack/other" arg
/usr/bin/abs1
chroot "$d" inside1
xargs -n 1 wrapped5
"$@"
`,
		"hack/lib/l.sh": "# shellcheck shell=bash\nlibcmd\n",
		"hack/other":    "#!/bin/sh\nothercmd\n",
		"hack/data.txt": "not a script\nnotascript\n",
	})
	s, err := scanScripts(root, "hack")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, u := range s.uses {
		got[u.cmd] = true
	}
	for _, want := range strings.Fields(`cat dirname plain1 setsid unshare wrapped1 timeout wrapped2 flock
		wrapped3 find found1 sh inner1 inner2 env wrapped4 subst1 piped1 abs1 chroot xargs wrapped5
		libcmd othercmd`) {
		if !got[want] {
			t.Errorf("did not find %s", want)
		}
		delete(got, want)
	}
	for extra := range got {
		t.Errorf("took %s for a command", extra)
	}
	reach := s.reachable("hack/main")
	for _, want := range []string{"hack/main", "hack/lib/l.sh", "hack/other"} {
		if !reach[want] {
			t.Errorf("hack/main does not reach %s (edges %v)", want, s.edges)
		}
	}
	if len(reach) != 3 {
		t.Errorf("reachable from hack/main: %v", reach)
	}
	for _, u := range s.uses {
		if u.cmd == "inner2" && (u.file != "hack/main" || u.line != 16) {
			t.Errorf("inner2 located at %s:%d, want hack/main:16", u.file, u.line)
		}
	}
}

const readme = "# p\n\n```sh\n# the demo\nhack/demo\n# the tests\nhack/test\n```\n"

// depsRepo is a repository shaped like ours: README's two commands, the
// installer, a script both run, Go code running a tool.
func depsRepo(t *testing.T, list string) string {
	return repo(t, map[string]string{
		"README.md":          readme,
		"hack/lib/deps.sh":   "# shellcheck shell=bash\nn2d_deps() { :; }\n",
		"hack/lib/deps.list": list,
		"hack/demo":          "#!/usr/bin/env bash\nsource hack/lib/deps.sh\nn2d_deps demo\nhack/env up\n",
		"hack/env":           "#!/usr/bin/env bash\ncurl -fsS http://127.0.0.1:5000/v2/\n",
		"hack/test":          "#!/usr/bin/env bash\nsource hack/lib/deps.sh\nn2d_deps test\nhack/env up\n",
		"x/x_test.go":        "package x\n\nimport \"os/exec\"\n\nvar _ = exec.Command(\"git\", \"status\")\n",
	})
}

func msgs(ps []problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	sort.Strings(out)
	return out
}

func TestCheckDeps(t *testing.T) {
	good := "curl curl demo test\ngit git test\n"
	ps, err := checkDeps(depsRepo(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 0 {
		t.Errorf("a complete table: %q", msgs(ps))
	}

	for _, c := range []struct{ name, list, want string }{
		{"a command nobody installs", "curl curl demo test\n", "x/x_test.go:5: runs git, which hack/lib/deps.list does not list"},
		{"installed for the tests only", "curl curl test\ngit git test\n", "hack/env:2: runs curl on the way of demo, but hack/lib/deps.list:1 does not list it for demo"},
		{"a stale line", good + "nix nix-bin test\n", "hack/lib/deps.list:3: nothing runs nix"},
		{"the wrong package", "curl coreutils demo test\ngit git test\n", "hack/lib/deps.list:1: curl comes from package curl on this machine, not coreutils"},
		{"an unknown scope", good + "tar tar demo ci\n", `unknown scope "ci"`},
		{"an unpinned Go tool", good + "actionlint go:github.com/rhysd/actionlint/cmd/actionlint@latest test\n", "a pinned version"},
	} {
		ps, err := checkDeps(depsRepo(t, c.list))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(msgs(ps), "\n"); !strings.Contains(got, c.want) {
			t.Errorf("%s: problems\n%s\ndo not say %q", c.name, got, c.want)
		}
	}

	// An entry script that does not call the installer.
	root := depsRepo(t, good)
	if err := os.WriteFile(filepath.Join(root, "hack/demo"), []byte("#!/usr/bin/env bash\nhack/env up\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ps, err = checkDeps(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(msgs(ps), "\n"); !strings.Contains(got, "hack/demo: never calls `n2d_deps demo`") {
		t.Errorf("hack/demo without the installer: %q", got)
	}
}

func TestCheckCI(t *testing.T) {
	for _, c := range []struct{ name, run, want string }{
		{"README's command only", "#!/usr/bin/env bash\nset -euo pipefail\ncd \"$(dirname \"$0\")/..\"\nexec hack/test\n", ""},
		{"an install first", "#!/usr/bin/env bash\napt-get install -y runc\nexec hack/test\n", ".ci/run:2: runs apt-get"},
		{"an environment of its own", "#!/usr/bin/env bash\nexport NIXPKGS_LIB=/x\nexec hack/test\n", ".ci/run:2: export"},
		{"another test command", "#!/usr/bin/env bash\nhack/integration\n", "runs README's test command hack/test 0 times"},
	} {
		root := repo(t, map[string]string{"README.md": readme, ".ci/run": c.run})
		ps, err := checkCI(root)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(msgs(ps), "\n")
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: problems %q, want %q", c.name, got, c.want)
		}
	}
}

func TestRegistryHosts(t *testing.T) {
	uris := aptURIs(`# deb http://commented.example/debian bookworm main
deb [signed-by=/k.gpg arch=amd64] http://one.example/debian bookworm main
deb-src https://two.example/debian bookworm main
Types: deb
# URIs: http://commented2.example/debian
URIs: http://three.example/debian http://127.0.0.1:3142/debian
Suites: bookworm
`)
	want := []string{"http://one.example/debian", "https://two.example/debian", "http://three.example/debian", "http://127.0.0.1:3142/debian"}
	if strings.Join(uris, " ") != strings.Join(want, " ") {
		t.Errorf("aptURIs = %q, want %q", uris, want)
	}
	hosts := map[string]string{}
	for _, u := range uris {
		addHost(hosts, u, "apt")
	}
	addGoHosts(hosts, "https://proxy.example/go,https://corp.example|direct", "sumdb.example+abc https://sum.mirror.example", "go")
	addGoHosts(hosts, "off", "plain-sum.example", "go default")
	var got []string
	for h := range hosts {
		got = append(got, h)
	}
	sort.Strings(got)
	if want := "corp.example one.example plain-sum.example proxy.example sum.mirror.example three.example two.example"; strings.Join(got, " ") != want {
		t.Errorf("hosts %q, want %s (no loopback, no direct/off)", got, want)
	}

	root := repo(t, map[string]string{
		"Dockerfile":   "FROM x\nARG GOPROXY=https://Proxy.Example/go\n",
		"hack/clean":   "#!/bin/sh\necho http://127.0.0.1:5000\n",
		"bin/blob.bin": "proxy.example\x00binary",
	})
	ps, err := checkHosts(root, hosts)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].file != "Dockerfile" || ps[0].line != 2 || !strings.Contains(ps[0].msg, "proxy.example") {
		t.Errorf("checkHosts: %q, want one problem at Dockerfile:2", msgs(ps))
	}
}
