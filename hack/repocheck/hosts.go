package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// machineRegistryHosts are the package registry hosts this machine is
// configured with, each with where it was found: Go's module proxy and
// checksum database (this machine's and Go's own defaults), the apt sources'
// mirrors and debootstrap's default mirror. Read from the machine, so that
// this check names none of them itself.
func machineRegistryHosts() (map[string]string, error) {
	hosts := map[string]string{}
	out, err := exec.Command("go", "env", "-json", "GOPROXY", "GOSUMDB", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	var env map[string]string
	if err := json.Unmarshal(out, &env); err != nil {
		return nil, fmt.Errorf("go env -json: %w", err)
	}
	addGoHosts(hosts, env["GOPROXY"], env["GOSUMDB"], "go env")
	if data, err := os.ReadFile(filepath.Join(env["GOROOT"], "go.env")); err == nil {
		defaults := map[string]string{}
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(k, "#") {
				defaults[k] = v
			}
		}
		addGoHosts(hosts, defaults["GOPROXY"], defaults["GOSUMDB"], "Go's default")
	}
	var sources []string
	for _, pat := range []string{"/etc/apt/sources.list", "/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		sources = append(sources, m...)
	}
	for _, f := range sources {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, u := range aptURIs(string(data)) {
			addHost(hosts, u, "apt sources "+f)
		}
	}
	if data, err := os.ReadFile("/usr/sbin/debootstrap"); err == nil {
		if m := regexp.MustCompile(`(?m)^DEF_MIRROR="([^"]+)"`).FindSubmatch(data); m != nil {
			addHost(hosts, string(m[1]), "debootstrap's default mirror")
		}
	}
	return hosts, nil
}

// addGoHosts adds the hosts of a GOPROXY list and a GOSUMDB setting.
func addGoHosts(hosts map[string]string, proxy, sumdb, origin string) {
	for _, p := range strings.FieldsFunc(proxy, func(r rune) bool { return r == ',' || r == '|' }) {
		addHost(hosts, p, origin+" GOPROXY")
	}
	// GOSUMDB: off | name | name+key | name+key url
	f := strings.Fields(sumdb)
	switch {
	case len(f) >= 2:
		addHost(hosts, f[1], origin+" GOSUMDB")
	case len(f) == 1 && f[0] != "off":
		name, _, _ := strings.Cut(f[0], "+")
		addHost(hosts, "https://"+name, origin+" GOSUMDB")
	}
}

// aptURIs are the archive URIs of an apt sources file, one-line (.list) or
// deb822 (.sources) format; comments are skipped.
func aptURIs(text string) []string {
	var uris []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if v, ok := strings.CutPrefix(l, "URIs:"); ok {
			uris = append(uris, strings.Fields(v)...)
			continue
		}
		if strings.HasPrefix(l, "deb ") || strings.HasPrefix(l, "deb-src ") {
			rest := strings.TrimSpace(l[strings.Index(l, " "):])
			if strings.HasPrefix(rest, "[") {
				if i := strings.Index(rest, "]"); i >= 0 {
					rest = rest[i+1:]
				}
			}
			if f := strings.Fields(rest); len(f) > 0 {
				uris = append(uris, f[0])
			}
		}
	}
	return uris
}

// addHost adds the host of a URL, unless it is a loopback name or an address
// (a local mirror is no public name to leak).
func addHost(hosts map[string]string, raw, origin string) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return
	}
	h := strings.ToLower(u.Hostname())
	if h == "" || h == "localhost" || net.ParseIP(h) != nil {
		return
	}
	if _, ok := hosts[h]; !ok {
		hosts[h] = origin
	}
}

// checkHosts: no tracked text file names one of the hosts.
func checkHosts(root string, hosts map[string]string) ([]problem, error) {
	files, err := trackedFiles(root)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	sort.Strings(names)
	var probs []problem
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil || bytes.IndexByte(data, 0) >= 0 {
			continue // unreadable (a dangling link) or binary
		}
		lower := bytes.ToLower(data)
		for _, h := range names {
			if !bytes.Contains(lower, []byte(h)) {
				continue
			}
			for i, l := range bytes.Split(lower, []byte("\n")) {
				if bytes.Contains(l, []byte(h)) {
					probs = append(probs, problem{f, i + 1, fmt.Sprintf("names the package registry host %s (%s): take it from the machine's configuration (apt sources, go env GOPROXY) or leave the tool's default", h, hosts[h])})
				}
			}
		}
	}
	return probs, nil
}
