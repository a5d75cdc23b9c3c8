package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// ListDeadLetters returns up to limit dead letters matching f, newest
// failure first, after the position cursor names ("" for the first page),
// and the cursor of the next page ("" on the last).
func (s *Service) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter, limit int, cursor string) ([]outbox.DeadLetter, string, error) {
	return s.store.ListDeadLetters(ctx, f, limit, cursor)
}

// DeadLetter returns the dead letter an identifier names, with every
// attempt's error. A ROUTE/KEY names the event's most recent dead job.
func (s *Service) DeadLetter(ctx context.Context, id Identifier) (*outbox.DeadLetter, error) {
	jobID := id.JobID
	if jobID == 0 {
		ev, err := s.store.EventByKey(ctx, id.Route, id.Key)
		if err != nil {
			return nil, err
		}
		for _, j := range ev.Jobs {
			if isDead(j.State) {
				jobID = j.ID
			}
		}
		if jobID == 0 {
			return nil, outbox.Errorf(outbox.ENOTFOUND, "event %s is not a dead letter (it is %s)", id, ev.State)
		}
	}
	return s.store.DeadLetter(ctx, jobID)
}

func isDead(state string) bool {
	return state == string(rivertype.JobStateDiscarded) || state == string(rivertype.JobStateCancelled)
}

// RetryRequest says which dead letters to retry: the listed ones, all that
// match a filter, or the rest of an interrupted retry by filter.
type RetryRequest struct {
	IDs    []Identifier
	Filter *outbox.DeadLetterFilter
	// Resume continues the retry by filter a NextCursor names: with its
	// filter, and only dead letters that failed before its first run
	// started and that it had not reached.
	Resume string
	DryRun bool
	// Progress, if set, is called after each batch with the number retried
	// so far and the number matched at the start.
	Progress func(done, total int64)
}

// RetryResult says what a retry did, or with DryRun would do.
type RetryResult struct {
	DryRun  bool  `json:"dry_run"`
	Matched int64 `json:"matched"`
	Retried int64 `json:"retried"`
	// NotRetried explains dead letters that matched but were not retried:
	// gone by the time of the update, or of a route no longer configured.
	NotRetried []string            `json:"not_retried,omitempty"`
	Sample     []outbox.DeadLetter `json:"sample,omitempty"`
	// NextCursor is set when a retry by filter stopped before the end:
	// pass it as Resume (outbox dlq retry --resume, or "resume" in the
	// API) to retry the rest, and nothing twice.
	NextCursor string `json:"next_cursor,omitempty"`
}

// retryBatchSize bounds each retry transaction: small enough never to hold
// locks the workers wait on for long, large enough to retry 100,000 dead
// letters in well under a minute.
const retryBatchSize = 500

// RetryDeadLetters gives dead letters back to their route's workers with the
// full retry budget (attempt 0, the route's max_attempts, a fresh
// give_up_after deadline). A filtered retry walks the dead letters in job id
// order, in batches of its own transactions: it never holds them all in
// memory or in one transaction, and only dead letters that failed before it
// started qualify, so one that fails again during the run is not retried
// twice. Interrupted, it keeps what it did and returns a NextCursor: resumed
// with it, it retries the rest, and neither the dead letters it retried
// that failed again since nor those that failed after its first start.
func (s *Service) RetryDeadLetters(ctx context.Context, req RetryRequest) (*RetryResult, error) {
	res := &RetryResult{DryRun: req.DryRun}
	given := 0
	for _, set := range []bool{len(req.IDs) > 0, req.Filter != nil, req.Resume != ""} {
		if set {
			given++
		}
	}
	if given != 1 {
		return nil, outbox.Errorf(outbox.EINVALID, "name dead letters by id, by filter, or by the cursor of an interrupted retry: one of them")
	}
	if req.Resume != "" {
		f, after, err := decodeRetryCursor(req.Resume)
		if err != nil {
			return nil, err
		}
		return s.retryByFilter(ctx, f, after, req, res)
	}
	if req.Filter != nil {
		f := *req.Filter
		if start := s.now(); f.Until.IsZero() || f.Until.After(start) {
			f.Until = start
		}
		return s.retryByFilter(ctx, f, 0, req, res)
	}
	var jobIDs []int64
	for _, id := range req.IDs {
		d, err := s.DeadLetter(ctx, id)
		if code := outbox.ErrorCode(err); code == outbox.ENOTFOUND {
			res.NotRetried = append(res.NotRetried, fmt.Sprintf("%s: %s", id, outbox.ErrorMessage(err)))
			continue
		} else if err != nil {
			return nil, err
		}
		res.Matched++
		jobIDs = append(jobIDs, d.JobID)
		if len(res.Sample) < 10 {
			res.Sample = append(res.Sample, *d)
		}
	}
	if req.DryRun || len(jobIDs) == 0 {
		return res, nil
	}
	n, err := s.store.RetryDeadLetterJobs(ctx, jobIDs, s.budgets())
	res.Retried = n
	if err != nil {
		return res, err
	}
	if n < int64(len(jobIDs)) {
		res.NotRetried = append(res.NotRetried, fmt.Sprintf("%d of them changed state meanwhile, or belong to a route no longer configured", int64(len(jobIDs))-n))
	}
	if req.Progress != nil {
		req.Progress(n, res.Matched)
	}
	return res, nil
}

