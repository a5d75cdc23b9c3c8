package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// DeadLetter is an event webhook-outbox gave up delivering, as the
// dead_letters view shows it.
type DeadLetter struct {
	JobID       int64           `json:"job_id"`
	EventID     int64           `json:"event_id"`
	Route       string          `json:"route"`
	Key         string          `json:"key"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	MaxAttempts int             `json:"max_attempts"`
	LastError   string          `json:"last_error"`
	ReceivedAt  time.Time       `json:"received_at"`
	FailedAt    time.Time       `json:"failed_at"`
	Payload     json.RawMessage `json:"payload"`
	Errors      []AttemptError  `json:"errors,omitempty"`
}

// AttemptError is one failed attempt, as River records it.
type AttemptError struct {
	At      time.Time `json:"at"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
}

// DeadLetterFilter selects dead letters. Zero fields do not filter.
type DeadLetterFilter struct {
	Route string
	// Since and Until bound failed_at: Since <= failed_at < Until.
	Since, Until time.Time
	// ErrorContains matches last_error, case-insensitively.
	ErrorContains string
	// Payload, when set, keeps the dead letters whose payload holds a value
	// at a path (see ParsePayloadCondition).
	Payload *PayloadCondition
}

func deadLetterFrom(row dbsqlc.DeadLetter, withErrors bool) DeadLetter {
	d := DeadLetter{
		JobID: row.JobID, EventID: row.EventID, Route: row.Route, Key: row.Key, State: row.State,
		Attempts: int(row.Attempts), MaxAttempts: int(row.MaxAttempts), ReceivedAt: row.ReceivedAt,
		Payload: row.Payload,
	}
	if row.LastError != nil {
		d.LastError = *row.LastError
	}
	if row.FailedAt != nil {
		d.FailedAt = *row.FailedAt
	}
	if len(d.Payload) == 0 {
		d.Payload = json.RawMessage("null")
	}
	if withErrors {
		_ = json.Unmarshal(row.Errors, &d.Errors)
	}
	return d
}

// ListDeadLetters returns up to limit dead letters matching f, newest
// failure first, after the position cursor names ("" for the first page).
// It returns the cursor of the next page, "" on the last.
func (s *Store) ListDeadLetters(ctx context.Context, f DeadLetterFilter, limit int, cursor string) ([]DeadLetter, string, error) {
	params := dbsqlc.ListDeadLettersParams{
		Route: optString(f.Route), Since: optTime(f.Since), Until: optTime(f.Until),
		ErrorLike: likePattern(f.ErrorContains), MaxRows: int32(limit + 1),
	}
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		params.BeforeFailedAt, params.BeforeJobID = &at, &id
	}
	rows, err := s.q.ListDeadLetters(ctx, params)
	if err != nil {
		return nil, "", fmt.Errorf("error listing dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, min(len(rows), limit))
	for i, row := range rows {
		if i == limit {
			break
		}
		out = append(out, deadLetterFrom(row, false))
	}
	next := ""
	if len(rows) > limit {
		last := out[len(out)-1]
		next = encodeCursor(last.FailedAt, last.JobID)
	}
	return out, next, nil
}

// CountDeadLetters counts the dead letters matching f.
func (s *Store) CountDeadLetters(ctx context.Context, f DeadLetterFilter) (int64, error) {
	n, err := s.q.CountDeadLetters(ctx, dbsqlc.CountDeadLettersParams{
		Route: optString(f.Route), Since: optTime(f.Since), Until: optTime(f.Until), ErrorLike: likePattern(f.ErrorContains),
		PayloadPath: f.Payload.path(), PayloadValue: f.Payload.value(),
	})
	if err != nil {
		return 0, fmt.Errorf("error counting dead letters: %w", err)
	}
	return n, nil
}

func encodeCursor(at time.Time, id int64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%d", at.UnixNano(), id))
}

func decodeCursor(c string) (time.Time, int64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		if ns, id, ok := strings.Cut(string(raw), ":"); ok {
			n, err1 := strconv.ParseInt(ns, 10, 64)
			i, err2 := strconv.ParseInt(id, 10, 64)
			if err1 == nil && err2 == nil {
				return time.Unix(0, n), i, nil
			}
		}
	}
	return time.Time{}, 0, invalidf("cursor %q is not one this server returned: pass next_cursor from the previous page", c)
}

