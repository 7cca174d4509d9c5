// Package imagespec is the contract between the Nix side and the Go side of
// nixos2docker: one JSON document, written by the image-spec derivation of the
// NixOS module (nixos/lib/image-spec.nix) and read by the BuildKit frontend and
// by the Nix-native image assembler alike, so both faces build the same image.
//
// The Nix side writes the document without parsing anything: the derivation's
// own structured attributes are the spec (its .attrs.json is copied to $out),
// and exportReferencesGraph fills in "closure". Fields that Nix adds to
// .attrs.json for its own use (builder, args, outputs, …) are ignored here.
package imagespec

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"sort"
	"strconv"
	"strings"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/nixos2docker/nixos2docker/storepath"
)

// Version is the only spec version this code reads and writes.
const Version = 1

// MaxLayers is the most layers a spec may ask for: what nixpkgs' dockerTools
// allows too, below the 128 that Docker's overlay2 can stack.
const MaxLayers = 125

// StoreDir is the Nix store every closure path must live in.
const StoreDir = storepath.Dir

// Spec is version 1 of the image spec.
type Spec struct {
	Version int `json:"version"`
	// ImageName and ImageTag name the image (not "name": that attribute is
	// the derivation's own name in .attrs.json).
	ImageName string `json:"imageName"`
	ImageTag  string `json:"imageTag"`
	// MaxLayers bounds the number of layers, the skeleton layer included.
	MaxLayers int `json:"maxLayers"`
	// System is the Nix system the closure was built for (x86_64-linux, …).
	System string `json:"system"`
	// Toplevel is the NixOS system's toplevel store path; it is in Closure.
	Toplevel string `json:"toplevel"`
	// Closure is every store path the image holds, as exportReferencesGraph
	// gives it.
	Closure []Path `json:"closure"`
	// Config is Docker's image config (a superset of OCI's with Healthcheck).
	Config dockerspec.DockerOCIImageConfig `json:"config"`
	// Skeleton is the root filesystem outside /nix/store.
	Skeleton []Entry `json:"skeleton"`
	// NixRegistration, if set, is where the image gets the closure's
	// registration for the Nix database (the format of nix-store
	// --load-db; imagemodel writes it from Closure): an image with Nix loads
	// it at first boot. Absent for an image without Nix.
	NixRegistration string `json:"nixRegistration,omitempty"`
}

// Path is one store path of the closure.
type Path struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"`
}

// Entry types of the skeleton.
const (
	TypeDir     = "dir"
	TypeFile    = "file"
	TypeSymlink = "symlink"
)

// Entry is one file system object of the root skeleton.
type Entry struct {
	Path string `json:"path"`
	Type string `json:"type"`
	// Mode is octal, as a string ("0755", "1777"); empty means 0755 for dirs
	// and 0644 for files. Symlinks have no mode.
	Mode    string `json:"mode,omitempty"`
	Target  string `json:"target,omitempty"`
	Content string `json:"content,omitempty"`
}

// FileMode returns the entry's permission bits (with sticky/setuid bits).
func (e Entry) FileMode() uint32 {
	if e.Mode == "" {
		if e.Type == TypeDir {
			return 0o755
		}
		return 0o644
	}
	m, _ := strconv.ParseUint(e.Mode, 8, 32) // validated by Parse
	return uint32(m)
}

// Error is a problem with a spec document, naming where it is.
type Error struct {
	// Field locates the problem, e.g. "closure[3].references[0]".
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return "image spec: " + e.Msg
	}
	return "image spec: " + e.Field + ": " + e.Msg
}

