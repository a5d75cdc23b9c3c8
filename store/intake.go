package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"

	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// Intake stores accepted webhooks: event rows and their delivery jobs in one
// transaction.
type Intake struct {
	store *Store
	jobs  JobInserter
	// beforeCommit, when set (by tests), runs at the end of each intake
	// transaction, before its commit.
	beforeCommit func()
}

// NewIntake returns an Intake that enqueues delivery jobs with jobs.
func NewIntake(store *Store, jobs JobInserter) *Intake {
	return &Intake{store: store, jobs: jobs}
}

// Accept stores ev and enqueues its delivery in a transaction of its own,
// and returns only after the commit. A (route, key) already stored, or
// stored concurrently by another request, comes back as a Duplicate with no
// new row and no new job. Serve groups concurrent requests into shared
// transactions with a Batcher instead.
func (in *Intake) Accept(ctx context.Context, ev *outbox.NewEvent) (outbox.Accepted, error) {
	res, err := in.AcceptBatch(ctx, []*outbox.NewEvent{ev})
	if err != nil {
		return outbox.Accepted{}, err
	}
	return res[0], nil
}

// AcceptBatch stores events and enqueues their deliveries in one
// transaction, and returns each one's outcome, in order, only after the
// commit. Within the batch, the first event of a (route, key) wins and the
// others are duplicates. If the transaction fails, every event in it fails.
func (in *Intake) AcceptBatch(ctx context.Context, evs []*outbox.NewEvent) ([]outbox.Accepted, error) {
	params := dbsqlc.InsertEventsParams{
		Routes: make([]string, len(evs)), Keys: make([]string, len(evs)), ContentTypes: make([]string, len(evs)),
		Headers: make([][]byte, len(evs)), Bodies: make([][]byte, len(evs)), OrderingKeys: make([]string, len(evs)),
	}
	for i, ev := range evs {
		headers, err := json.Marshal(ev.Headers)
		if err != nil {
			return nil, fmt.Errorf("error encoding headers: %w", err)
		}
		params.Routes[i], params.Keys[i], params.ContentTypes[i] = ev.Route, ev.Key, ev.ContentType
		params.Headers[i], params.Bodies[i], params.OrderingKeys[i] = headers, ev.Body, ev.OrderingKey
	}
	res, err := in.acceptBatch(ctx, evs, params)
	if isNoPartition(err) {
		// The maintenance job creates partitions days ahead; if it has not
		// run, create the one needed now and try again. Creating one never
		// waits for readers of events, and waits at most a second for other
		// DDL on it, so the request still answers within its budget.
		if _, perr := in.store.ensurePartitions(ctx, time.Now(), time.Now().Add(in.store.PartitionInterval), intakePartitionLockWait); perr != nil {
			return nil, fmt.Errorf("%w (and creating the partition failed: %w)", err, perr)
		}
		res, err = in.acceptBatch(ctx, evs, params)
	}
	return res, err
}

type routeKey struct{ route, key string }

func (in *Intake) acceptBatch(ctx context.Context, evs []*outbox.NewEvent, params dbsqlc.InsertEventsParams) ([]outbox.Accepted, error) {
	res := make([]outbox.Accepted, len(evs))
	err := pgx.BeginFunc(ctx, in.store.pool, func(tx pgx.Tx) error {
		q := in.store.q.WithTx(tx)
		// The ordering keys' locks come before the event keys: a
		// transaction that waits for another's uncommitted event key
		// (InsertEvents) then holds no lock that one still needs.
		if slices.ContainsFunc(params.OrderingKeys, func(k string) bool { return k != "" }) {
			if err := q.LockOrderingKeys(ctx, dbsqlc.LockOrderingKeysParams{Routes: params.Routes, OrderingKeys: params.OrderingKeys}); err != nil {
				return fmt.Errorf("error locking ordering keys: %w", err)
			}
		}
		rows, err := q.InsertEvents(ctx, params)
		if err != nil {
			return fmt.Errorf("error inserting events: %w", err)
		}
		inserted := make(map[routeKey]dbsqlc.InsertEventsRow, len(rows))
		for _, r := range rows {
			inserted[routeKey{r.Route, r.Key}] = r
		}
		jobs := make([]river.InsertManyParams, 0, len(rows))
		owner := make([]int, 0, len(rows)) // index in evs of each job
		for i, ev := range evs {
			rk := routeKey{ev.Route, ev.Key}
			row, ok := inserted[rk]
			if !ok {
				res[i] = outbox.Accepted{Duplicate: true}
				continue
			}
			delete(inserted, rk) // a later event of the same key is a duplicate
			res[i] = outbox.Accepted{EventID: row.ID}
			opts := &river.InsertOpts{Queue: ev.Route, MaxAttempts: ev.MaxAttempts}
			if ev.RequestID != "" || len(ev.TraceContext) > 0 {
				meta := make(map[string]string, len(ev.TraceContext)+1)
				maps.Copy(meta, ev.TraceContext)
				if ev.RequestID != "" {
					meta[outbox.MetadataRequestID] = ev.RequestID
				}
				opts.Metadata, _ = json.Marshal(meta)
			}
			jobs = append(jobs, river.InsertManyParams{
				Args:       outbox.DeliverArgs{EventID: row.ID, Route: ev.Route, Key: ev.Key, ReceivedAt: row.ReceivedAt, OrderingKey: ev.OrderingKey},
				InsertOpts: opts,
			})
			owner = append(owner, i)
		}
		if len(jobs) == 0 {
			return nil
		}
		// Under the ordering locks taken with the dedupe locks: a job of a
		// busy ordering key waits as pending, so a key's events are
		// delivered in the order of their ids, which is commit order.
		if err := sequenceJobs(ctx, q, jobs); err != nil {
			return err
		}
		results, err := in.jobs.InsertManyTx(ctx, tx, jobs)
		if err != nil {
			return fmt.Errorf("error enqueuing deliveries: %w", err)
		}
		for j, r := range results {
			res[owner[j]].JobID = r.Job.ID
		}
		if in.beforeCommit != nil {
			in.beforeCommit()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable
}

// isNoPartition reports Postgres refusing a row because no partition covers
// its received_at.
func isNoPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.CheckViolation && strings.Contains(pgErr.Message, "no partition")
}
