package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// NewEvent is a webhook that passed intake's checks and is ready to store.
type NewEvent struct {
	Route       string
	Key         string
	ContentType string
	// Headers are the request headers to keep, already stripped of
	// credentials and signatures.
	Headers http.Header
	Body    []byte
	// MaxAttempts is the route's retry budget for the delivery job.
	MaxAttempts int
	// RequestID is the intake request's id. It is kept in the delivery
	// job's metadata, so that delivery log lines carry it too and one grep
	// follows a webhook from intake to its last delivery attempt.
	RequestID string
}

// MetadataRequestID is the delivery job metadata key holding the id of the
// intake request that stored the event.
const MetadataRequestID = "request_id"

// Accepted is the outcome of storing a NewEvent.
type Accepted struct {
	// Duplicate is true when the (route, key) was already stored; nothing
	// new was written.
	Duplicate bool
	EventID   int64
	JobID     int64
}

// Intake stores accepted webhooks: the event row and its delivery job in one
// transaction.
type Intake struct {
	store *Store
	jobs  JobInserter
}

// NewIntake returns an Intake that enqueues delivery jobs with jobs.
func NewIntake(store *Store, jobs JobInserter) *Intake {
	return &Intake{store: store, jobs: jobs}
}

// Accept stores ev and enqueues its delivery, and returns only after the
// commit. A (route, key) already stored, or stored concurrently by another
// request, comes back as a Duplicate with no new row and no new job.
func (in *Intake) Accept(ctx context.Context, ev *NewEvent) (Accepted, error) {
	headers, err := json.Marshal(ev.Headers)
	if err != nil {
		return Accepted{}, fmt.Errorf("error encoding headers: %w", err)
	}
	var res Accepted
	err = pgx.BeginFunc(ctx, in.store.pool, func(tx pgx.Tx) error {
		row, err := in.store.q.WithTx(tx).InsertEvent(ctx, dbsqlc.InsertEventParams{
			Route: ev.Route, Key: ev.Key, ContentType: ev.ContentType, Headers: headers, Body: ev.Body,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			res = Accepted{Duplicate: true}
			return nil
		}
		if err != nil {
			return fmt.Errorf("error inserting event: %w", err)
		}
		opts := &river.InsertOpts{Queue: ev.Route, MaxAttempts: ev.MaxAttempts}
		if ev.RequestID != "" {
			opts.Metadata, _ = json.Marshal(map[string]string{MetadataRequestID: ev.RequestID})
		}
		job, err := in.jobs.InsertTx(ctx, tx, DeliverArgs{EventID: row.ID, Route: ev.Route, Key: ev.Key}, opts)
		if err != nil {
			return fmt.Errorf("error enqueuing delivery: %w", err)
		}
		res = Accepted{EventID: row.ID, JobID: job.Job.ID}
		return nil
	})
	if err != nil {
		return Accepted{}, err
	}
	return res, nil
}

// IsTimeout reports whether err came from a context deadline, as opposed to
// the database refusing or failing.
func IsTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable
}
