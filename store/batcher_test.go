package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

func newEvent(key string) *outbox.NewEvent {
	return &outbox.NewEvent{Route: "r", Key: key, ContentType: "application/json", Headers: http.Header{"X-N": {key}}, Body: []byte(`{"id":"` + key + `"}`), MaxAttempts: 3}
}

// TestAcceptBatchMixedDuplicates puts in one batch a key already stored,
// a key twice, and new keys: one row and one job per key, first one wins.
func TestAcceptBatchMixedDuplicates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.intake.Accept(ctx, newEvent("old")); err != nil {
		t.Fatal(err)
	}
	first, second := newEvent("twice"), newEvent("twice")
	second.Body = []byte(`{"id":"twice","second":true}`)
	res, err := b.intake.AcceptBatch(ctx, []*outbox.NewEvent{newEvent("a"), newEvent("old"), first, second, newEvent("b")})
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{false, true, false, true, false} // duplicate?
	for i, r := range res {
		if r.Duplicate != want[i] || (!r.Duplicate && (r.EventID == 0 || r.JobID == 0)) {
			t.Errorf("event %d: %+v, want duplicate=%v", i, r, want[i])
		}
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 4 {
		t.Errorf("%d rows, want 4", n)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job`); n != 4 {
		t.Errorf("%d jobs, want 4", n)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'twice' AND body = '{"id":"twice"}'`); n != 1 {
		t.Errorf("the first of the twice-sent key did not win")
	}
	// Each job points at its own event.
	if n := b.count(t, `SELECT count(*) FROM river_job j JOIN events e ON e.id = (j.args->>'event_id')::bigint
		AND e.received_at = (j.args->>'received_at')::timestamptz AND e.key = j.args->>'key'`); n != 4 {
		t.Errorf("%d jobs match their event, want 4", n)
	}
}

// TestBatcherManyConcurrentRequests sends 200 requests, a quarter of them
// repeating keys, through a Batcher at once: every key has one row and one
// job, and exactly one request per key was told "accepted".
func TestBatcherManyConcurrentRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	batcher := store.NewBatcher(b.intake, store.BatcherOptions{Workers: 2, MaxBatch: 32, Timeout: 10 * time.Second})
	defer batcher.Close()
	const n = 200
	var wg sync.WaitGroup
	results := make([]outbox.Accepted, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = batcher.Accept(context.Background(), newEvent(fmt.Sprint("k", i%150)))
		})
	}
	wg.Wait()
	accepted := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if !results[i].Duplicate {
			accepted[fmt.Sprint("k", i%150)]++
		}
	}
	if len(accepted) != 150 {
		t.Errorf("%d keys accepted, want 150", len(accepted))
	}
	for k, c := range accepted {
		if c != 1 {
			t.Errorf("key %s accepted %d times", k, c)
		}
	}
	if rows, jobs := b.count(t, `SELECT count(*) FROM events`), b.count(t, `SELECT count(*) FROM river_job`); rows != 150 || jobs != 150 {
		t.Errorf("%d rows and %d jobs, want 150 of each", rows, jobs)
	}
}

// TestBatchFailureFailsOnlyItsRequests makes one request in a stream
// invalid for the database: its batch fails as a whole, and every request
// is either told stored and is stored with its job, or told not stored and
// is absent. Nothing in between.
func TestBatchFailureFailsOnlyItsRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// A single batch with a bad event: nothing of it is stored.
	bad := newEvent(strings.Repeat("x", 600)) // over the 512-byte key constraint
	if _, err := b.intake.AcceptBatch(ctx, []*outbox.NewEvent{newEvent("good-1"), bad, newEvent("good-2")}); err == nil {
		t.Fatal("a batch with an invalid event succeeded")
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 0 {
		t.Fatalf("a failed batch stored %d events", n)
	}

	batcher := store.NewBatcher(b.intake, store.BatcherOptions{Workers: 2, MaxBatch: 8, Timeout: 10 * time.Second})
	defer batcher.Close()
	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ev := newEvent(fmt.Sprint("s", i))
			if i == 50 {
				ev = bad
			}
			_, errs[i] = batcher.Accept(ctx, ev)
		})
	}
	wg.Wait()
	failed := 0
	for i := range n {
		key := fmt.Sprint("s", i)
		stored := b.count(t, `SELECT count(*) FROM events WHERE key = $1`, key) == 1
		job := b.count(t, `SELECT count(*) FROM river_job WHERE args->>'key' = $1`, key) == 1
		switch {
		case errs[i] == nil && (!stored || !job):
			t.Errorf("request %d was told stored but row=%v job=%v", i, stored, job)
		case errs[i] != nil && i != 50 && (stored || job):
			t.Errorf("request %d was told not stored but row=%v job=%v", i, stored, job)
		}
		if errs[i] != nil {
			failed++
		}
	}
	if errs[50] == nil {
		t.Error("the invalid request succeeded")
	}
	if failed > 8 {
		t.Errorf("%d requests failed; only the bad one's batch (at most 8) should", failed)
	}
}

// TestCancelledWaitingRequestIsNotStored blocks the only worker on a lock,
// queues two requests, and cancels one while it waits: it returns at once
// with its context's error and is never stored; the other is.
func TestCancelledWaitingRequestIsNotStored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	batcher := store.NewBatcher(b.intake, store.BatcherOptions{Workers: 1, MaxBatch: 1, Timeout: 30 * time.Second})
	defer batcher.Close()

	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	blocker := make(chan error, 1)
	go func() { _, err := batcher.Accept(ctx, newEvent("blocker")); blocker <- err }()
	time.Sleep(300 * time.Millisecond) // the worker is now stuck on the lock

	cancelCtx, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { _, err := batcher.Accept(cancelCtx, newEvent("cancelled")); cancelled <- err }()
	other := make(chan error, 1)
	go func() { _, err := batcher.Accept(ctx, newEvent("other")); other <- err }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled request: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled request kept waiting")
	}
	_ = tx.Rollback(ctx)
	for name, ch := range map[string]chan error{"blocker": blocker, "other": other} {
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never finished", name)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'cancelled'`); n != 0 {
		t.Errorf("the cancelled request was stored")
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key IN ('blocker', 'other')`); n != 2 {
		t.Errorf("%d of the 2 live requests stored", n)
	}
}
