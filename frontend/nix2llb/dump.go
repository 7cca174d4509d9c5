package nix2llb

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"

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
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			return fmt.Errorf("parse LLB op: %w", err)
		}
		dgst := digest.FromBytes(dt)
		line, err := json.Marshal(dumpOp{Op: &op, Digest: dgst, OpMetadata: def.Metadata[dgst].ToPB()})
		if err != nil {
			return fmt.Errorf("write LLB op: %w", err)
		}
		if line, err = withSymlinks(line, &op); err != nil {
			return fmt.Errorf("write LLB op: %w", err)
		}
		if _, err := w.Write(append(line, '\n')); err != nil {
			return fmt.Errorf("write LLB op: %w", err)
		}
	}
	return nil
}

// withSymlinks fills in the symlink actions of a FileOp, which BuildKit's
// JSON encoding of pb.FileAction leaves as {} (it has no case for them).
func withSymlinks(line []byte, op *pb.Op) ([]byte, error) {
	f := op.GetFile()
	if f == nil || !slices.ContainsFunc(f.Actions, func(a *pb.FileAction) bool { return a.GetSymlink() != nil }) {
		return line, nil
	}
	var m struct {
		Op struct {
			Op struct {
				File struct {
					Actions []map[string]any `json:"actions"`
				} `json:"file"`
			}
		}
	}
	var all map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(line, &all); err != nil {
		return nil, err
	}
	actions := m.Op.Op.File.Actions
	if len(actions) != len(f.Actions) {
		return nil, fmt.Errorf("file op: %d actions in JSON, %d in the op", len(actions), len(f.Actions))
	}
	for i, a := range f.Actions {
		if s := a.GetSymlink(); s != nil {
			actions[i]["Action"] = map[string]any{"symlink": s}
		}
	}
	all["Op"].(map[string]any)["Op"].(map[string]any)["file"].(map[string]any)["actions"] = actions
	return json.Marshal(all)
}
