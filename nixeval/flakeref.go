package nixeval

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"unicode"
)

// FlakeRef is a flake reference parsed and checked once (ParseFlakeRef, from
// NewPlan). A reference into the build context stays relative until In
// joins it to where the context is mounted.
type FlakeRef struct {
	// Local references name a directory of the build context: Scheme
	// ("path:" or "git+file:"), Dir (clean, relative; "." is the context)
	// and Query (as written; its dir= checked to stay inside too).
	Scheme, Dir, Query string
	// URL is a remote reference without its fragment ("" when local).
	URL      string
	Fragment string // after '#', as written
	Attr     string // the nixosConfigurations name the fragment selects ("" = none)
	Remote   bool   // fetched over the network (not the build context)
}

// In is the reference Nix fetches (without the fragment), a local one as a
// path under contextDir.
func (r FlakeRef) In(contextDir string) string {
	if r.Remote {
		return r.URL
	}
	u := r.Scheme + path.Join(contextDir, r.Dir)
	if r.Query != "" {
		u += "?" + r.Query
	}
	return u
}

// localSchemes are the flake reference schemes that read the builder's own
// file system; only the first two may name (a relative path in) the build
// context, the others are refused.
var localSchemes = []string{"path:", "git+file:", "file:", "tarball+file:", "file+file:", "hg+file:", "sourcehut+file:"}

// secretQueryKeys are query parameters that carry credentials.
var secretQueryKeys = []string{"access_token", "private_token", "token", "password", "passwd"}

// errCredentials is what a reference with credentials in it gets: build
// arguments and directives land in the build's definition, its cache key and
// its progress output.
var errCredentials = errors.New("it holds credentials, which would land in the build's definition, cache key and logs: give them as a BuildKit secret instead (--secret id=github_token for GitHub, id=netrc for other hosts, id=nixconf for access-tokens)")

// ParseFlakeRef parses and checks ref. Relative path references (".",
// "./sub", ".?dir=sub", "path:.", "git+file:.") name the build context and
// must stay inside it, percent-encoding and dir= included; absolute paths
// and other local schemes (file:, tarball+file:, …) are refused, since the
// builder's file system is not the user's; credentials (user:password@,
// ?access_token=) are refused. The fragment names a NixOS configuration, as
// with nixos-rebuild: "web" or "nixosConfigurations.web" (quotes allowed
// around the name).
func ParseFlakeRef(ref string) (FlakeRef, error) {
	var r FlakeRef
	if ref == "" {
		return r, errors.New("empty flake reference")
	}
	for _, c := range ref {
		if unicode.IsSpace(c) || unicode.IsControl(c) {
			return r, fmt.Errorf("a flake reference has no spaces or control characters (found %q)", c)
		}
	}
	loc, frag, _ := strings.Cut(ref, "#")
	r.Fragment = frag
	attr := strings.TrimPrefix(frag, "nixosConfigurations.")
	if len(attr) >= 2 && attr[0] == '"' && attr[len(attr)-1] == '"' {
		attr = attr[1 : len(attr)-1]
	}
	if frag != "" && attr == "" {
		return r, fmt.Errorf("fragment %q names no NixOS configuration", frag)
	}
	r.Attr = attr
	if loc == "" {
		return r, fmt.Errorf("no flake before the fragment #%s: write the flake too, e.g. \".#%s\"", frag, frag)
	}
	if err := checkCredentials(loc); err != nil {
		return r, err
	}

	p, query, hasQuery := strings.Cut(loc, "?")
	scheme := ""
	for _, s := range localSchemes {
		if strings.HasPrefix(p, s) {
			scheme, p = s, strings.TrimPrefix(p, s)
			break
		}
	}
	if scheme == "" && !(p == "." || p == ".." || strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../") || strings.HasPrefix(p, "/")) {
		r.URL, r.Remote = loc, true
		return r, nil
	}
	// Nix decodes percent-encoding in a path: URL; so do we, before judging.
	dec, err := url.PathUnescape(p)
	if err != nil {
		return r, fmt.Errorf("%q: %v", p, err)
	}
	switch {
	case p == "":
		return r, fmt.Errorf("%q has no path", loc)
	case strings.HasPrefix(dec, "/"):
		return r, fmt.Errorf("%q is an absolute path, which does not exist in a build: use a path relative to the build context (\".\", \"./sub\")", p)
	case scheme != "" && scheme != "path:" && scheme != "git+file:":
		return r, fmt.Errorf("%q reads the builder's file system: use a path: or git+file: reference relative to the build context", loc)
	}
	clean := path.Clean(dec)
	if outside(clean) {
		return r, fmt.Errorf("%q is outside the build context", p)
	}
	if hasQuery {
		q, err := url.ParseQuery(query)
		if err != nil {
			return r, fmt.Errorf("%q: %v", query, err)
		}
		for _, d := range q["dir"] {
			if strings.HasPrefix(d, "/") || outside(path.Join(clean, d)) {
				return r, fmt.Errorf("dir=%s is outside the build context", d)
			}
		}
		r.Query = query
	}
	if scheme == "" {
		scheme = "path:"
	}
	r.Scheme, r.Dir = scheme, clean
	return r, nil
}

func outside(clean string) bool { return clean == ".." || strings.HasPrefix(clean, "../") }

// checkCredentials refuses a reference with a password or token in it.
func checkCredentials(loc string) error {
	if i := strings.Index(loc, "://"); i >= 0 {
		host := loc[i+3:]
		if j := strings.IndexAny(host, "/?"); j >= 0 {
			host = host[:j]
		}
		if strings.Contains(host, "@") {
			// git+ssh://git@host is a user name, not a secret.
			user, _, _ := strings.Cut(host, "@")
			if strings.Contains(user, ":") || !strings.Contains(loc, "ssh://") {
				return errCredentials
			}
		}
	}
	if _, query, ok := strings.Cut(loc, "?"); ok {
		q, err := url.ParseQuery(query)
		if err != nil {
			return fmt.Errorf("%q: %v", query, err)
		}
		for k := range q {
			for _, s := range secretQueryKeys {
				if strings.EqualFold(k, s) {
					return errCredentials
				}
			}
		}
	}
	return nil
}
