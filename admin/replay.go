package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// ReplayRequest selects the events of one route received in [Since, Until),
// in any state, to deliver again; or, with Key, that one event; or names a
// replay to resume.
type ReplayRequest struct {
	Route        string
	Since, Until time.Time
	// Key names one event of Route; Since and Until are then ignored. Each
	// replay of one event is a new replay (unless ReplayID names one): it
	// sends the event again unless a delivery of it is waiting or running.
	Key    string
	DryRun bool
	// ReplayID names the replay. Empty, it is derived from the route and
	// the window as given (an omitted Until counts as "open"), so the same
	// request made again is the same replay. A new name starts a new replay
	// of the same window, which sends its events again.
	ReplayID string
	// Resume continues the replay a NextCursor names, over the window its
	// first run fixed; Route, Since and Until may then be left out.
	Resume string
	// Progress, if set, is called after each batch with the events of the
	// window handled so far (by this run and earlier ones) and the number
	// in the window.
	Progress func(done, total int64)
}

// ReplayResult says what a replay did, or with DryRun would do.
type ReplayResult struct {
	// ReplayID names the replay; its jobs carry it in their metadata.
	ReplayID string `json:"replay_id"`
	DryRun   bool   `json:"dry_run"`
	// Route, Since and Until are the replay's window, fixed by its first
	// run.
	Route string    `json:"route"`
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Matched is the number of events in the window.
	Matched int64 `json:"matched"`
	// AlreadyReplayed events were handled by earlier runs of this replay,
	// and are not sent again.
	AlreadyReplayed int64 `json:"already_replayed"`
	// Replayed events got a new delivery job.
	Replayed int64 `json:"replayed"`
	// Revived events were dead letters; their job was given back to the
	// workers with a full retry budget, as a retry does.
	Revived int64 `json:"revived"`
	// Skipped events already have a delivery waiting or running.
	Skipped int64 `json:"skipped_already_queued"`
	// NextCursor is set when the replay did not reach the end of its
	// window: pass it as Resume (outbox replay --resume, or "resume" in the
	// API) to continue.
	NextCursor string         `json:"next_cursor,omitempty"`
	Sample     []ReplayedItem `json:"sample,omitempty"`
}

// ReplayedItem is one event a replay selects.
type ReplayedItem struct {
	EventID     int64      `json:"event_id"`
	Key         string     `json:"key"`
	ReceivedAt  time.Time  `json:"received_at"`
	DeliveredAt *time.Time `json:"delivered_at"`
}

const replayBatchSize = 500

var replayIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// defaultReplayID names the replay of a route's window as an operator gave
// it, so that the same request made again resumes it.
func defaultReplayID(route string, since, until time.Time) string {
	end := "open"
	if !until.IsZero() {
		end = until.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
	}
	sum := sha256.Sum256([]byte(route + "\x1f" + since.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano) + "\x1f" + end))
	return "replay-" + hex.EncodeToString(sum[:6])
}

// Replay delivers stored events again, whatever happened to them before: the
// target may have acknowledged them and lost them. Each event keeps its key,
// so X-Outbox-Key is the same as the first time and the target can
// deduplicate. It works from the events table, so it needs no old job row.
//
// A replay is named (ReplayID) and remembered with its progress. Running it
// again (the same request, or Resume with its cursor) continues after the
// last event it handled, over the window its first run fixed: an event it
// replayed is not sent again, even once delivered. Runs of the same replay
// at the same time share the work. An event with a delivery already waiting
// or running is skipped, whoever queued it, so concurrent replays of other
// names never queue an event twice either. To send a window again on
// purpose, name a new replay. Batches are separate transactions.
func (s *Service) Replay(ctx context.Context, req ReplayRequest) (*ReplayResult, error) {
	rp, err := s.replayFor(ctx, req)
	if err != nil {
		return nil, err
	}
	route, err := s.checkRoute(rp.Window.Route)
	if err != nil {
		return nil, err
	}
	res := &ReplayResult{ReplayID: rp.ID, DryRun: req.DryRun, Route: rp.Window.Route, Since: rp.Window.Since, Until: rp.Window.Until}
	if res.Matched, err = s.store.CountReplay(ctx, rp.Window); err != nil {
		return nil, err
	}
	if res.AlreadyReplayed, err = s.store.CountReplayed(ctx, rp); err != nil {
		return nil, err
	}
	sample, err := s.store.ReplayCandidates(ctx, rp.Window, rp.AfterReceivedAt, rp.AfterID, 10)
	if err != nil {
		return nil, err
	}
	for _, ev := range sample {
		res.Sample = append(res.Sample, ReplayedItem{EventID: ev.ID, Key: ev.Key, ReceivedAt: ev.ReceivedAt, DeliveredAt: ev.DeliveredAt})
	}
	if req.DryRun {
		return res, nil
	}
	budgets := s.budgets()
	done := res.AlreadyReplayed
	for {
		if err := ctx.Err(); err != nil {
			res.NextCursor = rp.ID
			return res, stoppedReplay("interrupted", rp.ID, done, res.Matched, err)
		}
		out, err := s.store.ReplayNextBatch(ctx, s.jobs, rp.ID, route.Retry.MaxAttempts, budgets, s.replayBatch)
		if err != nil {
			res.NextCursor = rp.ID
			return res, stoppedReplay("stopped", rp.ID, done, res.Matched, err)
		}
		if out.Done {
			break
		}
		res.Replayed += out.Replayed
		res.Revived += out.Revived
		res.Skipped += out.Skipped
		done += out.Handled
		if req.Progress != nil {
			req.Progress(done, res.Matched)
		}
	}
	return res, nil
}

