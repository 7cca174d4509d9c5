package frontend

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	intoto "github.com/in-toto/in-toto-golang/in_toto"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/frontend/gateway/client"
	gwpb "github.com/moby/buildkit/frontend/gateway/pb"
	"github.com/moby/buildkit/solver/result"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/storepath"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spdx/tools-golang/spdx/v2/common"
	spdx "github.com/spdx/tools-golang/spdx/v2/v2_3"
)

// sbomPath is where the SPDX document lies in its attestation state.
const sbomPath = "/nixos2docker.spdx.json"

// SBOM is the SPDX document of a spec's closure: one package per store path,
// the toplevel described by the document, references as dependencies. The
// closure is exactly what the image holds, so no scanner is needed.
func SBOM(spec *imagespec.Spec, created time.Time) *spdx.Document {
	id := func(p string) common.ElementID {
		base := strings.TrimPrefix(p, imagespec.StoreDir+"/")
		if len(base) >= 32 {
			base = base[:32]
		}
		return common.ElementID("Package-" + base)
	}
	closure := append([]imagespec.Path(nil), spec.Closure...)
	sort.Slice(closure, func(i, j int) bool { return closure[i].Path < closure[j].Path })
	doc := &spdx.Document{
		SPDXVersion:       spdx.Version,
		DataLicense:       spdx.DataLicense,
		SPDXIdentifier:    "DOCUMENT",
		DocumentName:      spec.ImageName + ":" + spec.ImageTag,
		DocumentNamespace: "https://nixos2docker.invalid/spdx/" + strings.TrimPrefix(spec.Toplevel, imagespec.StoreDir+"/"),
		CreationInfo: &spdx.CreationInfo{
			Creators: []common.Creator{{CreatorType: "Tool", Creator: "nixos2docker"}},
			Created:  created.UTC().Format(time.RFC3339),
		},
	}
	doc.Relationships = append(doc.Relationships, &spdx.Relationship{
		RefA:         common.MakeDocElementID("", "DOCUMENT"),
		RefB:         common.MakeDocElementID("", string(id(spec.Toplevel))),
		Relationship: common.TypeRelationshipDescribe,
	})
	for _, p := range closure {
		name, version := storepath.ParseName(storepath.Name(p.Path))
		doc.Packages = append(doc.Packages, &spdx.Package{
			PackageName:             name,
			PackageSPDXIdentifier:   id(p.Path),
			PackageVersion:          version,
			PackageDownloadLocation: "NOASSERTION",
			FilesAnalyzed:           false,
			PackageSourceInfo:       "Nix store path " + p.Path,
			PackageComment:          "NAR hash " + p.NarHash,
		})
		refs := append([]string(nil), p.References...)
		sort.Strings(refs)
		for _, r := range refs {
			if r == p.Path {
				continue
			}
			doc.Relationships = append(doc.Relationships, &spdx.Relationship{
				RefA:         common.MakeDocElementID("", string(id(p.Path))),
				RefB:         common.MakeDocElementID("", string(id(r))),
				Relationship: common.TypeRelationshipDependsOn,
			})
		}
	}
	return doc
}

// sboms collects each platform's spec for the SBOM attestations.
type sboms struct {
	mu    sync.Mutex
	specs map[string]*imagespec.Spec
}

func newSBOMs() *sboms { return &sboms{specs: map[string]*imagespec.Spec{}} }

func (s *sboms) store(id string, spec *imagespec.Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.specs[id] = spec
}

// attach adds an SPDX in-toto attestation to every platform's image, as the
// Dockerfile frontend does with a scanner's output.
func (s *sboms) attach(ctx context.Context, c client.Client, rb *dockerui.ResultBuilder, epoch *time.Time) error {
	created := time.Now()
	if epoch != nil {
		created = *epoch
	}
	return rb.EachPlatform(ctx, func(ctx context.Context, id string, p ocispecs.Platform) error {
		s.mu.Lock()
		spec := s.specs[id]
		s.mu.Unlock()
		if spec == nil {
			return fmt.Errorf("sbom: no image spec for %s", id)
		}
		data, err := json.Marshal(SBOM(spec, created))
		if err != nil {
			return fmt.Errorf("sbom: %w", err)
		}
		st := llb.Scratch().File(llb.Mkfile(sbomPath, 0o644, data, llb.WithCreatedTime(created)),
			llb.WithCustomNamef("[%s] sbom: SPDX document of the closure (%d store paths)", id, len(spec.Closure)))
		def, err := st.Marshal(ctx, llb.Platform(p))
		if err != nil {
			return fmt.Errorf("sbom: marshal: %w", err)
		}
		r, err := c.Solve(ctx, client.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return fmt.Errorf("sbom: %w", err)
		}
		ref, err := r.SingleRef()
		if err != nil {
			return fmt.Errorf("sbom: %w", err)
		}
		rb.AddAttestation(id, result.Attestation[client.Reference]{
			Kind: gwpb.AttestationKind_InToto,
			Ref:  ref,
			Path: sbomPath,
			Metadata: map[string][]byte{
				result.AttestationReasonKey: []byte(result.AttestationReasonSBOM),
			},
			InToto: result.InTotoAttestation{PredicateType: intoto.PredicateSPDX},
		})
		return nil
	})
}
