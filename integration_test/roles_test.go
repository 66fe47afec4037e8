package integration_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/taskledger/taskledger/domain"
	"github.com/taskledger/taskledger/internal/config"
)

// withRole is b's configuration under another role, opened as a replica on
// the same database and stream.
func (b *bundle) withRole(t *testing.T, role string) *bundle {
	t.Helper()
	cfg := b.cfg
	cfg.Role = role
	r := *b
	r.cfg = cfg
	r.svc, r.url = openService(t, cfg)
	return &r
}

func TestIngestAndProjectRolesSplitTheWork(t *testing.T) {
	t.Parallel()
	ingester := setup(t, func(c *config.Config) { c.Role = config.RoleIngest })
	projector := ingester.withRole(t, config.RoleProject)
	bodies, want := shuffledCompletions("roles", 6, 3, 2)

	ingester.svc.Start() // an ingest replica runs no consumers
	projector.svc.Start()
	eventually(t, "the project replica to take every projection", func() bool {
		return !slices.Contains(activeReplicas(t, projector.svc), 0)
	})
	if counts := activeReplicas(t, ingester.svc); slices.Contains(counts, 1) {
		t.Errorf("the ingest replica runs consumers: %v", counts)
	}

	r := projector.post(t, "tallyfy", completion("roles-x", "2024-01-15T10:30:00Z"))
	if r.Status != http.StatusNotFound || r.Error.Code != "not_ingesting" {
		t.Errorf("webhook to the project replica: %+v, want 404 not_ingesting", r)
	}
	if n := ingester.messages(t); n != 0 {
		t.Fatalf("the refused webhook stored %d events", n)
	}

	ingester.ingest(t, bodies)
	// The project replica applies what the ingest replica stored, and both
	// answer queries.
	ingester.checkProjectedExactlyOnce(t, want)
	if h := ingester.history(t, "roles-00", domain.PolicyAll); len(h.Completions) == 0 {
		t.Errorf("the ingest replica answers no history for roles-0: %+v", h)
	}
}
