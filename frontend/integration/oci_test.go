package integration

import "github.com/nixos2docker/nixos2docker/internal/ocitest"

// The suite reads images with the project's one OCI layout reader (also the
// frontend's and the equivalence test's).
type (
	ociImage   = ocitest.Image
	ociLayer   = ocitest.Layer
	layerEntry = ocitest.Entry
)

// readOCITar reads the linux/amd64 image of an OCI layout tarball (buildctl's
// type=oci, buildx's --output type=oci), following a multi-platform or
// attested index.
func readOCITar(file string) (*ociImage, error) { return ocitest.ReadFile(file) }

func storePathOf(name string) string { return ocitest.StorePathOf(name) }
