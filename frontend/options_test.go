package frontend

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/imagespec"
)

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Builder != DefaultBuilder || !o.Substituters || o.Epoch != nil {
		t.Errorf("defaults %+v", o)
	}
	if !strings.Contains(DefaultBuilder, "nixos/nix:") || !strings.Contains(DefaultBuilder, "@sha256:") {
		t.Errorf("the default builder %s is not pinned by version and digest", DefaultBuilder)
	}
	o, err = ParseOptions(map[string]string{
		ArgFlake: " .#web ", ArgNixpkgs: "github:NixOS/nixpkgs/nixos-25.11", ArgBuilder: "localhost:5000/b",
		ArgNixConfig: "max-jobs = 4", ArgSubstituters: "false", ArgEpoch: "1700000000",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Flake != ".#web" || o.Nixpkgs != "github:NixOS/nixpkgs/nixos-25.11" || o.Builder != "localhost:5000/b" ||
		o.NixConfig != "max-jobs = 4" || o.Substituters || o.Epoch == nil || !o.Epoch.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("parsed %+v", o)
	}
	if o.SaveStore {
		t.Errorf("%s is off unless asked for", ArgStore)
	}
	if o, err := ParseOptions(map[string]string{ArgStore: " save "}); err != nil || !o.SaveStore {
		t.Errorf("%s=save: %+v, %v", ArgStore, o, err)
	}
	for k, v := range map[string]string{ArgSubstituters: "maybe", ArgEpoch: "-5", ArgStore: "restore", ArgBuilder: "Local:5000/Upper Case"} {
		if _, err := ParseOptions(map[string]string{k: v}); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: error %v", k, v, err)
		}
	}
}

func TestSBOM(t *testing.T) {
	data, err := os.ReadFile(specFixture)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	doc := SBOM(spec, time.Unix(1700000000, 0))
	if doc.SPDXVersion != "SPDX-2.3" || doc.CreationInfo.Created != "2023-11-14T22:13:20Z" {
		t.Errorf("document %s created %s", doc.SPDXVersion, doc.CreationInfo.Created)
	}
	if len(doc.Packages) != len(spec.Closure) {
		t.Fatalf("%d packages for %d store paths", len(doc.Packages), len(spec.Closure))
	}
	versions := map[string]string{}
	for _, p := range doc.Packages {
		versions[p.PackageName] = p.PackageVersion
	}
	if versions["glibc"] != "2.42" || versions["systemd"] != "262" || versions["nixos-system-web"] != "26.05" {
		t.Errorf("name/version split: %v", versions)
	}
	var describes, depends int
	for _, r := range doc.Relationships {
		switch r.Relationship {
		case "DESCRIBES":
			describes++
			if !strings.Contains(string(r.RefB.ElementRefID), "0c5f4r5s1mz9ls2ls5y7qh2b4l2mq5nn") {
				t.Errorf("the document describes %s, not the toplevel", r.RefB.ElementRefID)
			}
		case "DEPENDS_ON":
			depends++
		}
	}
	// References without self-references: toplevel→2, systemd→1, etc→1.
	if describes != 1 || depends != 4 {
		t.Errorf("%d DESCRIBES, %d DEPENDS_ON", describes, depends)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"spdxVersion":"SPDX-2.3"`) || !strings.Contains(string(js), `"SPDXID":"SPDXRef-DOCUMENT"`) {
		t.Errorf("SPDX JSON: %.300s", js)
	}
}
