package storepath

import (
	"regexp"
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc-2.42": "glibc-2.42",
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-etc":        "etc",
		"/nix/store/short-name":                                  "short-name",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseName(t *testing.T) {
	for in, want := range map[string][2]string{
		"glibc-2.42":          {"glibc", "2.42"},
		"xz-5.8.1-bin":        {"xz", "5.8.1-bin"},
		"nixos-system-web-26": {"nixos-system-web", "26"},
		"etc":                 {"etc", ""},
		"python3.13-foo-1.0":  {"python3.13-foo", "1.0"},
		"unit-_foo":           {"unit", "_foo"},
	} {
		if p, v := ParseName(in); p != want[0] || v != want[1] {
			t.Errorf("ParseName(%q) = %q, %q; want %q, %q", in, p, v, want[0], want[1])
		}
	}
}

func TestCheck(t *testing.T) {
	for _, p := range []string{
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc-2.42",
		"/nix/store/0c5f4r5s1mz9ls2ls5y7qh2b4l2mq5nn-a+b_c?d=e.f",
	} {
		if err := Check(p); err != nil {
			t.Errorf("Check(%q): %v", p, err)
		}
	}
	long := "/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-"
	for len(long) < 44+212 {
		long += "x"
	}
	for p, want := range map[string]string{
		"/usr/lib/x":       "not in /nix/store",
		"/nix/store/short": "not a store path",
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc/lib":     "not a store path",
		"/nix/store/e5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc":         "hash", // e is not in Nix's base-32
		"/nix/store/R5HCQ8K2WW2HA6VYVM1QQRSKN1M5X3DL-glibc":         "hash", // nor upper case
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-a\nb":          "name", // a newline
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-a b":           "name", // a space
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-..":            "name", // a leading dot
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-":              "name", // empty
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-\u00e9t\u00e9": "name", // not ASCII
		long: "name",
	} {
		err := Check(p)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want an error about the %s", p, err, want)
		}
	}
}

// Pattern (what run.sh's grep -E uses) refuses what Check refuses, but for
// the two rules it leaves to Check.
func TestPatternAgreesWithCheck(t *testing.T) {
	re := regexp.MustCompile(Pattern)
	for _, p := range []string{
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc-2.42", "/usr/lib/x", "/nix/store/short",
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc/lib", "/nix/store/e5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-glibc",
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-a\nb", "/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-a b",
		"/nix/store/r5hcq8k2ww2ha6vyvm1qqrskn1m5x3dl-", "../../etc/passwd",
	} {
		if got, want := re.MatchString(p), Check(p) == nil; got != want {
			t.Errorf("%q: Pattern matches %v, Check accepts %v", p, got, want)
		}
	}
}
