package store

import (
	"context"
	"encoding/json"
	"errors"
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

// MetadataReplayID is the delivery job metadata key naming the replay that
// queued or revived the job.
const MetadataReplayID = "replay_id"

// Replay is a replay's record (outbox_replays): its window, fixed by its
// first run, and how far it got.
type Replay struct {
	ID     string
	Window ReplayWindow
	// AfterReceivedAt and AfterID are the last event handled, in the
	// (received_at, id) order replays walk.
	AfterReceivedAt time.Time
	AfterID         int64
	// Finished is set once a run reached the end of the window.
	Finished bool
}

func replayFrom(r dbsqlc.OutboxReplay) *Replay {
	return &Replay{
		ID: r.ID, Window: ReplayWindow{Route: r.Route, Since: r.Since, Until: r.Until, Key: deref(r.Key)},
		AfterReceivedAt: r.AfterReceivedAt, AfterID: r.AfterID, Finished: r.FinishedAt != nil,
	}
}

// StartReplay records replay id over w, unless a replay of that id exists,
// and returns the record as stored: a new one, or the existing one, whose
// window may differ from w.
func (s *Store) StartReplay(ctx context.Context, id string, w ReplayWindow) (*Replay, error) {
	if err := s.q.StartReplay(ctx, dbsqlc.StartReplayParams{
		ID: id, Route: w.Route, Since: w.Since, Until: w.Until, Key: optString(w.Key), AfterReceivedAt: w.Since.Add(-time.Microsecond),
	}); err != nil {
		return nil, fmt.Errorf("error recording replay %s: %w", id, err)
	}
	return s.Replay(ctx, id)
}

// Replay returns the record of replay id, or an ENOTFOUND error.
func (s *Store) Replay(ctx context.Context, id string) (*Replay, error) {
	r, err := s.q.GetReplay(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, outbox.Errorf(outbox.ENOTFOUND, "no replay %q (replays untouched for event_retention are forgotten)", id)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading replay %s: %w", id, err)
	}
	return replayFrom(r), nil
}

// CountReplay counts the events in w.
func (s *Store) CountReplay(ctx context.Context, w ReplayWindow) (int64, error) {
	n, err := s.q.CountReplay(ctx, dbsqlc.CountReplayParams{Route: w.Route, Since: w.Since, Until: w.Until, Key: optString(w.Key)})
	if err != nil {
		return 0, fmt.Errorf("error counting events: %w", err)
	}
	return n, nil
}

// CountReplayed counts the events of r's window that r has handled.
func (s *Store) CountReplayed(ctx context.Context, r *Replay) (int64, error) {
	n, err := s.q.CountReplayThrough(ctx, dbsqlc.CountReplayThroughParams{
		Route: r.Window.Route, Since: r.Window.Since, Until: r.Window.Until, Key: optString(r.Window.Key),
		ThroughReceivedAt: r.AfterReceivedAt, ThroughID: r.AfterID,
	})
	if err != nil {
		return 0, fmt.Errorf("error counting replayed events: %w", err)
	}
	return n, nil
}

// ReplayCandidates returns up to max events of w in (received_at, id)
// order after the event (afterAt, afterID).
func (s *Store) ReplayCandidates(ctx context.Context, w ReplayWindow, afterAt time.Time, afterID int64, max int) ([]ReplayCandidate, error) {
	return replayCandidates(ctx, s.q, w, afterAt, afterID, max)
}

func replayCandidates(ctx context.Context, q *dbsqlc.Queries, w ReplayWindow, afterAt time.Time, afterID int64, max int) ([]ReplayCandidate, error) {
	rows, err := q.ReplayBatch(ctx, dbsqlc.ReplayBatchParams{
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

// ReplayOutcome counts what a batch of a replay did.
type ReplayOutcome struct {
	// Handled is the number of events of the window the batch went through.
	Handled int64
	// Replayed events got a new delivery job.
	Replayed int64
	// Revived events were dead letters; their job was retried with the
	// route's full budget.
	Revived int64
	// Skipped events already had a delivery waiting or running.
	Skipped int64
	// Done is true when the replay has reached the end of its window.
	Done bool
}

// ReplayNextBatch handles the next batch of up to max events of replay id,
// after the last one it handled, in one transaction:
//
//   - it locks the replay's row, so that runs of the same replay take
//     batches in turn and never handle an event twice;
//   - it locks the batch's events, then looks at their jobs: a concurrent
//     replay (of another id) or retry that queued one of them has
//     committed by then, and is seen;
//   - an event with a dead job gets that job back with its route's full
//     budget; one with a delivery waiting or running is skipped; any other
//     gets a new delivery job with maxAttempts. Jobs are tagged with the
//     replay id (metadata replay_id);
//   - it moves the replay's cursor past the batch.
func (s *Store) ReplayNextBatch(ctx context.Context, jobs JobInserter, id string, maxAttempts int, budgets []RetryBudget, max int) (ReplayOutcome, error) {
	var out ReplayOutcome
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = ReplayOutcome{}
		q := s.q.WithTx(tx)
		row, err := q.LockReplay(ctx, id)
		if err != nil {
			return fmt.Errorf("error locking replay %s: %w", id, err)
		}
		r := replayFrom(row)
		events, err := replayCandidates(ctx, q, r.Window, r.AfterReceivedAt, r.AfterID, max)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			out.Done = true
			return q.FinishReplay(ctx, id)
		}
		last := events[len(events)-1]
		out.Handled = int64(len(events))

		ids := make([]int64, len(events))
		receivedAts := make([]time.Time, len(events))
		values := make([]string, len(events))
		for i, ev := range events {
			ids[i], receivedAts[i], values[i] = ev.ID, ev.ReceivedAt, ev.OrderingKey
		}
		lockedIDs, err := q.LockEvents(ctx, dbsqlc.LockEventsParams{EventIds: ids, ReceivedAts: receivedAts})
		if err != nil {
			return fmt.Errorf("error locking events: %w", err)
		}
		locked := make(map[int64]bool, len(lockedIDs))
		for _, id := range lockedIDs {
			locked[id] = true
		}
		// The ordering keys' locks, after the events' (the order outbox's
		// completer takes them in too) and before looking at the jobs, so
		// the keys cannot change until the commit.
		if err := lockOrderingKeys(ctx, q, r.Window.Route, values); err != nil {
			return err
		}
		// Read after the locks, so this sees every job committed by
		// whoever held them.
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
		metadata, _ := json.Marshal(map[string]string{MetadataReplayID: id})
		var steps []replayStep
		for _, ev := range events {
			switch {
			case !locked[ev.ID]:
				// Gone since it was selected (dead-letter expiry, say).
			case active[ev.ID]:
				out.Skipped++
			case dead[ev.ID] != 0:
				steps = append(steps, replayStep{ev: ev, revive: dead[ev.ID]})
			default:
				steps = append(steps, replayStep{ev: ev, insert: &river.InsertManyParams{
					Args:       outbox.DeliverArgs{EventID: ev.ID, Route: r.Window.Route, Key: ev.Key, ReceivedAt: ev.ReceivedAt, OrderingKey: ev.OrderingKey},
					InsertOpts: &river.InsertOpts{Queue: r.Window.Route, MaxAttempts: maxAttempts, Metadata: metadata},
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
			n, err := retryJobs(ctx, q, revive, budgets, id)
			if err != nil {
				return err
			}
			out.Replayed += int64(len(inserts))
			out.Revived += n
		}
		return q.AdvanceReplay(ctx, dbsqlc.AdvanceReplayParams{
			ID: id, AfterReceivedAt: last.ReceivedAt, AfterID: last.ID,
			Replayed: out.Replayed, Revived: out.Revived, Skipped: out.Skipped,
		})
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
