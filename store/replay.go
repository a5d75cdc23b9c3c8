package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// ReplayWindow is a route's events received in [Since, Until).
type ReplayWindow struct {
	Route        string
	Since, Until time.Time
}

// ReplayCandidate is an event a replay selects.
type ReplayCandidate struct {
	ID          int64
	Key         string
	ReceivedAt  time.Time
	DeliveredAt *time.Time
}

// CountReplay counts the events in w.
func (s *Store) CountReplay(ctx context.Context, w ReplayWindow) (int64, error) {
	n, err := s.q.CountReplay(ctx, dbsqlc.CountReplayParams{Route: w.Route, Since: w.Since, Until: w.Until})
	if err != nil {
		return 0, fmt.Errorf("error counting events: %w", err)
	}
	return n, nil
}

// ReplayCandidates returns up to max events of w in (received_at, id)
// order after the event (afterAt, afterID).
func (s *Store) ReplayCandidates(ctx context.Context, w ReplayWindow, afterAt time.Time, afterID int64, max int) ([]ReplayCandidate, error) {
	rows, err := s.q.ReplayBatch(ctx, dbsqlc.ReplayBatchParams{
		Route: w.Route, Since: w.Since, Until: w.Until, AfterReceivedAt: afterAt, AfterID: afterID, MaxRows: int32(max),
	})
	if err != nil {
		return nil, fmt.Errorf("error selecting events: %w", err)
	}
	out := make([]ReplayCandidate, len(rows))
	for i, r := range rows {
		out[i] = ReplayCandidate{ID: r.ID, Key: r.Key, ReceivedAt: r.ReceivedAt, DeliveredAt: r.DeliveredAt}
	}
	return out, nil
}

// ReplayOutcome counts what ReplayEvents did.
type ReplayOutcome struct {
	// Replayed events got a new delivery job.
	Replayed int64
	// Revived events were dead letters; their job was retried with the
	// route's full budget.
	Revived int64
	// Skipped events already had a delivery waiting or running.
	Skipped int64
}

// ReplayEvents delivers events of route again, in one transaction: an event
// with a dead job gets that job back with its route's full budget, one
// with a delivery waiting or running is skipped, and any other gets a new
// delivery job with maxAttempts.
func (s *Store) ReplayEvents(ctx context.Context, jobs JobInserter, route string, maxAttempts int, events []ReplayCandidate, budgets []RetryBudget) (ReplayOutcome, error) {
	var out ReplayOutcome
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		q := s.q.WithTx(tx)
		ids := make([]int64, len(events))
		for i, ev := range events {
			ids[i] = ev.ID
		}
		open, err := q.OpenJobsForEvents(ctx, ids)
		if err != nil {
			return fmt.Errorf("error loading jobs: %w", err)
		}
		active, dead := map[int64]bool{}, map[int64]int64{}
		for _, j := range open {
			switch rivertype.JobState(j.State) {
			case rivertype.JobStateDiscarded, rivertype.JobStateCancelled:
				dead[j.EventID] = j.ID // the newest, as rows come in id order
			default:
				active[j.EventID] = true
			}
		}
		var inserts []river.InsertManyParams
		var revive []int64
		for _, ev := range events {
			switch {
			case active[ev.ID]:
				out.Skipped++
			case dead[ev.ID] != 0:
				revive = append(revive, dead[ev.ID])
			default:
				inserts = append(inserts, river.InsertManyParams{
					Args:       outbox.DeliverArgs{EventID: ev.ID, Route: route, Key: ev.Key, ReceivedAt: ev.ReceivedAt},
					InsertOpts: &river.InsertOpts{Queue: route, MaxAttempts: maxAttempts},
				})
			}
		}
		if len(inserts) > 0 {
			if _, err := jobs.InsertManyTx(ctx, tx, inserts); err != nil {
				return fmt.Errorf("error enqueuing deliveries: %w", err)
			}
		}
		out.Replayed = int64(len(inserts))
		out.Revived, err = retryJobs(ctx, q, revive, budgets)
		return err
	})
	if err != nil {
		return ReplayOutcome{}, err
	}
	return out, nil
}
