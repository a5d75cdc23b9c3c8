package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

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
}

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
	res, err := in.accept(ctx, ev, headers)
	if isNoPartition(err) {
		// The maintenance job creates partitions days ahead; if it has not
		// run, create the one needed now and try again.
		if perr := in.store.EnsurePartitions(ctx, time.Now(), time.Now().Add(in.store.PartitionInterval)); perr != nil {
			return Accepted{}, fmt.Errorf("%w (and creating the partition failed: %w)", err, perr)
		}
		res, err = in.accept(ctx, ev, headers)
	}
	return res, err
}

func (in *Intake) accept(ctx context.Context, ev *NewEvent, headers []byte) (Accepted, error) {
	var res Accepted
	err := pgx.BeginFunc(ctx, in.store.pool, func(tx pgx.Tx) error {
		q := in.store.q.WithTx(tx)
		if err := q.LockEventKey(ctx, dbsqlc.LockEventKeyParams{Route: ev.Route, Key: ev.Key}); err != nil {
			return fmt.Errorf("error locking the event key: %w", err)
		}
		row, err := q.InsertEvent(ctx, dbsqlc.InsertEventParams{
			Route: ev.Route, Key: ev.Key, ContentType: ev.ContentType, Headers: headers, Body: ev.Body,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			res = Accepted{Duplicate: true}
			return nil
		}
		if err != nil {
			return fmt.Errorf("error inserting event: %w", err)
		}
		args := DeliverArgs{EventID: row.ID, Route: ev.Route, Key: ev.Key, ReceivedAt: row.ReceivedAt}
		job, err := in.jobs.InsertTx(ctx, tx, args, &river.InsertOpts{
			Queue:       ev.Route,
			MaxAttempts: ev.MaxAttempts,
		})
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

// isNoPartition reports Postgres refusing a row because no partition covers
// its received_at.
func isNoPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.CheckViolation && strings.Contains(pgErr.Message, "no partition")
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
