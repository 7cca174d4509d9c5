package nix2llb

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
)

// dumpOp is one op as `buildctl debug dump-llb` prints it.
type dumpOp struct {
	Op         *pb.Op
	Digest     digest.Digest
	OpMetadata *pb.OpMetadata
}

// Dump writes a state's LLB definition as JSON, one op per line, in the
// format of `buildctl debug dump-llb`.
func Dump(ctx context.Context, w io.Writer, st llb.State, opts ...llb.ConstraintsOpt) error {
	def, err := st.Marshal(ctx, opts...)
	if err != nil {
		return fmt.Errorf("marshal LLB: %w", err)
	}
	return DumpDefinition(w, def)
}

// DumpDefinition writes a marshalled definition as JSON, one op per line.
func DumpDefinition(w io.Writer, def *llb.Definition) error {
	enc := json.NewEncoder(w)
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			return fmt.Errorf("parse LLB op: %w", err)
		}
		dgst := digest.FromBytes(dt)
		if err := enc.Encode(dumpOp{Op: &op, Digest: dgst, OpMetadata: def.Metadata[dgst].ToPB()}); err != nil {
			return fmt.Errorf("write LLB op: %w", err)
		}
	}
	return nil
}