// DeadLetter returns the dead letter an identifier names, with every
// attempt's error. A ROUTE/KEY names the event's most recent dead job.
func (a *Admin) DeadLetter(ctx context.Context, id Identifier) (*DeadLetter, error) {
	jobID := id.JobID
	if jobID == 0 {
		ev, err := a.store.EventByKey(ctx, id.Route, id.Key)
		if err != nil {
			return nil, err
		}
		for _, j := range ev.Jobs {
			if j.State == "discarded" || j.State == "cancelled" {
				jobID = j.ID
			}
		}
		if jobID == 0 {
			return nil, fmt.Errorf("%w: event %s is not a dead letter (it is %s)", ErrNotFound, id, ev.State)
		}
	}
	row, err := a.store.q.GetDeadLetter(ctx, jobID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: job %d is not a dead letter (it may have been retried, delivered or removed by dead_letter_retention)", ErrNotFound, jobID)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading dead letter: %w", err)
	}
	d := deadLetterFrom(row, true)
	return &d, nil
}

// RetryRequest says which dead letters to retry: the listed ones, or all
// that match a filter.
type RetryRequest struct {
	IDs    []Identifier
	Filter *DeadLetterFilter
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
	NotRetried []string     `json:"not_retried,omitempty"`
	Sample     []DeadLetter `json:"sample,omitempty"`
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
func (a *Admin) RetryDeadLetters(ctx context.Context, req RetryRequest) (*RetryResult, error) {
	res := &RetryResult{DryRun: req.DryRun}
	if (len(req.IDs) == 0) == (req.Filter == nil) {
		return nil, invalidf("name dead letters by id or by filter, not both or neither")
	}
	if req.Filter != nil {
		return a.retryByFilter(ctx, *req.Filter, req, res)
	}
	var jobIDs []int64
	for _, id := range req.IDs {
		d, err := a.DeadLetter(ctx, id)
		if err != nil {
			res.NotRetried = append(res.NotRetried, fmt.Sprintf("%s: %s", id, strings.TrimPrefix(err.Error(), ErrNotFound.Error()+": ")))
			continue
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
	n, err := a.retryJobs(ctx, a.store.q, jobIDs)
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

func (a *Admin) retryByFilter(ctx context.Context, f DeadLetterFilter, req RetryRequest, res *RetryResult) (*RetryResult, error) {
	if f.Route != "" {
		if _, err := a.checkRoute(f.Route); err != nil {
			return nil, err
		}
	}
	start := a.now()
	if f.Until.IsZero() || f.Until.After(start) {
		f.Until = start
	}
	total, err := a.store.CountDeadLetters(ctx, f)
	if err != nil {
		return nil, err
	}
	res.Matched = total
	if f.Payload != nil {
		// ListDeadLetters knows no payload condition; the sample comes
		// without payloads then.
		page, err := a.store.SearchDeadLetters(ctx, f, 10, "", time.Second)
		if err != nil {
			return nil, err
		}
		res.Sample = page.Items
	} else {
		sample, _, err := a.store.ListDeadLetters(ctx, f, 10, "")
		if err != nil {
			return nil, err
		}
		res.Sample = sample
	}
	if req.DryRun {
		return res, nil
	}
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("interrupted after retrying %d of %d dead letters; run the same command again to retry the rest: %w", res.Retried, total, err)
		}
		batch, err := a.store.q.DeadLetterBatch(ctx, dbsqlc.DeadLetterBatchParams{
			Route: optString(f.Route), Since: optTime(f.Since), Until: &f.Until,
			ErrorLike: likePattern(f.ErrorContains), PayloadPath: f.Payload.path(), PayloadValue: f.Payload.value(),
			AfterJobID: after, MaxRows: retryBatchSize,
		})
		if err != nil {
			return res, fmt.Errorf("error selecting dead letters after retrying %d: %w", res.Retried, err)
		}
		if len(batch) == 0 {
			break
		}
		ids := make([]int64, 0, len(batch))
		for _, b := range batch {
			if _, ok := a.routes[b.Route]; !ok {
				res.NotRetried = append(res.NotRetried, fmt.Sprintf("%d: route %s is no longer configured", b.JobID, b.Route))
				continue
			}
			ids = append(ids, b.JobID)
		}
		after = batch[len(batch)-1].JobID
		n, err := a.retryJobs(ctx, a.store.q, ids)
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

// retryJobs resets dead jobs, each to its own route's budget, in one
// statement: one short transaction.
func (a *Admin) retryJobs(ctx context.Context, q *dbsqlc.Queries, jobIDs []int64) (int64, error) {
	if len(jobIDs) == 0 {
		return 0, nil
	}
	params := dbsqlc.RetryDeadLetterJobsParams{JobIds: jobIDs}
	for _, r := range a.cfg.Routes {
		params.Routes = append(params.Routes, r.Name)
		params.MaxAttempts = append(params.MaxAttempts, int32(r.Retry.MaxAttempts))
		params.GiveUpAfterSecs = append(params.GiveUpAfterSecs, r.Retry.GiveUpAfter.D().Seconds())
	}
	ids, err := q.RetryDeadLetterJobs(ctx, params)
	if err != nil {
		return 0, fmt.Errorf("error retrying dead letters: %w", err)
	}
	return int64(len(ids)), nil
}
