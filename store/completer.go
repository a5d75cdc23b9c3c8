package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// Completer records successful deliveries with group commit: the
// deliveries that finish while one commit is under way share the next one,
// which marks their events delivered and completes their jobs together.
// Recording each delivery in a transaction of its own costs one WAL flush
// per delivery, which is what limits delivery rate on ordinary disks.
//
// A batch never waits for a row another transaction holds (retention
// moving an event to events_retained, an operator's retry updating a job):
// such a delivery is answered ErrRecordBusy and the others commit. The
// caller tries again; see jobs.Deliverer.
type Completer struct {
	store *Store
	g     *groupCommit[*river.Job[outbox.DeliverArgs], error]
}

// ErrRecordBusy says that another transaction holds a row that recording
// the delivery must update, its event or its job. It is transient: try
// again shortly.
var ErrRecordBusy = outbox.Errorf(outbox.EUNAVAILABLE, "its event or job row is locked by another transaction")

// completerLockTimeout bounds how long a batch waits for a table-level lock,
// such as partition DDL holds on events_live, before it fails and is tried
// again.
const completerLockTimeout = "2s"

// NewCompleter starts a Completer. Each commit is bounded by timeout. Close
// stops it.
func NewCompleter(st *Store, workers, maxBatch int, timeout time.Duration) *Completer {
	c := &Completer{store: st}
	c.g = newGroupCommit(workers, maxBatch, timeout, c.commit)
	return c
}

// Complete records job's event as delivered and completes the job, in a
// transaction it shares with other deliveries, and returns after the
// commit. When the worker then returns, River finds the job already
// completed and leaves it, as after river.JobCompleteTx.
//
// Any error means the delivery is not recorded yet: ErrRecordBusy, a
// database error, or ctx's error (the batch may still commit). Every one
// of them may go away; Complete is safe to call again for the same job.
// A job that is no longer running, or an event that is gone, is not an
// error: whatever of the two is left is recorded.
func (c *Completer) Complete(ctx context.Context, job *river.Job[outbox.DeliverArgs]) error {
	res, err := c.g.do(ctx, job)
	if err != nil {
		return err
	}
	return res
}

// Close stops taking deliveries and waits for the commits under way.
func (c *Completer) Close() { c.g.close() }

// commit records the batch's deliveries whose rows it can lock at once,
// and answers ErrRecordBusy for the others.
func (c *Completer) commit(ctx context.Context, jobs []*river.Job[outbox.DeliverArgs]) ([]error, error) {
	res := make([]error, len(jobs))
	err := pgx.BeginFunc(ctx, c.store.pool, func(tx pgx.Tx) error {
		q := c.store.q.WithTx(tx)
		if err := q.SetCompleterLockTimeout(ctx, completerLockTimeout); err != nil {
			return fmt.Errorf("error setting lock_timeout: %w", err)
		}
		events := dbsqlc.LockDeliveredEventsParams{Ids: make([]int64, len(jobs)), ReceivedAts: make([]time.Time, len(jobs))}
		jobIDs := make([]int64, len(jobs))
		for i, job := range jobs {
			events.Ids[i], events.ReceivedAts[i], jobIDs[i] = job.Args.EventID, job.Args.ReceivedAt, job.ID
		}
		lockedEvents, err := q.LockDeliveredEvents(ctx, events)
		if err != nil {
			return fmt.Errorf("error locking events: %w", err)
		}
		lockedJobs, err := q.LockDeliveryJobs(ctx, jobIDs)
		if err != nil {
			return fmt.Errorf("error locking delivery jobs: %w", err)
		}
		// A row that was skipped is either held by another transaction
		// (busy) or gone (nothing to update).
		var skipped dbsqlc.PresentEventsParams
		var skippedJobs []int64
		for i, job := range jobs {
			if !slices.Contains(lockedEvents, job.Args.EventID) {
				skipped.Ids = append(skipped.Ids, events.Ids[i])
				skipped.ReceivedAts = append(skipped.ReceivedAts, events.ReceivedAts[i])
			}
			if !slices.Contains(lockedJobs, job.ID) {
				skippedJobs = append(skippedJobs, job.ID)
			}
		}
		var heldEvents, heldJobs []int64
		if len(skipped.Ids) > 0 {
			if heldEvents, err = q.PresentEvents(ctx, skipped); err != nil {
				return fmt.Errorf("error reading events: %w", err)
			}
		}
		if len(skippedJobs) > 0 {
			if heldJobs, err = q.PresentJobs(ctx, skippedJobs); err != nil {
				return fmt.Errorf("error reading delivery jobs: %w", err)
			}
		}
		var ready []*river.Job[outbox.DeliverArgs]
		for i, job := range jobs {
			if slices.Contains(heldEvents, job.Args.EventID) || slices.Contains(heldJobs, job.ID) {
				res[i] = ErrRecordBusy
				continue
			}
			ready = append(ready, job)
		}
		if len(ready) == 0 {
			return nil
		}
		return c.record(ctx, q, ready)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// record marks the events delivered and completes the jobs, whose rows the
// transaction holds.
func (c *Completer) record(ctx context.Context, q *dbsqlc.Queries, jobs []*river.Job[outbox.DeliverArgs]) error {
	now := time.Now()
	marks := dbsqlc.MarkEventsDeliveredParams{
		Ids: make([]int64, len(jobs)), ReceivedAts: make([]time.Time, len(jobs)), Attempts: make([]int32, len(jobs)),
	}
	ids := make([]int64, len(jobs))
	for i, job := range jobs {
		marks.Ids[i], marks.ReceivedAts[i], marks.Attempts[i] = job.Args.EventID, job.Args.ReceivedAt, int32(job.Attempt)
		ids[i] = job.ID
	}
	if err := q.MarkEventsDelivered(ctx, marks); err != nil {
		return fmt.Errorf("error marking events delivered: %w", err)
	}
	// River's own completion, for many jobs at once: what
	// river.JobCompleteTx does for one (see CompleteRunningJobs).
	if err := q.CompleteRunningJobs(ctx, dbsqlc.CompleteRunningJobsParams{Ids: ids, FinalizedAt: now}); err != nil {
		return fmt.Errorf("error completing delivery jobs: %w", err)
	}
	return nil
}
