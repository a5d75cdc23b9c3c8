package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

func payloadPath(c *outbox.PayloadCondition) []string {
	if c == nil {
		return nil
	}
	return c.Path
}

func payloadValue(c *outbox.PayloadCondition) *string {
	if c == nil {
		return nil
	}
	return &c.Value
}

// MinuteActivity is a route's deliveries and failed attempts in one minute.
type MinuteActivity struct {
	Route     string
	Minute    time.Time
	Delivered int64
	Failed    int64
}

// Activity returns deliveries and failed attempts per route and minute
// since since (see ConsoleActivity in sql/queries/console.sql for its cost).
func (s *Store) Activity(ctx context.Context, since time.Time) ([]MinuteActivity, error) {
	rows, err := s.q.ConsoleActivity(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("error reading delivery activity: %w", err)
	}
	out := make([]MinuteActivity, len(rows))
	for i, r := range rows {
		out[i] = MinuteActivity{Route: r.Route, Minute: r.Minute, Delivered: r.Delivered, Failed: r.Failed}
	}
	return out, nil
}

// SearchPage is one page of a search that scans in windows: what matched,
// and where to go on.
type SearchPage[T any] struct {
	Items []T
	// Next is the cursor of the next page; "" when the search is complete.
	Next string
	// Scanned counts the rows this page looked at.
	Scanned int
	// Partial is true when the page stopped at its time budget before
	// filling up: more may match further on.
	Partial bool
}

// searchWindow is how many rows one query of a windowed search reads. A
// payload condition parses each row's body, so a window costs about 60 ms
// at 1 KB a body.
const searchWindow = 1000

// windowRow is one row of a windowed search: where it stands in the
// search's order (at, id: the cursor), whether it matched, and, if it did,
// the item it gives.
type windowRow[T any] struct {
	matched bool
	at      time.Time
	id      int64
	item    T
}

// scanWindows runs a windowed search: next reads the following window of
// at most window rows (and moves its own position past them), until limit
// matches fill the page, the rows run out, or budget has passed. The page's
// cursor goes on after its last item, or, when the budget cut the search
// short, after the last row read.
func scanWindows[T any](limit, window int, budget time.Duration, next func() ([]windowRow[T], error)) (*SearchPage[T], error) {
	page := &SearchPage[T]{Items: []T{}}
	start := time.Now()
	var lastAt time.Time // where each item stands, for the cursor
	var lastID int64
	for {
		rows, err := next()
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if r.matched && len(page.Items) == limit {
				page.Next = encodeCursor(lastAt, lastID)
				return page, nil
			}
			page.Scanned++
			if r.matched {
				page.Items = append(page.Items, r.item)
				lastAt, lastID = r.at, r.id
			}
		}
		if len(rows) < window {
			return page, nil // nothing left
		}
		if time.Since(start) >= budget {
			last := rows[len(rows)-1]
			page.Partial = true
			page.Next = encodeCursor(last.at, last.id)
			return page, nil
		}
	}
}

// SearchDeadLetters returns up to limit dead letters matching f, newest
// failure first, after cursor. Without a payload condition it reads one
// page. With one, it scans windows of dead letters until the page is full,
// none are left, or budget has passed; the page then says how far it got,
// and its cursor goes on from there. The rows carry no payload.
func (s *Store) SearchDeadLetters(ctx context.Context, f outbox.DeadLetterFilter, limit int, cursor string, budget time.Duration) (*SearchPage[outbox.DeadLetter], error) {
	params := dbsqlc.ConsoleDeadLetterWindowParams{
		Route: optString(f.Route), Since: optTime(f.Since), Until: optTime(f.Until),
		ErrorLike: likePattern(f.ErrorContains), PayloadPath: payloadPath(f.Payload), PayloadValue: payloadValue(f.Payload),
		MaxRows: int32(limit + 1),
	}
	if f.Payload != nil {
		params.MaxRows = searchWindow
	}
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, err
		}
		params.BeforeFailedAt, params.BeforeJobID = &at, &id
	}
	return scanWindows(limit, int(params.MaxRows), budget, func() ([]windowRow[outbox.DeadLetter], error) {
		rows, err := s.q.ConsoleDeadLetterWindow(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("error listing dead letters: %w", err)
		}
		out := make([]windowRow[outbox.DeadLetter], len(rows))
		for i, r := range rows {
			out[i] = windowRow[outbox.DeadLetter]{matched: r.Matched, id: r.JobID}
			if r.FailedAt != nil {
				out[i].at = *r.FailedAt
			}
			if !r.Matched {
				continue
			}
			d := outbox.DeadLetter{
				JobID: r.JobID, EventID: r.EventID, Route: r.Route, Key: r.Key, State: r.State,
				Attempts: int(r.Attempts), MaxAttempts: int(r.MaxAttempts), ReceivedAt: r.ReceivedAt,
				FailedAt: out[i].at,
			}
			if r.LastError != nil {
				d.LastError = *r.LastError
			}
			out[i].item = d
		}
		if len(rows) > 0 {
			last := rows[len(rows)-1]
			params.BeforeFailedAt, params.BeforeJobID = last.FailedAt, &last.JobID
		}
		return out, nil
	})
}

