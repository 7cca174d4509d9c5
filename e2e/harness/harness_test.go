package harness

import (
	"strings"
	"testing"
)

func TestTailLines(t *testing.T) {
	var b strings.Builder
	for i := 1; i <= 60; i++ {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%3))
		b.WriteString("\n")
	}
	got := strings.Split(TailLines(b.String(), 50), "\n")
	if len(got) != 50 {
		t.Fatalf("TailLines kept %d lines, want 50", len(got))
	}
	if TailLines("a\nb\n", 50) != "a\nb" {
		t.Errorf("TailLines of a short text changed it: %q", TailLines("a\nb\n", 50))
	}
}

func TestDiff(t *testing.T) {
	before := Snapshot{Containers: []string{"a"}, Processes: []string{"1 containerd-shim"}}
	if d := Diff(before, before); d != "" {
		t.Errorf("Diff of equal snapshots: %q", d)
	}
	after := Snapshot{Containers: []string{"a", "b"}, Processes: []string{"1 containerd-shim"}, Cgroups: []string{"/nixos2docker-engine/b"}}
	d := Diff(before, after)
	for _, want := range []string{"container b left behind", "cgroup /nixos2docker-engine/b left behind", "counts differ"} {
		if !strings.Contains(d, want) {
			t.Errorf("Diff lacks %q:\n%s", want, d)
		}
	}
}

func TestParseKV(t *testing.T) {
	kv := parseKV("DOCKER_HOST=unix:///run/x/docker.sock\nnoise\nCGROUP2_ROOT=\n")
	if kv["DOCKER_HOST"] != "unix:///run/x/docker.sock" {
		t.Errorf("DOCKER_HOST = %q", kv["DOCKER_HOST"])
	}
	if v, ok := kv["CGROUP2_ROOT"]; !ok || v != "" {
		t.Errorf("CGROUP2_ROOT = %q, %v", v, ok)
	}
}
