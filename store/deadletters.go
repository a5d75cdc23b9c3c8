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

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

func deadLetterFrom(row dbsqlc.DeadLetter, withErrors bool) outbox.DeadLetter {
	d := outbox.DeadLetter{
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

// deadLetterParams is a filter as the dead-letter queries take it.
type deadLetterParams struct {
	route, errorLike *string
	since, until     *time.Time
	payloadPath      []string
	payloadValue     *string
}

func paramsOf(f outbox.DeadLetterFilter) deadLetterParams {
	return deadLetterParams{
		route: optString(f.Route), errorLike: likePattern(f.ErrorContains), since: optTime(f.Since), until: optTime(f.Until),
		payloadPath: payloadPath(f.Payload), payloadValue: payloadValue(f.Payload),
	}
}

// ListDeadLetters returns up to limit dead letters matching f, newest
// failure first, after the position cursor names ("" for the first page).
// It returns the cursor of the next page, "" on the last.
func (s *Store) ListDeadLetters(ctx context.Context, f outbox.DeadLetterFilter, limit int, cursor string) ([]outbox.DeadLetter, string, error) {
	p := paramsOf(f)
	params := dbsqlc.ListDeadLettersParams{Route: p.route, Since: p.since, Until: p.until, ErrorLike: p.errorLike, MaxRows: int32(limit + 1)}
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
	out := make([]outbox.DeadLetter, 0, min(len(rows), limit))
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
func (s *Store) CountDeadLetters(ctx context.Context, f outbox.DeadLetterFilter) (int64, error) {
	return s.countDeadLetters(ctx, f, nil)
}

// CountDeadLettersAfter counts the dead letters matching f whose job id is
// above afterJobID: what a resumed bulk retry has left.
func (s *Store) CountDeadLettersAfter(ctx context.Context, f outbox.DeadLetterFilter, afterJobID int64) (int64, error) {
	return s.countDeadLetters(ctx, f, &afterJobID)
}

func (s *Store) countDeadLetters(ctx context.Context, f outbox.DeadLetterFilter, afterJobID *int64) (int64, error) {
	p := paramsOf(f)
	n, err := s.q.CountDeadLetters(ctx, dbsqlc.CountDeadLettersParams{
		Route: p.route, Since: p.since, Until: p.until, ErrorLike: p.errorLike, PayloadPath: p.payloadPath, PayloadValue: p.payloadValue,
		AfterJobID: afterJobID,
	})
	if err != nil {
		return 0, fmt.Errorf("error counting dead letters: %w", err)
	}
	return n, nil
}

// DeadLetter returns the dead letter of job jobID, with every attempt's
// error.
func (s *Store) DeadLetter(ctx context.Context, jobID int64) (*outbox.DeadLetter, error) {
	row, err := s.q.GetDeadLetter(ctx, jobID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, outbox.Errorf(outbox.ENOTFOUND, "job %d is not a dead letter (it may have been retried, delivered or removed by dead_letter_retention)", jobID)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading dead letter: %w", err)
	}
	d := deadLetterFrom(row, true)
	return &d, nil
}

// DeadLetterRef names a dead letter's job and route.
type DeadLetterRef struct {
	JobID int64
	Route string
}

// DeadLetterBatch returns up to max dead letters matching f that failed
// before f.Until, in job id order after afterJobID, so that a bulk retry
// walks them in batches and resumes where it stopped.
func (s *Store) DeadLetterBatch(ctx context.Context, f outbox.DeadLetterFilter, afterJobID int64, max int) ([]DeadLetterRef, error) {
	p := paramsOf(f)
	rows, err := s.q.DeadLetterBatch(ctx, dbsqlc.DeadLetterBatchParams{
		Route: p.route, Since: p.since, Until: &f.Until, ErrorLike: p.errorLike, PayloadPath: p.payloadPath, PayloadValue: p.payloadValue, AfterJobID: afterJobID, MaxRows: int32(max),
	})
	if err != nil {
		return nil, fmt.Errorf("error selecting dead letters: %w", err)
	}
	refs := make([]DeadLetterRef, len(rows))
	for i, r := range rows {
		refs[i] = DeadLetterRef{JobID: r.JobID, Route: r.Route}
	}
	return refs, nil
}

// RetryBudget is a route's retry budget, which a retried dead letter gets
// back in full.
type RetryBudget struct {
	Route       string
	MaxAttempts int
	GiveUpAfter time.Duration
}

// RetryDeadLetterJobs gives dead delivery jobs back to their route's
// workers with the route's full budget, in one statement: attempt 0, the
// route's max_attempts, a fresh give_up_after deadline. It returns how many
// it retried; a job that is no longer dead, or whose route has no budget
// here, is left alone.
func (s *Store) RetryDeadLetterJobs(ctx context.Context, jobIDs []int64, budgets []RetryBudget) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		n, err = retryJobs(ctx, s.q.WithTx(tx), jobIDs, budgets, "")
		return err
	})
	return n, err
}

// retryJobs retries dead jobs, in the caller's transaction; replayID, if
// set, tags them as a replay's. A retried job of an ordered route whose key
// has another head waits as pending, to go next (the update trigger of
// migration 000018 decides, under the key's lock).
func retryJobs(ctx context.Context, q *dbsqlc.Queries, jobIDs []int64, budgets []RetryBudget, replayID string) (int64, error) {
	if len(jobIDs) == 0 {
		return 0, nil
	}
	// The trigger locks each retried job's key; taking them all first,
	// sorted, keeps this batch from deadlocking with intake.
	if err := q.LockOrderingKeysOfJobs(ctx, jobIDs); err != nil {
		return 0, fmt.Errorf("error locking ordering keys: %w", err)
	}
	params := dbsqlc.RetryDeadLetterJobsParams{JobIds: jobIDs, ReplayID: replayID}
	for _, b := range budgets {
		params.Routes = append(params.Routes, b.Route)
		params.MaxAttempts = append(params.MaxAttempts, int32(b.MaxAttempts))
		params.GiveUpAfterSecs = append(params.GiveUpAfterSecs, b.GiveUpAfter.Seconds())
	}
	ids, err := q.RetryDeadLetterJobs(ctx, params)
	if err != nil {
		return 0, fmt.Errorf("error retrying dead letters: %w", err)
	}
	return int64(len(ids)), nil
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
	return time.Time{}, 0, outbox.Errorf(outbox.EINVALID, "cursor %q is not one this server returned: pass next_cursor from the previous page", c)
}

// likePattern turns a substring into an ILIKE pattern that matches it
// literally.
func likePattern(sub string) *string {
	if sub == "" {
		return nil
	}
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	p := "%" + r.Replace(sub) + "%"
	return &p
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
