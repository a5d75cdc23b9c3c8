package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// Completer records successful deliveries with group commit: the
// deliveries that finish while one commit is under way share the next one,
// which marks their events delivered and completes their jobs together.
// Recording each delivery in a transaction of its own costs one WAL flush
// per delivery, which is what limits delivery rate on ordinary disks.
type Completer struct {
	store *Store
	g     *groupCommit[*river.Job[outbox.DeliverArgs], struct{}]
}

// NewCompleter starts a Completer. Close stops it.
func NewCompleter(st *Store, workers, maxBatch int, timeout time.Duration) *Completer {
	c := &Completer{store: st}
	c.g = newGroupCommit(workers, maxBatch, timeout, c.commit)
	return c
}

// Complete records job's event as delivered and completes the job, in a
// transaction it shares with other deliveries, and returns after the
// commit. When the worker then returns, River finds the job already
// completed and leaves it, as after river.JobCompleteTx.
func (c *Completer) Complete(ctx context.Context, job *river.Job[outbox.DeliverArgs]) error {
	_, err := c.g.do(ctx, job)
	return err
}

// Close stops taking deliveries and waits for the commits under way.
func (c *Completer) Close() { c.g.close() }

func (c *Completer) commit(ctx context.Context, jobs []*river.Job[outbox.DeliverArgs]) ([]struct{}, error) {
	err := c.commitOnce(ctx, jobs)
	// Retention may be moving one of these events to events_retained at
	// this moment (a cross-partition update): Postgres then refuses with a
	// serialization error, and the batch is tried once more.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.SerializationFailure {
		err = c.commitOnce(ctx, jobs)
	}
	if err != nil {
		return nil, err
	}
	return make([]struct{}, len(jobs)), nil
}

func (c *Completer) commitOnce(ctx context.Context, jobs []*river.Job[outbox.DeliverArgs]) error {
	now := time.Now()
	marks := dbsqlc.MarkEventsDeliveredParams{
		Ids: make([]int64, len(jobs)), ReceivedAts: make([]time.Time, len(jobs)), Attempts: make([]int32, len(jobs)),
	}
	complete := &riverdriver.JobSetStateIfRunningManyParams{
		ID: make([]int64, len(jobs)), Attempt: make([]*int, len(jobs)), ErrData: make([][]byte, len(jobs)),
		FinalizedAt: make([]*time.Time, len(jobs)), MetadataDoMerge: make([]bool, len(jobs)),
		MetadataUpdates: make([][]byte, len(jobs)), ScheduledAt: make([]*time.Time, len(jobs)),
		State: make([]rivertype.JobState, len(jobs)),
	}
	for i, job := range jobs {
		marks.Ids[i], marks.ReceivedAts[i], marks.Attempts[i] = job.Args.EventID, job.Args.ReceivedAt, int32(job.Attempt)
		complete.ID[i], complete.FinalizedAt[i], complete.State[i] = job.ID, &now, rivertype.JobStateCompleted
	}
	return pgx.BeginFunc(ctx, c.store.pool, func(tx pgx.Tx) error {
		if err := c.store.q.WithTx(tx).MarkEventsDelivered(ctx, marks); err != nil {
			return fmt.Errorf("error marking events delivered: %w", err)
		}
		// River's own completion, for many jobs at once: what
		// river.JobCompleteTx does for one.
		if _, err := riverpgxv5.New(nil).UnwrapExecutor(tx).JobSetStateIfRunningMany(ctx, complete); err != nil {
			return fmt.Errorf("error completing delivery jobs: %w", err)
		}
		return nil
	})
}
