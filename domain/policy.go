package domain

import "fmt"

// Policy is a way to read a task's completion history.
type Policy string

// The three policies: every distinct completion, the earliest, the latest.
const (
	PolicyAll    Policy = "all"    // every distinct completion, by completed_at
	PolicyFirst  Policy = "first"  // the earliest completion
	PolicyLatest Policy = "latest" // the most recent completion
)

// Policies lists every policy, in display order.
var Policies = []Policy{PolicyAll, PolicyFirst, PolicyLatest}

// ParsePolicy accepts "all", "first" or "latest"; "" means all.
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return PolicyAll, nil
	}
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown policy %q: want all, first or latest", s)
}