func errf(field, format string, args ...any) error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Parse decodes and validates a spec document, strictly: keys are matched
// exactly and once (see scan), so Go reads the document as Nix and people
// do, and every store path follows Nix's grammar (storepath.Check). The
// version is checked first, so a future document gets a version error, not
// a confusing field error.
func Parse(data []byte) (*Spec, error) {
	version, keyErr, err := scan(data, reflect.TypeFor[Spec]())
	if err != nil {
		return nil, err
	}
	switch version {
	case "":
		return nil, errf("version", "missing (expected %d)", Version)
	case strconv.Itoa(Version):
	default:
		if _, err := strconv.Atoi(version); err != nil {
			return nil, errf("version", "%s: expected the number %d", version, Version)
		}
		return nil, errf("version", "unsupported version %s (this nixos2docker reads version %d; use a matching frontend and module)", version, Version)
	}
	if keyErr != nil {
		return nil, keyErr
	}
	var s Spec
	if err := json.Unmarshal(data, &s); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, errf(te.Field, "malformed: a %s where a %s belongs", te.Value, jsonKind(te.Type))
		}
		return nil, &Error{Msg: "malformed: " + err.Error()}
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks the invariants the layering and the image assembly rely on.
func (s *Spec) Validate() error {
	if s.Version != Version {
		return errf("version", "unsupported version %d (expected %d)", s.Version, Version)
	}
	if s.ImageName == "" {
		return errf("imageName", "missing")
	}
	if s.ImageTag == "" {
		return errf("imageTag", "missing")
	}
	if s.MaxLayers < 2 {
		return errf("maxLayers", "%d is too small: at least 2 are needed (store paths and the root skeleton)", s.MaxLayers)
	}
	if s.MaxLayers > MaxLayers {
		return errf("maxLayers", "%d is too large: at most %d (Docker's overlay2 refuses deeper images)", s.MaxLayers, MaxLayers)
	}
	if s.System == "" {
		return errf("system", "missing")
	}
	if len(s.Closure) == 0 {
		return errf("closure", "empty")
	}
	index := make(map[string]int, len(s.Closure))
	for i, p := range s.Closure {
		f := fmt.Sprintf("closure[%d]", i)
		if err := storepath.Check(p.Path); err != nil {
			return errf(f+".path", "%v", err)
		}
		if j, dup := index[p.Path]; dup {
			return errf(f+".path", "%s appears twice (also closure[%d])", p.Path, j)
		}
		index[p.Path] = i
		if p.NarSize < 0 {
			return errf(f+".narSize", "negative (%d)", p.NarSize)
		}
		if !strings.HasPrefix(p.NarHash, "sha256:") {
			return errf(f+".narHash", "%q is not a sha256 hash", p.NarHash)
		}
	}
	for i, p := range s.Closure {
		for j, r := range p.References {
			if _, ok := index[r]; !ok {
				return errf(fmt.Sprintf("closure[%d].references[%d]", i, j), "%s (referenced by %s) is not in the closure", r, p.Path)
			}
		}
	}
	if s.Toplevel == "" {
		return errf("toplevel", "missing")
	}
	if _, ok := index[s.Toplevel]; !ok {
		return errf("toplevel", "%s is not in the closure", s.Toplevel)
	}
	if len(s.Config.Entrypoint) == 0 && len(s.Config.Cmd) == 0 {
		return errf("config.Entrypoint", "missing: the image would have nothing to run")
	}
	seen := map[string]int{}
	for i, e := range s.Skeleton {
		f := fmt.Sprintf("skeleton[%d]", i)
		if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || e.Path == "/" {
			return errf(f+".path", "%q must be a clean absolute path other than /", e.Path)
		}
		if e.Path == StoreDir || strings.HasPrefix(e.Path, StoreDir+"/") {
			return errf(f+".path", "%s is inside the store; store paths come from the closure", e.Path)
		}
		if j, dup := seen[e.Path]; dup {
			return errf(f+".path", "%s appears twice (also skeleton[%d])", e.Path, j)
		}
		seen[e.Path] = i
		switch e.Type {
		case TypeDir, TypeFile:
			if e.Mode != "" {
				if m, err := strconv.ParseUint(e.Mode, 8, 32); err != nil || m > 0o7777 {
					return errf(f+".mode", "%q is not an octal mode like \"0755\"", e.Mode)
				}
			}
		case TypeSymlink:
			if e.Target == "" {
				return errf(f+".target", "missing for symlink %s", e.Path)
			}
		default:
			return errf(f+".type", "%q is not one of dir, file, symlink", e.Type)
		}
	}
	// Every parent of an entry, and /nix, must be a directory (or absent:
	// the image model adds it).
	for i, e := range s.Skeleton {
		for d := path.Dir(e.Path); d != "/"; d = path.Dir(d) {
			if j, ok := seen[d]; ok && s.Skeleton[j].Type != TypeDir {
				return errf(fmt.Sprintf("skeleton[%d].path", i), "%s is below %s, which is a %s (skeleton[%d]), not a dir", e.Path, d, s.Skeleton[j].Type, j)
			}
		}
		if e.Path == path.Dir(StoreDir) && e.Type != TypeDir {
			return errf(fmt.Sprintf("skeleton[%d].type", i), "%s holds the store: it must be a dir, not a %s", e.Path, e.Type)
		}
	}
	if r := s.NixRegistration; r != "" {
		if !path.IsAbs(r) || path.Clean(r) != r || r == "/" {
			return errf("nixRegistration", "%q must be a clean absolute path other than /", r)
		}
		if r == path.Dir(StoreDir) || r == StoreDir || strings.HasPrefix(r, StoreDir+"/") {
			return errf("nixRegistration", "%s is the store or inside it; the registration is a file outside it", r)
		}
		if j, ok := seen[r]; ok {
			return errf("nixRegistration", "%s is also skeleton[%d]", r, j)
		}
		for d := path.Dir(r); d != "/"; d = path.Dir(d) {
			if j, ok := seen[d]; ok && s.Skeleton[j].Type != TypeDir {
				return errf("nixRegistration", "%s is below %s, which is a %s (skeleton[%d]), not a dir", r, d, s.Skeleton[j].Type, j)
			}
		}
	}
	return nil
}

// Paths returns the closure's store paths, sorted.
func (s *Spec) Paths() []string {
	out := make([]string, len(s.Closure))
	for i, p := range s.Closure {
		out[i] = p.Path
	}
	sort.Strings(out)
	return out
}

// EntryPaths returns the skeleton entries' paths, sorted.
func EntryPaths(entries []Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Path
	}
	sort.Strings(out)
	return out
}