// retryByFilter retries the dead letters matching f (whose Until is set)
// with job ids above after.
func (s *Service) retryByFilter(ctx context.Context, f outbox.DeadLetterFilter, after int64, req RetryRequest, res *RetryResult) (*RetryResult, error) {
	if f.Route != "" {
		if _, err := s.checkRoute(f.Route); err != nil {
			return nil, err
		}
	}
	total, err := s.store.CountDeadLettersAfter(ctx, f, after)
	if err != nil {
		return nil, err
	}
	res.Matched = total
	if f.Payload != nil {
		// ListDeadLetters knows no payload condition; the sample comes
		// without payloads then.
		page, err := s.store.SearchDeadLetters(ctx, f, 10, "", time.Second)
		if err != nil {
			return nil, err
		}
		res.Sample = page.Items
	} else {
		sample, _, err := s.store.ListDeadLetters(ctx, f, 10, "")
		if err != nil {
			return nil, err
		}
		res.Sample = sample
	}
	if req.DryRun {
		return res, nil
	}
	budgets := s.budgets()
	// The message carries the cursor, for an API client whose answer is
	// this error; the cause stays in the log.
	stopped := func(how string, err error) (*RetryResult, error) {
		res.NextCursor = encodeRetryCursor(f, after)
		return res, outbox.Wrap(outbox.EUNAVAILABLE, err, "%s after retrying %d of %d dead letters; retry the rest, none twice, with outbox dlq retry --resume %s (API: {\"resume\": %q})",
			how, res.Retried, total, res.NextCursor, res.NextCursor)
	}
	for {
		if err := ctx.Err(); err != nil {
			return stopped("interrupted", err)
		}
		batch, err := s.store.DeadLetterBatch(ctx, f, after, s.retryBatch)
		if err != nil {
			return stopped("stopped", err)
		}
		if len(batch) == 0 {
			break
		}
		ids := make([]int64, 0, len(batch))
		for _, b := range batch {
			if s.routes[b.Route] == nil {
				res.NotRetried = append(res.NotRetried, fmt.Sprintf("%d: route %s is no longer configured", b.JobID, b.Route))
				continue
			}
			ids = append(ids, b.JobID)
		}
		n, err := s.store.RetryDeadLetterJobs(ctx, ids, budgets)
		if err != nil {
			return stopped("stopped", err)
		}
		res.Retried += n
		after = batch[len(batch)-1].JobID
		if req.Progress != nil {
			req.Progress(res.Retried, total)
		}
	}
	return res, nil
}

// retryCursor is where a retry by filter stopped: its filter, with Until
// fixed at its first run's start, and the last job id it handled.
type retryCursor struct {
	Route string `json:"r,omitempty"`
	Since int64  `json:"s,omitempty"` // Unix nanoseconds; 0 for none
	Until int64  `json:"u"`
	Error string `json:"e,omitempty"`
	// Payload is the filter's payload condition, if any.
	Payload *outbox.PayloadCondition `json:"p,omitempty"`
	After   int64                    `json:"a"`
}

const retryCursorPrefix = "retry1."

func encodeRetryCursor(f outbox.DeadLetterFilter, after int64) string {
	c := retryCursor{Route: f.Route, Until: f.Until.UnixNano(), Error: f.ErrorContains, Payload: f.Payload, After: after}
	if !f.Since.IsZero() {
		c.Since = f.Since.UnixNano()
	}
	raw, _ := json.Marshal(c)
	return retryCursorPrefix + base64.RawURLEncoding.EncodeToString(raw)
}

func decodeRetryCursor(s string) (outbox.DeadLetterFilter, int64, error) {
	var c retryCursor
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, retryCursorPrefix))
	if err != nil || !strings.HasPrefix(s, retryCursorPrefix) || json.Unmarshal(raw, &c) != nil || c.Until == 0 {
		return outbox.DeadLetterFilter{}, 0, outbox.Errorf(outbox.EINVALID, "%q is not a retry cursor: pass next_cursor as an interrupted retry printed it", s)
	}
	f := outbox.DeadLetterFilter{Route: c.Route, Until: time.Unix(0, c.Until), ErrorContains: c.Error, Payload: c.Payload}
	if c.Since != 0 {
		f.Since = time.Unix(0, c.Since)
	}
	return f, c.After, nil
}

// CountDeadLetters counts the dead letters matching f.
func (s *Service) CountDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) (int64, error) {
	return s.store.CountDeadLetters(ctx, f)
}
