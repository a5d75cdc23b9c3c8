package store

import (
	"context"
	"fmt"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// BacklogRow is one route's unfinished delivery jobs in one River state.
type BacklogRow struct {
	Route string
	// State is a River job state: available, pending, retryable, running
	// or scheduled (which includes snoozed deliveries).
	State string
	Jobs  int64
	// OldestAge is how long ago, in seconds, the oldest of these jobs was
	// created: at intake, or at a replay.
	OldestAge float64
}

// DeliveryStats is the database-wide state of deliveries, behind the
// backlog and dead-letter gauges.
type DeliveryStats struct {
	Backlog []BacklogRow
	// DeadLetters counts the rows of the dead_letters view per route.
	DeadLetters map[string]int64
	// BlockedKeys counts the blocked ordering keys of ordered routes.
	BlockedKeys map[string]outbox.BlockedKeyCounts
}

// DeliveryStats reads the backlog and the dead-letter counts. It is meant
// to run on a timer, not per request: see sql/queries/stats.sql for its cost.
func (s *Store) DeliveryStats(ctx context.Context) (*DeliveryStats, error) {
	backlog, err := s.q.DeliveryBacklog(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading the delivery backlog: %w", err)
	}
	dead, err := s.q.DeadLetterCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("error counting dead letters: %w", err)
	}
	blocked, err := blockedKeyCounts(ctx, s.q)
	if err != nil {
		return nil, err
	}
	st := &DeliveryStats{Backlog: make([]BacklogRow, 0, len(backlog)), DeadLetters: make(map[string]int64, len(dead)), BlockedKeys: blocked}
	for _, r := range backlog {
		st.Backlog = append(st.Backlog, BacklogRow{Route: r.Route, State: r.State, Jobs: r.Jobs, OldestAge: r.OldestAgeSeconds})
	}
	for _, r := range dead {
		st.DeadLetters[r.Route] = r.DeadLetters
	}
	return st, nil
}
