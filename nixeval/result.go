package nixeval

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// What the builder stage leaves in OutDir: plain files, so that run.sh
// writes no JSON (Nix writes targets.json, and the image spec is the
// derivation's own); Go reads them into a Result.
const (
	StatusFile  = "status"       // "ok" or "error"
	LogFile     = "log"          // the evaluation's log, when the status is "error"
	SpecFile    = "spec.json"    // the image spec, when a build's status is "ok"
	ClosureFile = "closure"      // the spec's closure as Nix knows it, one store path a line, with it
	TargetsFile = "targets.json" // the flake's nixosConfigurations, when a listing's status is "ok"
)

// Result is what the builder stage reports.
type Result struct {
	Status  string   // StatusOK or StatusError
	Spec    string   // the path of the image spec in the stage (a build)
	Closure []string // the spec's closure as Nix knows it (a build): what a layer may copy
	Log     string   // the evaluation's log (StatusError)
	Targets []string // the flake's nixosConfigurations (a listing)
}

// Result statuses.
const (
	StatusOK    = "ok"
	StatusError = "error"
)

// ReadResult reads what the stage wrote into OutDir through read, which
// returns a file of the stage's filesystem by absolute path.
func (inv *Invocation) ReadResult(read func(name string) ([]byte, error)) (*Result, error) {
	file := func(name string) ([]byte, error) {
		data, err := read(path.Join(inv.OutDir, name))
		if err != nil {
			return nil, fmt.Errorf("reading the builder stage's %s: %w", name, err)
		}
		return data, nil
	}
	status, err := file(StatusFile)
	if err != nil {
		return nil, err
	}
	r := &Result{Status: strings.TrimSpace(string(status))}
	switch r.Status {
	case StatusOK:
		switch inv.Mode {
		case ModeBuild:
			r.Spec = path.Join(inv.OutDir, SpecFile)
			data, err := file(ClosureFile)
			if err != nil {
				return nil, err
			}
			r.Closure = strings.Fields(string(data))
		case ModeTargets:
			data, err := file(TargetsFile)
			if err != nil {
				return nil, err
			}
			if err := json.Unmarshal(data, &r.Targets); err != nil {
				return nil, fmt.Errorf("reading the builder stage's %s: %w", TargetsFile, err)
			}
		}
	case StatusError:
		data, err := file(LogFile)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(string(data)) == "" {
			return nil, fmt.Errorf("reading the builder stage's result: status error with an empty log")
		}
		r.Log = string(data)
	default:
		return nil, fmt.Errorf("reading the builder stage's result: unknown status %q", r.Status)
	}
	return r, nil
}