// DeadLetterView is a dead letter as the console's page shows it: the
// stored request (a bounded preview of its body), and the job's attempts
// and deadline.
type DeadLetterView struct {
	outbox.DeadLetter
	ContentType string
	Headers     http.Header
	// BodyBytes is the stored body's size; Preview is its first bytes.
	BodyBytes int64
	Preview   []byte
	// JobCreatedAt and JobMetadata give the give-up deadline: give_up_after
	// from the job's creation, unless the metadata's give_up_at (set by a
	// retry) says otherwise.
	JobCreatedAt time.Time
	GiveUpAt     *time.Time
	// Snoozes counts the times the target asked to come back later.
	Snoozes int
}

// DeadLetterView loads one dead letter by job id with at most previewBytes
// of its body. It returns ErrNotFound when the job is not a dead letter.
func (s *Store) DeadLetterView(ctx context.Context, jobID int64, previewBytes int) (*DeadLetterView, error) {
	row, err := s.q.ConsoleDeadLetter(ctx, dbsqlc.ConsoleDeadLetterParams{JobID: jobID, PreviewBytes: int32(previewBytes)})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, outbox.Errorf(outbox.ENOTFOUND, "job %d is not a dead letter (it may have been retried, delivered or removed by dead_letter_retention)", jobID)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading dead letter: %w", err)
	}
	v := &DeadLetterView{
		DeadLetter: deadLetterFrom(dbsqlc.DeadLetter{
			EventID: row.EventID, Route: row.Route, Key: row.Key, ReceivedAt: row.ReceivedAt, JobID: row.JobID,
			State: row.State, Attempts: row.Attempts, MaxAttempts: row.MaxAttempts, LastError: row.LastError,
			Errors: row.Errors, FailedAt: row.FailedAt,
		}, true),
		ContentType: row.ContentType, BodyBytes: row.BodyBytes, Preview: row.BodyPreview, JobCreatedAt: row.JobCreatedAt,
	}
	v.Payload = nil
	_ = json.Unmarshal(row.Headers, &v.Headers)
	v.GiveUpAt, v.Snoozes = jobMetadata(row.JobMetadata)
	return v, nil
}

// jobMetadata reads what a delivery job's metadata says about its
// deadline and snoozes.
func jobMetadata(raw []byte) (*time.Time, int) {
	m := outbox.ParseDeliveryMetadata(raw)
	if t, ok := m.Deadline(); ok {
		return &t, m.Snoozes
	}
	return nil, m.Snoozes
}

// EventView is an event as the console's page shows it: the stored request
// (a bounded preview of its body) and every delivery job.
type EventView struct {
	ID               int64
	Route            string
	Key              string
	ReceivedAt       time.Time
	ContentType      string
	Headers          http.Header
	DeliveredAt      *time.Time
	DeliveryAttempts *int32
	BodyBytes        int64
	Preview          []byte
	// State is as EventDetail's.
	State outbox.EventState
	Jobs  []JobView
}

// JobView is one delivery job of an event, with its deadline.
type JobView struct {
	outbox.JobDetail
	GiveUpAt *time.Time
	Snoozes  int
}

