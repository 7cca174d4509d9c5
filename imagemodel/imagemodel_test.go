package imagemodel

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
	"github.com/nixos2docker/nixos2docker/layers"
)

func loadSpec(t *testing.T) *imagespec.Spec { return testenv.SpecFixture(t) }

func TestNewLayersAndHistory(t *testing.T) {
	s := loadSpec(t)
	epoch := time.Unix(1700000000, 0).UTC()
	m, err := New(s, Options{Epoch: &epoch})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.Layers); n < 2 || n > s.MaxLayers {
		t.Fatalf("%d layers for maxLayers %d", n, s.MaxLayers)
	}
	last := m.Layers[len(m.Layers)-1]
	if !last.Skeleton || len(last.Paths) != 0 || !strings.HasPrefix(last.Name, "layer ") || !strings.Contains(last.Name, "root skeleton") {
		t.Errorf("the last layer is not the skeleton: %+v", last)
	}
	seen := map[string]bool{}
	for i, l := range m.StoreLayers() {
		if l.Skeleton || len(l.Paths) == 0 || !slices.IsSorted(l.Paths) {
			t.Errorf("store layer %d: %+v", i+1, l)
		}
		for _, p := range l.Paths {
			if seen[p] {
				t.Errorf("%s in two layers", p)
			}
			seen[p] = true
			if !strings.Contains(l.History.CreatedBy, p) {
				t.Errorf("history of layer %d does not name %s", i+1, p)
			}
		}
		if !strings.HasPrefix(l.Name, "layer ") || !strings.Contains(l.Name, l.Description) {
			t.Errorf("layer %d name %q, description %q", i+1, l.Name, l.Description)
		}
	}
	if len(seen) != len(s.Closure) {
		t.Errorf("%d of %d closure paths in layers", len(seen), len(s.Closure))
	}
	if len(m.Config.History) != len(m.Layers) {
		t.Errorf("%d history entries for %d layers", len(m.Config.History), len(m.Layers))
	}
	for i, h := range m.Config.History {
		if h.Created == nil || !h.Created.Equal(epoch) {
			t.Errorf("history %d created %v, want the epoch", i, h.Created)
		}
	}
	if !m.Created.Equal(epoch) || !m.StoreTime.Equal(NixTime) {
		t.Errorf("created %v, store time %v: want the epoch and Nix's time 1", m.Created, m.StoreTime)
	}
}

