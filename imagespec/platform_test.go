package imagespec

import (
	"strings"
	"testing"

	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestSystemFor(t *testing.T) {
	for _, tt := range []struct {
		p    ocispecs.Platform
		want string
	}{
		{ocispecs.Platform{OS: "linux", Architecture: "amd64"}, "x86_64-linux"},
		{ocispecs.Platform{OS: "linux", Architecture: "arm64"}, "aarch64-linux"},
		{ocispecs.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, "aarch64-linux"},
		{ocispecs.Platform{OS: "linux", Architecture: "aarch64"}, "aarch64-linux"}, // normalised
		{ocispecs.Platform{OS: "linux", Architecture: "x86_64"}, "x86_64-linux"},
	} {
		got, err := SystemFor(tt.p)
		if err != nil || got != tt.want {
			t.Errorf("SystemFor(%v) = %q, %v; want %q", tt.p, got, err, tt.want)
		}
	}
	for _, p := range []ocispecs.Platform{
		{OS: "linux", Architecture: "arm", Variant: "v7"},
		{OS: "linux", Architecture: "riscv64"},
		{OS: "windows", Architecture: "amd64"},
	} {
		_, err := SystemFor(p)
		if err == nil || !strings.Contains(err.Error(), "unsupported platform") || !strings.Contains(err.Error(), "linux/amd64 (x86_64-linux), linux/arm64 (aarch64-linux)") {
			t.Errorf("SystemFor(%v) error %v, want one listing the supported platforms", p, err)
		}
	}
}

func TestPlatform(t *testing.T) {
	for sys, want := range map[string]string{"x86_64-linux": "linux/amd64", "aarch64-linux": "linux/arm64"} {
		p, err := Platform(sys)
		if err != nil || p.OS+"/"+p.Architecture+map[bool]string{true: "/" + p.Variant, false: ""}[p.Variant != ""] != want {
			t.Errorf("Platform(%q) = %+v, %v; want %s", sys, p, err, want)
		}
		back, err := SystemFor(p)
		if err != nil || back != sys {
			t.Errorf("SystemFor(Platform(%q)) = %q, %v", sys, back, err)
		}
	}
	if _, err := Platform("riscv64-linux"); err == nil || !strings.Contains(err.Error(), "x86_64-linux") {
		t.Errorf("Platform(riscv64-linux) error %v, want one listing the supported systems", err)
	}
}
