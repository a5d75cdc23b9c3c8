package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// PauseState is where a route's pause stands. River keeps it in its queue
// row, which the workers obey; webhook-outbox keeps a copy in route_pauses,
// from which a queue row that River's queue cleaner deleted is restored.
type PauseState struct {
	// QueueExists reports whether River's queue row exists.
	QueueExists bool
	// QueuePausedAt is River's paused_at; nil when the queue runs.
	QueuePausedAt *time.Time
	// RecordedAt is when route_pauses recorded the pause; nil when it
	// records none.
	RecordedAt *time.Time
}

// PauseStates returns the pause state of each of routes.
func (s *Store) PauseStates(ctx context.Context, routes []string) (map[string]*PauseState, error) {
	out := make(map[string]*PauseState, len(routes))
	for _, r := range routes {
		out[r] = &PauseState{}
	}
	queues, err := s.q.QueuePauseStates(ctx, routes)
	if err != nil {
		return nil, fmt.Errorf("error reading River's queues: %w", err)
	}
	for _, q := range queues {
		if st := out[q.Name]; st != nil {
			st.QueueExists, st.QueuePausedAt = true, q.PausedAt
		}
	}
	pauses, err := s.q.ListRoutePauses(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading pauses: %w", err)
	}
	for _, p := range pauses {
		if st := out[p.Route]; st != nil {
			st.RecordedAt = &p.PausedAt
		}
	}
	return out, nil
}

// SetPaused records a route's pause or resume in route_pauses and, in the
// same transaction, has queue apply it to River's queue row (which must
// exist: River refuses to pause a queue it has never run, so it is created
// first).
func (s *Store) SetPaused(ctx context.Context, route string, paused bool, queue func(ctx context.Context, tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		if err := q.EnsureQueueRow(ctx, dbsqlc.EnsureQueueRowParams{Name: route}); err != nil {
			return fmt.Errorf("error creating queue %s: %w", route, err)
		}
		if err := recordPause(ctx, q, route, paused); err != nil {
			return err
		}
		return queue(ctx, tx)
	})
}

// EnsureQueueRow creates River's queue row for route if it is missing,
// paused at pausedAt when that is set.
func (s *Store) EnsureQueueRow(ctx context.Context, route string, pausedAt *time.Time) error {
	if err := s.q.EnsureQueueRow(ctx, dbsqlc.EnsureQueueRowParams{Name: route, PausedAt: pausedAt}); err != nil {
		return fmt.Errorf("error creating queue %s: %w", route, err)
	}
	return nil
}

// RecordPause records in route_pauses that route is paused, or not.
func (s *Store) RecordPause(ctx context.Context, route string, paused bool) error {
	return recordPause(ctx, s.q, route, paused)
}

func recordPause(ctx context.Context, q *dbsqlc.Queries, route string, paused bool) error {
	if paused {
		if err := q.SetRoutePaused(ctx, route); err != nil {
			return fmt.Errorf("error recording the pause of %s: %w", route, err)
		}
		return nil
	}
	if err := q.ClearRoutePaused(ctx, route); err != nil {
		return fmt.Errorf("error recording the resume of %s: %w", route, err)
	}
	return nil
}

// DeliveredSince counts each route's successful deliveries since a time,
// from completed jobs: River keeps them for completed_job_retention (a day
// by default).
func (s *Store) DeliveredSince(ctx context.Context, since time.Time) (map[string]int64, error) {
	rows, err := s.q.DeliveredSinceByRoute(ctx, &since)
	if err != nil {
		return nil, fmt.Errorf("error counting deliveries: %w", err)
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.Route] = r.Delivered
	}
	return out, nil
}
