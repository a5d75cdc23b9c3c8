package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// TestCompleterRecordsConcurrentDeliveries completes 100 running delivery
// jobs at once through the group commit: every event is marked delivered
// with its attempt, and every job is completed, as river.JobCompleteTx
// would leave it.
func TestCompleterRecordsConcurrentDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const n = 100
	jobs := runningJobs(t, b, "done-", n)

	c := store.NewCompleter(b.store, 2, 16, 10*time.Second)
	defer c.Close()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, job := range jobs {
		wg.Go(func() { errs[i] = c.Complete(ctx, job) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("complete %d: %v", i, err)
		}
	}
	if got := b.count(t, `SELECT count(*) FROM events WHERE delivered_at IS NOT NULL AND delivery_attempts = 2`); got != n {
		t.Errorf("%d events marked delivered, want %d", got, n)
	}
	if got := b.count(t, `SELECT count(*) FROM river_job WHERE state = 'completed' AND finalized_at IS NOT NULL`); got != n {
		t.Errorf("%d jobs completed, want %d", got, n)
	}
}

// runningJobs accepts n events and returns their delivery jobs as a
// worker sees them, running their second attempt.
func runningJobs(t *testing.T, b *bundle, prefix string, n int) []*river.Job[outbox.DeliverArgs] {
	t.Helper()
	ctx := context.Background()
	evs := make([]*outbox.NewEvent, n)
	for i := range n {
		evs[i] = newEvent(fmt.Sprint(prefix, i))
	}
	if _, err := b.intake.AcceptBatch(ctx, evs); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `UPDATE river_job SET state = 'running', attempt = 2, attempted_at = now() WHERE args->>'key' LIKE $1`, prefix+"%")
	rows, err := b.pool.Query(ctx, `SELECT id, args FROM river_job WHERE args->>'key' LIKE $1 ORDER BY id`, prefix+"%")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var jobs []*river.Job[outbox.DeliverArgs]
	for rows.Next() {
		job := &river.Job[outbox.DeliverArgs]{JobRow: &rivertype.JobRow{Attempt: 2, State: rivertype.JobStateRunning}}
		if err := rows.Scan(&job.ID, &job.Args); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, job)
	}
	if err := rows.Err(); err != nil || len(jobs) != n {
		t.Fatalf("%d running jobs (%v), want %d", len(jobs), err, n)
	}
	return jobs
}

// TestCompleterDoesNotWaitForHeldRows holds one event's row and another
// delivery's job row from a second connection, as retention moving an
// event or an operator's retry would: the other deliveries of the same
// batch are recorded at once, the two held ones are answered
// ErrRecordBusy without waiting, and they are recorded once released.
func TestCompleterDoesNotWaitForHeldRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	jobs := runningJobs(t, b, "held-", 6)
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SELECT 1 FROM events WHERE id = $1 FOR UPDATE`, jobs[0].Args.EventID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM river_job WHERE id = $1 FOR UPDATE`, jobs[1].ID); err != nil {
		t.Fatal(err)
	}
	// One commit worker, and every call queued before it starts: they
	// share batches, held rows included.
	c := store.NewCompleter(b.store, 1, 16, time.Minute)
	defer c.Close()
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	start := time.Now()
	for i, job := range jobs {
		wg.Go(func() { errs[i] = c.Complete(ctx, job) })
	}
	wg.Wait()
	// The lock is still held: nothing can have waited for it to go.
	for i, err := range errs {
		want := error(nil)
		if i < 2 {
			want = store.ErrRecordBusy
		}
		if !errors.Is(err, want) {
			t.Errorf("delivery %d: %v, want %v", i, err, want)
		}
	}
	if got := b.count(t, `SELECT count(*) FROM events WHERE key LIKE 'held-%' AND delivered_at IS NOT NULL`); got != 4 {
		t.Errorf("%d events recorded while two rows were held, want 4", got)
	}
	t.Logf("answered in %s", time.Since(start))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for _, job := range jobs[:2] {
		if err := c.Complete(ctx, job); err != nil {
			t.Errorf("after the rows were released: %v", err)
		}
	}
	if got := b.count(t, `SELECT count(*) FROM events WHERE key LIKE 'held-%' AND delivered_at IS NOT NULL AND delivery_attempts = 2`); got != 6 {
		t.Errorf("%d events recorded, want 6", got)
	}
	if got := b.count(t, `SELECT count(*) FROM river_job WHERE args->>'key' LIKE 'held-%' AND state = 'completed'`); got != 6 {
		t.Errorf("%d jobs completed, want 6", got)
	}
}

// TestCompleterRecordsWhatIsLeft: a job that is no longer running (River's
// rescuer took it) still gets its event marked delivered, and an event
// that is gone does not stop its job from completing.
func TestCompleterRecordsWhatIsLeft(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	jobs := runningJobs(t, b, "left-", 2)
	b.exec(t, `UPDATE river_job SET state = 'retryable' WHERE id = $1`, jobs[0].ID)
	b.exec(t, `DELETE FROM events WHERE id = $1`, jobs[1].Args.EventID)
	c := store.NewCompleter(b.store, 1, 16, time.Minute)
	defer c.Close()
	for _, job := range jobs {
		if err := c.Complete(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.count(t, `SELECT count(*) FROM events WHERE id = $1 AND delivered_at IS NOT NULL`, jobs[0].Args.EventID); got != 1 {
		t.Error("the rescued job's event was not marked delivered")
	}
	if got := b.count(t, `SELECT count(*) FROM river_job WHERE id = $1 AND state = 'retryable'`, jobs[0].ID); got != 1 {
		t.Error("a job that is no longer running was changed")
	}
	if got := b.count(t, `SELECT count(*) FROM river_job WHERE id = $1 AND state = 'completed'`, jobs[1].ID); got != 1 {
		t.Error("the job of a vanished event was not completed")
	}
}
