package admin

import (
	"context"
	"fmt"

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

// RetryRequest says which dead letters to retry: the listed ones, or all
// that match a filter.
type RetryRequest struct {
	IDs    []Identifier
	Filter *outbox.DeadLetterFilter
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
// twice. Interrupted, it keeps what it did; run again, it picks up the rest,
// since retried jobs are no longer dead.
func (s *Service) RetryDeadLetters(ctx context.Context, req RetryRequest) (*RetryResult, error) {
	res := &RetryResult{DryRun: req.DryRun}
	if (len(req.IDs) == 0) == (req.Filter == nil) {
		return nil, outbox.Errorf(outbox.EINVALID, "name dead letters by id or by filter, not both or neither")
	}
	if req.Filter != nil {
		return s.retryByFilter(ctx, *req.Filter, req, res)
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

func (s *Service) retryByFilter(ctx context.Context, f outbox.DeadLetterFilter, req RetryRequest, res *RetryResult) (*RetryResult, error) {
	if f.Route != "" {
		if _, err := s.checkRoute(f.Route); err != nil {
			return nil, err
		}
	}
	start := s.now()
	if f.Until.IsZero() || f.Until.After(start) {
		f.Until = start
	}
	total, err := s.store.CountDeadLetters(ctx, f)
	if err != nil {
		return nil, err
	}
	res.Matched = total
	sample, _, err := s.store.ListDeadLetters(ctx, f, 10, "")
	if err != nil {
		return nil, err
	}
	res.Sample = sample
	if req.DryRun {
		return res, nil
	}
	budgets := s.budgets()
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("interrupted after retrying %d of %d dead letters; run the same command again to retry the rest: %w", res.Retried, total, err)
		}
		batch, err := s.store.DeadLetterBatch(ctx, f, after, s.retryBatch)
		if err != nil {
			return res, fmt.Errorf("stopped after retrying %d of %d dead letters: %w", res.Retried, total, err)
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
		after = batch[len(batch)-1].JobID
		n, err := s.store.RetryDeadLetterJobs(ctx, ids, budgets)
		res.Retried += n
		if err != nil {
			return res, fmt.Errorf("interrupted after retrying %d of %d dead letters; run the same command again to retry the rest: %w", res.Retried, total, err)
		}
		if req.Progress != nil {
			req.Progress(res.Retried, total)
		}
	}
	return res, nil
}

// CountDeadLetters counts the dead letters matching f.
func (s *Service) CountDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) (int64, error) {
	return s.store.CountDeadLetters(ctx, f)
}
