package admin

import (
	"context"
	"fmt"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// ReplayRequest selects the events of one route received in [Since, Until),
// in any state, to deliver again.
type ReplayRequest struct {
	Route        string
	Since, Until time.Time
	DryRun       bool
	// Progress, if set, is called after each batch with the events handled
	// so far and the number matched at the start.
	Progress func(done, total int64)
}

// ReplayResult says what a replay did, or with DryRun would do.
type ReplayResult struct {
	DryRun  bool  `json:"dry_run"`
	Matched int64 `json:"matched"`
	// Replayed events got a new delivery job.
	Replayed int64 `json:"replayed"`
	// Revived events were dead letters; their job was given back to the
	// workers with a full retry budget, as a retry does.
	Revived int64 `json:"revived"`
	// Skipped events already have a delivery waiting or running.
	Skipped int64          `json:"skipped_already_queued"`
	Sample  []ReplayedItem `json:"sample,omitempty"`
}

// ReplayedItem is one event a replay selects.
type ReplayedItem struct {
	EventID     int64      `json:"event_id"`
	Key         string     `json:"key"`
	ReceivedAt  time.Time  `json:"received_at"`
	DeliveredAt *time.Time `json:"delivered_at"`
}

const replayBatchSize = 500

// Replay delivers stored events again, whatever happened to them before: the
// target may have acknowledged them and lost them. Each event keeps its key,
// so X-Outbox-Key is the same as the first time and the target can
// deduplicate. It works from the events table, so it needs no old job row.
// An event with a delivery already waiting is skipped, so a replay run twice
// does not queue it twice. Batches are separate transactions.
func (s *Service) Replay(ctx context.Context, req ReplayRequest) (*ReplayResult, error) {
	route, err := s.checkRoute(req.Route)
	if err != nil {
		return nil, err
	}
	if req.Since.IsZero() {
		return nil, outbox.Errorf(outbox.EINVALID, "replay needs a start time (since)")
	}
	now := s.now()
	if req.Until.IsZero() || req.Until.After(now) {
		req.Until = now
	}
	if !req.Since.Before(req.Until) {
		return nil, outbox.Errorf(outbox.EINVALID, "the window is empty: since (%s) is not before until (%s)", req.Since.Format(time.RFC3339), req.Until.Format(time.RFC3339))
	}
	w := store.ReplayWindow{Route: req.Route, Since: req.Since, Until: req.Until}
	res := &ReplayResult{DryRun: req.DryRun}
	if res.Matched, err = s.store.CountReplay(ctx, w); err != nil {
		return nil, err
	}
	budgets := s.budgets()
	afterAt, afterID := req.Since.Add(-time.Microsecond), int64(0)
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("interrupted after %d of %d events; running it again skips those already queued: %w", done, res.Matched, err)
		}
		batch, err := s.store.ReplayCandidates(ctx, w, afterAt, afterID, replayBatchSize)
		if err != nil {
			return res, err
		}
		if len(batch) == 0 {
			break
		}
		last := batch[len(batch)-1]
		afterAt, afterID = last.ReceivedAt, last.ID
		for _, ev := range batch {
			if len(res.Sample) < 10 {
				res.Sample = append(res.Sample, ReplayedItem{EventID: ev.ID, Key: ev.Key, ReceivedAt: ev.ReceivedAt, DeliveredAt: ev.DeliveredAt})
			}
		}
		if req.DryRun {
			break
		}
		out, err := s.store.ReplayEvents(ctx, s.jobs, req.Route, route.Retry.MaxAttempts, batch, budgets)
		if err != nil {
			return res, fmt.Errorf("replay stopped after %d of %d events: %w", done, res.Matched, err)
		}
		res.Replayed += out.Replayed
		res.Revived += out.Revived
		res.Skipped += out.Skipped
		done += int64(len(batch))
		if req.Progress != nil {
			req.Progress(done, res.Matched)
		}
	}
	return res, nil
}
