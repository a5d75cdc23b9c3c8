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

// ReplayWindow is a route's events received in [Since, Until); with Key,
// only the event of that key.
type ReplayWindow struct {
	Route        string
	Since, Until time.Time
	Key          string
}

// ReplayCandidate is an event a replay selects.
type ReplayCandidate struct {
	ID          int64
	Key         string
	ReceivedAt  time.Time
	DeliveredAt *time.Time
	// OrderingKey is the event's ordering value, "" for an unordered one.
	OrderingKey string
}

// CountReplay counts the events in w.
func (s *Store) CountReplay(ctx context.Context, w ReplayWindow) (int64, error) {
	n, err := s.q.CountReplay(ctx, dbsqlc.CountReplayParams{Route: w.Route, Since: w.Since, Until: w.Until, Key: optString(w.Key)})
	if err != nil {
		return 0, fmt.Errorf("error counting events: %w", err)
	}
	return n, nil
}

// ReplayCandidates returns up to max events of w in (received_at, id)
// order after the event (afterAt, afterID).
func (s *Store) ReplayCandidates(ctx context.Context, w ReplayWindow, afterAt time.Time, afterID int64, max int) ([]ReplayCandidate, error) {
	rows, err := s.q.ReplayBatch(ctx, dbsqlc.ReplayBatchParams{
		Route: w.Route, Since: w.Since, Until: w.Until, Key: optString(w.Key), AfterReceivedAt: afterAt, AfterID: afterID, MaxRows: int32(max),
	})
	if err != nil {
		return nil, fmt.Errorf("error selecting events: %w", err)
	}
	out := make([]ReplayCandidate, len(rows))
	for i, r := range rows {
		out[i] = ReplayCandidate{ID: r.ID, Key: r.Key, ReceivedAt: r.ReceivedAt, DeliveredAt: r.DeliveredAt, OrderingKey: deref(r.OrderingKey)}
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
		values := make([]string, len(events))
		for i, ev := range events {
			ids[i], values[i] = ev.ID, ev.OrderingKey
		}
		// The ordering keys' locks come before looking at the jobs, so the
		// keys cannot change until the commit.
		if err := lockOrderingKeys(ctx, q, route, values); err != nil {
			return err
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
		var steps []replayStep
		for _, ev := range events {
			switch {
			case active[ev.ID]:
				out.Skipped++
			case dead[ev.ID] != 0:
				steps = append(steps, replayStep{ev: ev, revive: dead[ev.ID]})
			default:
				steps = append(steps, replayStep{ev: ev, insert: &river.InsertManyParams{
					Args:       outbox.DeliverArgs{EventID: ev.ID, Route: route, Key: ev.Key, ReceivedAt: ev.ReceivedAt, OrderingKey: ev.OrderingKey},
					InsertOpts: &river.InsertOpts{Queue: route, MaxAttempts: maxAttempts},
				}})
			}
		}
		// The first event of each ordering key is queued first, so that it,
		// not a later one, becomes the key's head if the key is free; the
		// others then wait behind it in event id order.
		for _, phase := range replayPhases(steps) {
			inserts, revive := phase.split()
			if len(inserts) > 0 {
				if err := sequenceJobs(ctx, q, inserts); err != nil {
					return err
				}
				if _, err := jobs.InsertManyTx(ctx, tx, inserts); err != nil {
					return fmt.Errorf("error enqueuing deliveries: %w", err)
				}
			}
			n, err := retryJobs(ctx, q, revive, budgets)
			if err != nil {
				return err
			}
			out.Replayed += int64(len(inserts))
			out.Revived += n
		}
		return nil
	})
	if err != nil {
		return ReplayOutcome{}, err
	}
	return out, nil
}

// replayStep is what a replay does with one event: insert a new delivery
// job, or revive its dead one.
type replayStep struct {
	ev     ReplayCandidate
	insert *river.InsertManyParams
	revive int64
}

type replaySteps []replayStep

func (steps replaySteps) split() (inserts []river.InsertManyParams, revive []int64) {
	for _, s := range steps {
		if s.insert != nil {
			inserts = append(inserts, *s.insert)
		} else {
			revive = append(revive, s.revive)
		}
	}
	return inserts, revive
}

// replayPhases orders a replay batch's steps for ordered delivery: the
// first phase holds the unordered events and the lowest event id of each
// ordering key, the second the key's later events, which then find the key
// busy and wait (a new job as pending, a revived one by the update trigger)
// to be promoted in event id order.
func replayPhases(steps []replayStep) [2]replaySteps {
	first := map[string]int64{} // ordering value -> lowest event id
	for _, s := range steps {
		if v := s.ev.OrderingKey; v != "" {
			if id, ok := first[v]; !ok || s.ev.ID < id {
				first[v] = s.ev.ID
			}
		}
	}
	var phases [2]replaySteps
	for _, s := range steps {
		if v := s.ev.OrderingKey; v == "" || first[v] == s.ev.ID {
			phases[0] = append(phases[0], s)
		} else {
			phases[1] = append(phases[1], s)
		}
	}
	return phases
}