// EventView loads the event (route, key) with at most previewBytes of its
// body.
func (s *Store) EventView(ctx context.Context, route, key string, previewBytes int) (*EventView, error) {
	row, err := s.q.ConsoleEventByKey(ctx, dbsqlc.ConsoleEventByKeyParams{Route: route, Key: key, PreviewBytes: int32(previewBytes)})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, outbox.Errorf(outbox.ENOTFOUND, "no event %s/%s (never received, or removed by event_retention)", route, key)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading event: %w", err)
	}
	ev := &EventView{
		ID: row.ID, Route: row.Route, Key: row.Key, ReceivedAt: row.ReceivedAt, ContentType: row.ContentType,
		DeliveredAt: row.DeliveredAt, DeliveryAttempts: row.DeliveryAttempts, BodyBytes: row.BodyBytes, Preview: row.BodyPreview,
	}
	_ = json.Unmarshal(row.Headers, &ev.Headers)
	jobs, err := s.q.ConsoleEventJobs(ctx, row.ID)
	if err != nil {
		return nil, fmt.Errorf("error loading delivery jobs: %w", err)
	}
	detail := &outbox.EventDetail{DeliveredAt: row.DeliveredAt}
	for _, j := range jobs {
		jv := JobView{JobDetail: outbox.JobDetail{
			ID: j.ID, State: j.State, Attempt: int(j.Attempt), MaxAttempts: int(j.MaxAttempts),
			CreatedAt: j.CreatedAt, ScheduledAt: j.ScheduledAt, AttemptedAt: j.AttemptedAt, FinalizedAt: j.FinalizedAt,
			Errors: []outbox.AttemptError{},
		}}
		_ = json.Unmarshal(j.Errors, &jv.Errors)
		for i := range jv.Errors {
			jv.Errors[i].Error = attemptError(jv.Errors[i].Error)
		}
		jv.GiveUpAt, jv.Snoozes = jobMetadata(j.Metadata)
		ev.Jobs = append(ev.Jobs, jv)
		detail.Jobs = append(detail.Jobs, jv.JobDetail)
	}
	ev.State = eventState(detail)
	return ev, nil
}

// StoredBody is an event's body as received.
type StoredBody struct {
	Route, Key, ContentType string
	Body                    []byte
}

// EventBody returns the stored bytes of event id.
func (s *Store) EventBody(ctx context.Context, id int64) (*StoredBody, error) {
	row, err := s.q.EventBody(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, outbox.Errorf(outbox.ENOTFOUND, "no event %d (removed by event_retention?)", id)
	}
	if err != nil {
		return nil, fmt.Errorf("error loading event %d: %w", id, err)
	}
	return &StoredBody{Route: row.Route, Key: row.Key, ContentType: row.ContentType, Body: row.Body}, nil
}

// EventSearch selects a route's events received in [Since, Until) whose
// payload matches a condition.
type EventSearch struct {
	Route        string
	Since, Until time.Time
	Payload      *outbox.PayloadCondition
}

// EventSummary is one event found by a search, with its state as
// EventDetail sums it up.
type EventSummary struct {
	ID          int64
	Route       string
	Key         string
	ReceivedAt  time.Time
	DeliveredAt *time.Time
	State       outbox.EventState
}

// SearchEvents returns up to limit events matching q, newest first, after
// cursor, scanning in windows against budget as SearchDeadLetters does.
func (s *Store) SearchEvents(ctx context.Context, q EventSearch, limit int, cursor string, budget time.Duration) (*SearchPage[EventSummary], error) {
	params := dbsqlc.ConsoleEventWindowParams{
		Route: q.Route, Since: q.Since, Until: q.Until,
		PayloadPath: payloadPath(q.Payload), PayloadValue: payloadValue(q.Payload), MaxRows: int32(limit + 1),
	}
	if q.Payload != nil {
		params.MaxRows = searchWindow
	}
	if cursor != "" {
		at, id, err := decodeCursor(cursor)
		if err != nil {
			return nil, err
		}
		params.BeforeReceivedAt, params.BeforeID = &at, &id
	}
	return scanWindows(limit, int(params.MaxRows), budget, func() ([]windowRow[EventSummary], error) {
		rows, err := s.q.ConsoleEventWindow(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("error searching events: %w", err)
		}
		out := make([]windowRow[EventSummary], len(rows))
		for i, r := range rows {
			out[i] = windowRow[EventSummary]{matched: r.Matched, at: r.ReceivedAt, id: r.ID}
			if !r.Matched {
				continue
			}
			detail := &outbox.EventDetail{DeliveredAt: r.DeliveredAt}
			if r.JobState != "" {
				detail.Jobs = []outbox.JobDetail{{State: r.JobState, FinalizedAt: r.JobFinalizedAt}}
			}
			out[i].item = EventSummary{
				ID: r.ID, Route: r.Route, Key: r.Key, ReceivedAt: r.ReceivedAt, DeliveredAt: r.DeliveredAt, State: eventState(detail),
			}
		}
		if len(rows) > 0 {
			last := rows[len(rows)-1]
			params.BeforeReceivedAt, params.BeforeID = &last.ReceivedAt, &last.ID
		}
		return out, nil
	})
}
