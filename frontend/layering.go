package frontend

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/util/apicaps"
	"github.com/nixos2docker/nixos2docker/frontend/nix2llb"
	"github.com/nixos2docker/nixos2docker/nixfile"
)

// daemonJSON is what turns on Docker's containerd image store, whose
// built-in BuildKit has MergeOp.
const daemonJSON = `{"features": {"containerd-snapshotter": true}} in /etc/docker/daemon.json, then restart dockerd`

// chooseLayering picks the best layering (nix2llb.Layerings) the builder's
// LLB capabilities allow. It looks only at the capabilities the gateway
// announced, so it decides before any solve: a builder that cannot make the
// image fails before the Nix step, not after it. refused says why each better
// layering was not taken.
func chooseLayering(ctx context.Context, caps apicaps.CapSet) (l nix2llb.Layering, refused []error, err error) {
	for _, l := range nix2llb.Layerings {
		need, err := l.Caps(ctx)
		if err != nil {
			return 0, nil, err
		}
		if err := supportsAll(caps, need); err != nil {
			refused = append(refused, fmt.Errorf("%s layers: %w", l, err))
			continue
		}
		return l, refused, nil
	}
	return 0, refused, errors.Join(refused...)
}

// supportsAll returns the first capability of need the set lacks, as
// BuildKit words it (with the server's reason when it disabled it).
func supportsAll(caps apicaps.CapSet, need []apicaps.CapID) error {
	for _, c := range need {
		if err := caps.Supports(c); err != nil {
			return err
		}
	}
	return nil
}

// layering decides how this build combines the image's layers, from the
// gateway's capabilities. A builder that cannot make the layers at all
// fails here, at the `# syntax=` line, saying what to do; one that can only
// stack them gets a warning there, saying what that costs.
func (b *build) layering(ctx context.Context) (nix2llb.Layering, error) {
	l, refused, err := chooseLayering(ctx, b.bc.BuildOpts().LLBCaps)
	line := syntaxLine(b.file)
	if err != nil {
		return 0, &nixfile.Error{File: b.src.Filename, Line: line, Column: 1, Msg: unsupportedMessage(refused)}
	}
	if l != nix2llb.Merged && b.src.Warn != nil {
		b.src.Warn(ctx, fallbackMessage(l, refused), client.WarnOpts{
			Range: []*pb.Range{lineRange(b.src.Data, line, 1)},
		})
	}
	return l, nil
}

// fallbackMessage is the one line a build that could not take the best
// layering prints: what it took, why, what it costs, what to do.
func fallbackMessage(l nix2llb.Layering, refused []error) string {
	why := reasons(refused)
	return fmt.Sprintf("layers %s: this builder cannot merge them (%s); %s. For layers cached on their own, "+
		"enable Docker's containerd image store (%s) or use a BuildKit builder of its own (`docker buildx create --use`)",
		l, strings.Join(why, "; "), l.Cost(), daemonJSON)
}

// unsupportedMessage says why no layering is possible and what to do.
func unsupportedMessage(refused []error) string {
	why := reasons(refused)
	return fmt.Sprintf("this builder cannot make the image's layers (%s): use a builder running a current BuildKit "+
		"(`docker buildx create --use`), or upgrade Docker Engine and enable its containerd image store (%s)",
		strings.Join(why, "; "), daemonJSON)
}

// reasons are the errors' messages with their spacing tidied (BuildKit's
// capability errors leave a double space where a capability has no name).
func reasons(errs []error) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = strings.Join(strings.Fields(e.Error()), " ")
	}
	return out
}

// syntaxLine is the line of the file's `# syntax=` directive, where
// messages about the builder the file selected are shown; 1 without one.
func syntaxLine(f *nixfile.File) int {
	if f != nil {
		if d := f.Directive(nixfile.KeySyntax); d != nil {
			return d.Line
		}
	}
	return 1
}

// capsWithout is this BuildKit's full capability set with some disabled,
// with a reason, the way a builder announces what it refuses (Docker's
// classic image store disables mergeop "only enabled with containerd image
// store backend"). It stands for such a builder in the debug command and the
// tests.
func capsWithout(reason string, ids ...apicaps.CapID) apicaps.CapSet {
	all := pb.Caps.All()
	for _, c := range all {
		for _, id := range ids {
			if c.ID == string(id) {
				c.Enabled = false
				c.DisabledReasonMsg = reason
			}
		}
	}
	return pb.Caps.CapSet(all)
}