// stoppedReplay is the error of a replay that stopped part-way. Its message
// says how to resume, for an API client whose answer is this error; the
// cause stays in the log.
func stoppedReplay(how, id string, done, total int64, err error) error {
	return outbox.Wrap(outbox.EUNAVAILABLE, err, "replay %s %s after %d of %d events; resume it, sending nothing twice, with outbox replay --resume %s (API: {\"resume\": %q}, or the same request again)",
		id, how, done, total, id, id)
}

// replayFor finds or starts the replay req names. A dry run starts nothing.
func (s *Service) replayFor(ctx context.Context, req ReplayRequest) (*store.Replay, error) {
	if req.Resume != "" {
		if req.ReplayID != "" && req.ReplayID != req.Resume {
			return nil, outbox.Errorf(outbox.EINVALID, "resume names replay %s and replay_id names %s: give one", req.Resume, req.ReplayID)
		}
		rp, err := s.store.Replay(ctx, req.Resume)
		if err != nil {
			return nil, err
		}
		if err := sameWindow(rp, req); err != nil {
			return nil, err
		}
		return rp, nil
	}
	if _, err := s.checkRoute(req.Route); err != nil {
		return nil, err
	}
	id := req.ReplayID
	if req.Key != "" {
		// The event's own instant is the window; the key picks it out of
		// the events received in the same transaction.
		ev, err := s.store.EventByKey(ctx, req.Route, req.Key)
		if err != nil {
			return nil, err
		}
		req.Since, req.Until = ev.ReceivedAt.Truncate(time.Microsecond), ev.ReceivedAt.Truncate(time.Microsecond).Add(time.Microsecond)
		if id == "" {
			id = "replay-" + randomHex(6)
		}
	}
	if req.Since.IsZero() {
		return nil, outbox.Errorf(outbox.EINVALID, "replay needs a start time (since)")
	}
	if id == "" {
		id = defaultReplayID(req.Route, req.Since, req.Until)
	} else if !replayIDPattern.MatchString(id) {
		return nil, outbox.Errorf(outbox.EINVALID, "replay id %q is not allowed: use 1 to 64 letters, digits, dots, dashes and underscores, starting with a letter or digit", id)
	}
	w := store.ReplayWindow{Route: req.Route, Since: req.Since.Truncate(time.Microsecond), Until: req.Until.Truncate(time.Microsecond), Key: req.Key}
	if now := s.now(); w.Until.IsZero() || (w.Until.After(now) && req.Key == "") {
		w.Until = now.Truncate(time.Microsecond)
	}
	// An existing replay keeps the window its first run fixed.
	rp, err := s.store.Replay(ctx, id)
	switch {
	case err == nil:
	case outbox.ErrorCode(err) != outbox.ENOTFOUND:
		return nil, err
	case !w.Since.Before(w.Until):
		return nil, outbox.Errorf(outbox.EINVALID, "the window is empty: since (%s) is not before until (%s)", w.Since.Format(time.RFC3339), w.Until.Format(time.RFC3339))
	case req.DryRun:
		rp = &store.Replay{ID: id, Window: w, AfterReceivedAt: w.Since.Add(-time.Microsecond)}
	default:
		if rp, err = s.store.StartReplay(ctx, id, w); err != nil {
			return nil, err
		}
	}
	if err := sameWindow(rp, req); err != nil {
		return nil, err
	}
	return rp, nil
}

// sameWindow checks that what req says of the window agrees with replay rp.
func sameWindow(rp *store.Replay, req ReplayRequest) error {
	w := rp.Window
	if (req.Route != "" && req.Route != w.Route) || (req.Key != "" && req.Key != w.Key) ||
		(!req.Since.IsZero() && !req.Since.Truncate(time.Microsecond).Equal(w.Since)) ||
		(!req.Until.IsZero() && !req.Until.Truncate(time.Microsecond).Equal(w.Until)) {
		what := fmt.Sprintf("route %s, received from %s until %s", w.Route, w.Since.UTC().Format(time.RFC3339Nano), w.Until.UTC().Format(time.RFC3339Nano))
		if w.Key != "" {
			what = fmt.Sprintf("event %s/%s", w.Route, w.Key)
		}
		return outbox.Errorf(outbox.ECONFLICT, "replay %s covers %s: resume it with its id alone (outbox replay --resume %s), or name a new replay (--replay-id)", rp.ID, what, rp.ID)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
