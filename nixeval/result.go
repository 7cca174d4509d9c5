package nixeval

import (
	"encoding/json"
	"fmt"
)

// Result is result.json, what the builder stage reports.
type Result struct {
	Status  string   `json:"status"` // "ok" | "error"
	Spec    string   `json:"spec,omitempty"`
	Log     string   `json:"log,omitempty"`
	Targets []string `json:"targets,omitempty"`
}

// Result statuses.
const (
	StatusOK    = "ok"
	StatusError = "error"
)

// ReadResult decodes and checks result.json.
func ReadResult(data []byte) (*Result, error) {
	var r Result
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("reading the builder stage's result.json: %w", err)
	}
	switch r.Status {
	case StatusOK:
	case StatusError:
		if r.Log == "" {
			return nil, fmt.Errorf("reading the builder stage's result.json: status error without a log")
		}
	default:
		return nil, fmt.Errorf("reading the builder stage's result.json: unknown status %q", r.Status)
	}
	return &r, nil
}
