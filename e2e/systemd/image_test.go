package systemd

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteImageTar: the units replace the rootfs's own entries at their paths, are enabled in
// multi-user.target, and everything else of the rootfs is kept.
func TestWriteImageTar(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	add := func(h *tar.Header, body string) {
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "./etc/", Mode: 0o755}, "")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "./etc/os-release", Mode: 0o644}, "ID=debian\n")
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "./etc/systemd/system/" + helloUnit, Mode: 0o644}, "old\n")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(src, in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := writeImageTar(&out, src); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	links := map[string]string{}
	count := map[string]int{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		count[h.Name]++
		body, _ := io.ReadAll(tr)
		switch h.Typeflag {
		case tar.TypeReg:
			files[h.Name] = string(body)
		case tar.TypeSymlink:
			links[h.Name] = h.Linkname
		}
	}
	if files["./etc/os-release"] != "ID=debian\n" {
		t.Errorf("rootfs file lost: %q", files["./etc/os-release"])
	}
	if files["./"+managerDropInPath] != managerDropIn {
		t.Errorf("manager drop-in missing: %q", files["./"+managerDropInPath])
	}
	for name, body := range testUnits {
		p := "./etc/systemd/system/" + name
		if files[p] != body || count[p] != 1 {
			t.Errorf("%s: %d entries, content %q", p, count[p], files[p])
		}
		l := "./etc/systemd/system/multi-user.target.wants/" + name
		if links[l] != "/etc/systemd/system/"+name {
			t.Errorf("%s -> %q, want the unit file", l, links[l])
		}
	}
}
