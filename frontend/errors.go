package frontend

import (
	"errors"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/solver/pb"
	"github.com/nixos2docker/nixos2docker/nixfile"
)

// lineRange is the whole of one 1-based line of the file, from a 1-based
// column, in BuildKit's range form.
func lineRange(data []byte, line, col int) *pb.Range {
	lines := strings.Split(string(data), "\n")
	end := 0
	if line >= 1 && line <= len(lines) {
		end = len(strings.TrimRight(lines[line-1], "\r"))
	}
	if col < 1 {
		col = 1
	}
	return &pb.Range{
		Start: &pb.Position{Line: int32(line), Character: int32(col - 1)},
		End:   &pb.Position{Line: int32(line), Character: int32(end)},
	}
}

// withLocation attaches the location of a *nixfile.Error inside err to the
// source map, the way the Dockerfile frontend attaches its parser errors, so
// buildx prints the offending line under the message.
func withLocation(err error, sm *llb.SourceMap) error {
	var fe *nixfile.Error
	if err == nil || sm == nil || !errors.As(err, &fe) || fe.Line < 1 {
		return err
	}
	return errdefs.WithSource(err, &errdefs.Source{
		Info: &pb.SourceInfo{
			Data:       sm.Data,
			Filename:   sm.Filename,
			Language:   sm.Language,
			Definition: sm.Definition.ToPB(),
		},
		Ranges: []*pb.Range{lineRange(sm.Data, fe.Line, fe.Column)},
	})
}

// bodyLocation points the Nix step at the first line of the file's body (or
// of the file), so a failure of the step itself is shown against the user's
// file; errors Nix locates more precisely are mapped by nixeval.MapError.
func bodyLocation(sm *llb.SourceMap, f *nixfile.File) llb.ConstraintsOpt {
	if sm == nil {
		return nil
	}
	line := 1
	if f != nil && f.BodyLine > 0 {
		line = f.BodyLine
	}
	return sm.Location([]*pb.Range{lineRange(sm.Data, line, 1)})
}
