package archive

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
)

// FuzzSpecToArchive: any document is refused by imagespec with an
// *imagespec.Error, or its image is decided and written (from a store made
// for its closure) without a panic or an error.
func FuzzSpecToArchive(f *testing.F) {
	if data, err := os.ReadFile("../imagespec/testdata/spec-v1.json"); err == nil {
		f.Add(data)
		f.Add([]byte(strings.Replace(string(data), `"skeleton": [`, `"skeleton": [{"path": "/nix", "type": "symlink", "target": "/x"}, `, 1)))
		f.Add([]byte(strings.Replace(string(data), `"version": 1,`, `"version": 1, "Closure": [],`, 1)))
	}
	f.Add([]byte(`{"version": 1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := imagespec.Parse(data)
		if err != nil {
			if _, ok := err.(*imagespec.Error); !ok {
				t.Fatalf("error %T: %v", err, err)
			}
			return
		}
		if len(s.Closure) > 64 {
			return
		}
		m, err := imagemodel.New(s, imagemodel.Options{})
		if err != nil {
			t.Fatalf("a valid spec has no image: %v", err)
		}
		store := t.TempDir()
		for _, p := range s.Closure {
			if err := os.WriteFile(filepath.Join(store, filepath.Base(p.Path)), []byte(p.Path), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := Write(context.Background(), io.Discard, m, Options{StoreDir: store}); err != nil {
			t.Fatalf("writing the image of a valid spec: %v", err)
		}
	})
}