func TestNewWithoutEpoch(t *testing.T) {
	m, err := New(loadSpec(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Created.Equal(NixTime) || m.Config.Created == nil || !m.Config.Created.Equal(NixTime) {
		t.Errorf("without SOURCE_DATE_EPOCH the image is created at Nix's time 1: %v", m.Created)
	}
}

// The store layers do not depend on the epoch: a CI setting
// SOURCE_DATE_EPOCH to each commit's time reuses every unchanged layer.
func TestStoreLayersIndependentOfEpoch(t *testing.T) {
	s := loadSpec(t)
	a, _ := New(s, Options{})
	e := time.Unix(1800000000, 0)
	b, _ := New(s, Options{Epoch: &e})
	for i := range a.StoreLayers() {
		if !slices.Equal(a.Layers[i].Paths, b.Layers[i].Paths) || !a.StoreTime.Equal(b.StoreTime) {
			t.Errorf("store layer %d differs with another epoch", i+1)
		}
	}
	if a.EntryTime(imagespec.Entry{Path: "/nix"}) != NixTime || b.EntryTime(imagespec.Entry{Path: "/etc"}) != e.UTC() {
		t.Error("the store's parents keep the store's time, other entries the epoch")
	}
}

func TestConfigLabels(t *testing.T) {
	s := loadSpec(t)
	m, err := New(s, Options{Labels: map[string]string{"org.opencontainers.image.title": "override", "extra": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Config.Labels["org.opencontainers.image.title"] != "override" || m.Config.Config.Labels["extra"] != "1" {
		t.Errorf("labels %v: build labels are added and win", m.Config.Config.Labels)
	}
	if s.Config.Labels["org.opencontainers.image.title"] != "web" {
		t.Error("the spec's labels were modified")
	}
	if m.Config.Platform.OS != "linux" || m.Config.Platform.Architecture != "amd64" || m.Config.RootFS.Type != "layers" {
		t.Errorf("platform %+v rootfs %+v", m.Config.Platform, m.Config.RootFS)
	}
}

func TestSkeletonCompleted(t *testing.T) {
	s := loadSpec(t)
	s.Skeleton = []imagespec.Entry{
		{Path: "/var/lib/x/f", Type: imagespec.TypeFile, Content: "x"},
		{Path: "/bin/sh", Type: imagespec.TypeSymlink, Target: "/nix/store/x/bin/sh"},
	}
	m, err := New(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range m.Skeleton {
		got = append(got, e.Path+":"+e.Type)
	}
	want := []string{"/bin:dir", "/bin/sh:symlink", "/nix:dir", "/nix/store:dir", "/var:dir", "/var/lib:dir", "/var/lib/x:dir", "/var/lib/x/f:file"}
	if !slices.Equal(got, want) {
		t.Errorf("completed skeleton %v, want %v", got, want)
	}
	// An empty skeleton still makes a skeleton layer: it carries /nix and
	// /nix/store, and both faces count it the same way.
	s.Skeleton = nil
	m, err = New(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if l := m.Layers[len(m.Layers)-1]; !l.Skeleton || len(m.Skeleton) != 2 {
		t.Errorf("empty skeleton: last layer %+v, entries %v", l, m.Skeleton)
	}
}

// TestNixRegistration: the registration is the closure in nix-store
// --load-db's format, sorted, and a skeleton file where the spec says; a spec
// without nixRegistration gets none. (cmd/nixos2docker-assemble loads it with
// real Nix and verifies the image's store paths against it.)
func TestNixRegistration(t *testing.T) {
	s := loadSpec(t)
	s.Closure = []imagespec.Path{
		{Path: "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app", NarHash: "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s", NarSize: 120,
			References: []string{"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app", "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lib"}},
		{Path: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lib", NarHash: "sha256:0y1mqvfnwqjy7qqx5w6g3wdys5k8r3f1z2dvk0mph6rrnhf3xcqv", NarSize: 4096},
	}
	s.Toplevel = s.Closure[0].Path
	want := "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lib\nsha256:0y1mqvfnwqjy7qqx5w6g3wdys5k8r3f1z2dvk0mph6rrnhf3xcqv\n4096\n\n0\n" +
		"/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app\nsha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n120\n\n2\n" +
		"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-lib\n/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-app\n"
	if got := NixRegistration(s.Closure); got != want {
		t.Errorf("registration:\n%s\nwant:\n%s", got, want)
	}

	m, err := New(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Skeleton {
		if e.Type == imagespec.TypeFile && strings.HasPrefix(e.Content, "/nix/store/") {
			t.Errorf("a spec without nixRegistration got %s", e.Path)
		}
	}
	s.NixRegistration = "/nix/var/nix/nixos2docker-registration"
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err = New(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var reg *imagespec.Entry
	for i, e := range m.Skeleton {
		if e.Path == s.NixRegistration {
			reg = &m.Skeleton[i]
		}
	}
	if reg == nil || reg.Type != imagespec.TypeFile || reg.FileMode() != 0o644 || reg.Content != want {
		t.Fatalf("registration entry = %+v", reg)
	}
	l := m.Layers[len(m.Layers)-1]
	if desc := fmt.Sprintf("root skeleton (%d entries)", len(s.Skeleton)+1); l.Description != desc || !strings.Contains(l.History.CreatedBy, s.NixRegistration) {
		t.Errorf("skeleton layer %q / %q, want %q naming the registration", l.Description, l.History.CreatedBy, desc)
	}
	if l.Size < int64(len(want)) {
		t.Errorf("skeleton layer size %d does not count the registration (%d bytes)", l.Size, len(want))
	}
}

func TestCheckGroups(t *testing.T) {
	s := loadSpec(t)
	ls, err := layers.Assign(layers.FromSpec(s), layers.Options{MaxLayers: s.MaxLayers - 1, Toplevel: s.Toplevel})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, l := range ls {
		all = append(all, l.Paths...)
	}
	cases := map[string]struct {
		groups []layers.Layer
		max    int
		want   string
	}{
		"duplicate": {append(slices.Clone(ls), layers.Layer{Paths: all[:1]}), 0, "is in layers"},
		"missing":   {[]layers.Layer{{Paths: all[1:]}}, 0, "is in no layer"},
		"foreign":   {append(slices.Clone(ls), layers.Layer{Paths: []string{"/nix/store/00000000000000000000000000000000-x"}}), 0, "not in the closure"},
		"too many":  {ls, len(ls), "exceed maxLayers"},
		"empty":     {append(slices.Clone(ls), layers.Layer{}), 0, "is empty"},
		"no layers": {nil, 0, "no layers"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			sp := *s
			if c.max != 0 {
				sp.MaxLayers = c.max
			}
			if err := checkGroups(&sp, c.groups); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if err := checkGroups(s, ls); err != nil {
		t.Errorf("the layering's own groups: %v", err)
	}
}

func TestParseEpoch(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1700000000": 1700000000, " 42 ": 42, "253402300799": 253402300799} {
		got, err := ParseEpoch(in)
		if err != nil || got.Unix() != want {
			t.Errorf("ParseEpoch(%q) = %v, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]string{"-1": "non-negative", "x": "non-negative", "1.5": "non-negative", "253402300800": "year 9999", "99999999999999999999": "non-negative"} {
		if _, err := ParseEpoch(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEpoch(%q) error %v, want one saying %q", in, err, want)
		}
	}
}

func TestNewRejectsWhatValidationWould(t *testing.T) {
	s := loadSpec(t)
	for name, mod := range map[string]func(*imagespec.Spec){
		"maxLayers 1":    func(s *imagespec.Spec) { s.MaxLayers = 1 },
		"maxLayers 10^9": func(s *imagespec.Spec) { s.MaxLayers = 1e9 },
		"mips":           func(s *imagespec.Spec) { s.System = "mips-linux" },
	} {
		sp := *s
		mod(&sp)
		if _, err := New(&sp, Options{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
