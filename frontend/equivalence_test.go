package frontend

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/nixos2docker/nixos2docker/archive"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/ocitest"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
	"github.com/tonistiigi/fsutil"
)

// TestFacesGiveTheSameImage renders the same specs with both faces — the
// frontend's LLB solved by a real buildkitd, and the Nix-native archive — and
// compares what a container would see: the layers (count, order, every
// entry's name, type, mode, owner, time, link and content) and the config
// (everything but the diff IDs, which hash each renderer's own tar bytes).
func TestFacesGiveTheSameImage(t *testing.T) {
	host, builder := buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.New(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	epoch := time.Unix(1700000000, 0).UTC()
	specs := map[string]func() *imagespec.Spec{
		"fixture": func() *imagespec.Spec { return testenv.SpecFixture(t) },
		"empty skeleton": func() *imagespec.Spec {
			s := testenv.SpecFixture(t)
			s.Skeleton = nil
			return s
		},
		"one path": func() *imagespec.Spec { return generated(1, 125) },
		"maxLayers reached": func() *imagespec.Spec {
			return generated(12, 4)
		},
		"special modes": func() *imagespec.Spec {
			s := generated(3, 125)
			s.Skeleton = []imagespec.Entry{
				{Path: "/tmp", Type: imagespec.TypeDir, Mode: "1777"},
				{Path: "/usr/bin/su", Type: imagespec.TypeFile, Mode: "4755", Content: "#!/bin/sh\n"},
				{Path: "/etc/machine-id", Type: imagespec.TypeFile, Mode: "0444"},
				{Path: "/var/lib/deep/dir", Type: imagespec.TypeDir, Mode: "0700"},
				{Path: "/init", Type: imagespec.TypeSymlink, Target: s.Toplevel + "/init"},
			}
			return s
		},
		// The closure's Nix registration, a file of the skeleton both faces
		// write from the model.
		"nix registration": func() *imagespec.Spec {
			s := generated(20, 6)
			s.Skeleton = []imagespec.Entry{{Path: "/nix/var/nix/profiles", Type: imagespec.TypeDir}}
			s.NixRegistration = "/nix/var/nix/nixos2docker-registration"
			return s
		},
	}
	for name, mk := range specs {
		for _, e := range []*time.Time{nil, &epoch} {
			label := name + "/no epoch"
			if e != nil {
				label = name + "/SOURCE_DATE_EPOCH"
			}
			t.Run(label, func(t *testing.T) {
				s := mk()
				if err := s.Validate(); err != nil {
					t.Fatal(err)
				}
				root := fakeStore(t, s)
				fromArchive := archiveFace(t, s, e, root)
				fromLLB := llbFace(ctx, t, c, builder, s, e, root)
				compareImages(t, fromArchive, fromLLB)
			})
		}
	}
}

// generated is a spec of n store paths, each referencing the one before.
func generated(n, maxLayers int) *imagespec.Spec {
	s := &imagespec.Spec{Version: imagespec.Version, ImageName: "gen", ImageTag: "latest", MaxLayers: maxLayers, System: "x86_64-linux"}
	for i := range n {
		p := imagespec.Path{Path: fmt.Sprintf("/nix/store/%032d-pkg-%d", i, i), NarHash: "sha256:0", NarSize: int64(1000 * (i + 1))}
		if i > 0 {
			p.References = []string{s.Closure[i-1].Path}
		}
		s.Closure = append(s.Closure, p)
	}
	s.Toplevel = s.Closure[n-1].Path
	s.Config.Entrypoint = []string{"/init"}
	s.Config.Env = []string{"container=docker"}
	return s
}

// fakeStore writes every closure path of s under ROOT/out/nix/store (the
// builder stage's layout): a directory with an executable, a read-only file
// and a symlink, as store paths hold.
func fakeStore(t *testing.T, s *imagespec.Spec) string {
	t.Helper()
	root := t.TempDir()
	for _, p := range s.Closure {
		dir := filepath.Join(root, "out", p.Path)
		for f, c := range map[string]struct {
			data string
			mode os.FileMode
		}{
			"bin/" + filepath.Base(p.Path): {"#!/bin/sh\necho " + p.Path + "\n", 0o555},
			"share/doc/README":             {p.Path + "\n", 0o444},
		} {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), []byte(c.data), c.mode); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("bin", filepath.Join(dir, "sbin")); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func archiveFace(t *testing.T, s *imagespec.Spec, epoch *time.Time, root string) *ocitest.Image {
	t.Helper()
	m, err := imagemodel.New(s, imagemodel.Options{Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := archive.Write(context.Background(), &buf, m, archive.Options{StoreDir: filepath.Join(root, "out", imagespec.StoreDir)}); err != nil {
		t.Fatal(err)
	}
	img, err := ocitest.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// llbFace solves the frontend's LLB: its layer steps run in the builder
// image and read the fake store, mounted where the store cache would be.
func llbFace(ctx context.Context, t *testing.T, c *client.Client, builder string, s *imagespec.Spec, epoch *time.Time, root string) *ocitest.Image {
	t.Helper()
	store := llb.AddMount(imagespec.StoreDir, llb.Local("store"), llb.SourcePath("/out"+imagespec.StoreDir), llb.Readonly)
	img, err := NewImage(llb.Image(builder), store, s, ImageOptions{Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := json.Marshal(img.Config)
	if err != nil {
		t.Fatal(err)
	}
	storeFS, err := fsutil.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "oci.tar")
	opt := client.SolveOpt{
		LocalMounts: map[string]fsutil.FS{"store": storeFS},
		Exports: []client.ExportEntry{{Type: client.ExporterOCI, Output: func(map[string]string) (io.WriteCloser, error) {
			return os.Create(out)
		}}},
	}
	_, err = c.Build(ctx, opt, "nixos2docker-equivalence", func(ctx context.Context, gw gwclient.Client) (*gwclient.Result, error) {
		def, err := img.State.Marshal(ctx, llb.LinuxAmd64)
		if err != nil {
			return nil, err
		}
		r, err := gw.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return nil, err
		}
		r.AddMeta(exptypes.ExporterImageConfigKey, cfg)
		return r, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ocitest.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// compareImages: the same layers, entry by entry, and the same config
// (ocitest.Compare); "first" is the archive, "second" the frontend.
func compareImages(t *testing.T, want, got *ocitest.Image) {
	t.Helper()
	for _, d := range ocitest.Compare(want, got, ocitest.Leeway{}) {
		t.Error(d)
	}
}
