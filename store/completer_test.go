package store_test

import (
	"context"
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
	evs := make([]*outbox.NewEvent, n)
	for i := range n {
		evs[i] = newEvent(fmt.Sprint("done-", i))
	}
	res, err := b.intake.AcceptBatch(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	b.exec(t, `UPDATE river_job SET state = 'running', attempt = 2, attempted_at = now()`)
	rows, err := b.pool.Query(ctx, `SELECT id, args FROM river_job ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id   int64
		args outbox.DeliverArgs
	}
	var jobs []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.args); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, r)
	}
	rows.Close()
	if len(jobs) != n || len(res) != n {
		t.Fatalf("%d jobs", len(jobs))
	}

	c := store.NewCompleter(b.store, 2, 16, 10*time.Second)
	defer c.Close()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, j := range jobs {
		wg.Go(func() {
			job := &river.Job[outbox.DeliverArgs]{JobRow: &rivertype.JobRow{ID: j.id, Attempt: 2, State: rivertype.JobStateRunning}, Args: j.args}
			errs[i] = c.Complete(ctx, job)
		})
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
