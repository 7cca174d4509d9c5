package storepath

import "testing"

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
