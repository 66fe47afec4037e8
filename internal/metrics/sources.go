package metrics

import (
	"slices"
	"sync"

	"github.com/taskledger/taskledger/domain"
)

// MaxSourceLabels bounds the distinct source label values when no sources
// are configured and any valid name is accepted.
const MaxSourceLabels = 100

// OtherSource is the source label of deliveries from a source that is not
// configured, not a valid name, or past MaxSourceLabels. It cannot be a
// source's name: valid names start with a letter or digit.
const OtherSource = "_other"

// sourceLabels keeps the source label bounded: the configured names, or
// the first MaxSourceLabels valid names seen.
type sourceLabels struct {
	configured []string
	mu         sync.Mutex
	seen       map[string]bool
}

func newSourceLabels(configured []string) *sourceLabels {
	return &sourceLabels{configured: configured, seen: map[string]bool{}}
}

// label is the label value for deliveries from source.
func (s *sourceLabels) label(source string) string {
	if !domain.ValidSource(source) {
		return OtherSource
	}
	if len(s.configured) > 0 {
		if slices.Contains(s.configured, source) {
			return source
		}
		return OtherSource
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[source] {
		return source
	}
	if len(s.seen) >= MaxSourceLabels {
		return OtherSource
	}
	s.seen[source] = true
	return source
}
