package frontend

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Nix step's trust boundary (README, "Security"): whatever a derivation
// does, it runs as an unprivileged build user, so it can neither read the
// build's secrets nor change what is already in the store, and no secret
// value reaches the image or an exported cache.

// hostileContext is the toy's context plus hostile/flake.nix: an image of the
// toy system with two more paths, a victim and a probe that runs script
// (busybox sh -e; $victim is the victim's store path). Nonce makes every
// path new, so the builds run and nothing here touches a path other tests use.
func hostileContext(t *testing.T, script string) (dir, file string) {
	t.Helper()
	dir = toyContext(t)
	nonce := fmt.Sprint(time.Now().UnixNano())
	flake := `{
  outputs =
    { self }:
    let
      system = builtins.currentSystem or "x86_64-linux";
      toy = import ../examples/toy/toy.nix { inherit system; };
      bb = toy.parts.busybox;
      mk =
        name: extra: script:
        derivation (
          {
            inherit name system;
            builder = "${bb}/bin/sh";
            args = [ "-ec" script ];
            PATH = "${bb}/bin";
            nonce = "` + nonce + `";
          }
          // extra
        );
      victim = mk "victim" { } ''mkdir "$out"; echo original > "$out/file"'';
      probe = mk "probe" {
        inherit victim;
        # What the evaluation can see of the environment (the token, before).
        evalEnv = builtins.getEnv "NIX_CONFIG";
      } ` + nixString(script) + `;
    in
    {
      nixosConfigurations.hostile.config.system.build.dockerImageSpec = import ../nixos/lib/image-spec.nix {
        inherit system;
        shell = "${bb}/bin/sh";
        path = [ bb ];
        toplevel = toy.config.system.build.toplevel;
        extraContents = [ probe victim ];
        imageName = "hostile";
        config.Entrypoint = [ "${bb}/bin/sh" ];
      };
    };
}
`
	if err := os.MkdirAll(filepath.Join(dir, "hostile"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hostile/flake.nix"), []byte(flake), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, "# flake=.?dir=hostile#hostile\n"
}

// nixString quotes s as a Nix string.
func nixString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "${", "\\${", "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// trustSecrets are the secrets the builds offer, each value unique to the run.
func trustSecrets() map[string][]byte {
	n := time.Now().UnixNano()
	return map[string][]byte{
		"netrc":        []byte(fmt.Sprintf("machine example.invalid login n2d password netrc-secret-%d\n", n)),
		"nixconf":      []byte(fmt.Sprintf("# nixconf-secret-%d\n", n)),
		"github_token": []byte(fmt.Sprintf("ghp_token-secret-%d\n", n)),
	}
}

func TestBuildKitTrustBoundary(t *testing.T) {
	buildkitHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// A derivation that reads a secret, or writes into another store path,
	// fails the build.
	for _, tc := range []struct{ name, script string }{
		{"read netrc", `cat /run/secrets/netrc > "$out"`},
		{"read github_token", `cat /run/secrets/github_token > "$out"`},
		{"write another store path", `echo changed > "$victim/file"; echo > "$out"`},
		{"add to another store path", `echo new > "$victim/new"; echo > "$out"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, file := hostileContext(t, tc.script)
			res, err := solveKit(ctx, t, kitBuild{file: file, ctxDir: dir, include: []string{"hostile"}, secrets: trustSecrets()})
			if err == nil {
				t.Fatalf("the build succeeded\nlogs:\n%s", res.logs)
			}
			if !strings.Contains(res.logs, "Permission denied") {
				t.Errorf("error %v: want the derivation refused (Permission denied)\nlogs:\n%s", err, res.logs)
			}
		})
	}

	// A build whose derivation looks for every secret, in the files, the
	// environment of every process it can see and the evaluation's
	// environment, and keeps whatever it finds, leaves no trace of any
	// secret value in the image or in an exported cache.
	t.Run("no trace", func(t *testing.T) {
		dir, file := hostileContext(t, `
for f in /run/secrets/* /run/nixos2docker/* /proc/[0-9]*/environ; do
  cat "$f" 2>/dev/null || true
done > "$out"
echo "$evalEnv" >> "$out"
`)
		secrets := trustSecrets()
		oci := filepath.Join(t.TempDir(), "image.tar")
		cache := t.TempDir()
		res, err := solveKit(ctx, t, kitBuild{file: file, ctxDir: dir, include: []string{"hostile"}, secrets: secrets, ociDest: oci, cacheDest: cache})
		if err != nil {
			t.Fatalf("build: %v\nlogs:\n%s", err, res.logs)
		}
		blobs := readBlobs(t, oci)
		if err := filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			blobs["cache:"+strings.TrimPrefix(p, cache)] = data
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(blobs) < 5 {
			t.Fatalf("only %d files in the exports", len(blobs))
		}
		for name, data := range blobs {
			if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
				if plain, err := io.ReadAll(zr); err == nil {
					data = plain
				}
			}
			for id, v := range secrets {
				if bytes.Contains(data, bytes.TrimSpace(v)) {
					t.Errorf("secret %s is in %s", id, name)
				}
			}
		}
		if strings.Contains(res.logs, "secret-") {
			t.Errorf("a secret value is in the build's log:\n%s", res.logs)
		}
	})
}
