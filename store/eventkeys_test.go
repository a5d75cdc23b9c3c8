package store_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

func keyEvent(key string) *outbox.NewEvent {
	return &outbox.NewEvent{Route: "r", Key: key, ContentType: "application/json", Headers: http.Header{}, Body: []byte(`{"id":"` + key + `"}`), MaxAttempts: 3}
}

// keysMatchEvents asserts that event_keys holds exactly one row per stored
// event, naming it.
func (b *bundle) keysMatchEvents(t *testing.T) {
	t.Helper()
	if n := b.count(t, `SELECT count(*) FROM event_keys k FULL JOIN events e
		ON e.id = k.event_id AND e.received_at = k.received_at AND e.route = k.route AND e.key = k.key
		WHERE k.event_id IS NULL OR e.id IS NULL`); n != 0 {
		t.Errorf("%d keys without their event or events without their key", n)
	}
}

// TestRetentionRemovesKeysWithTheirEvents: the dedupe window is
// event_retention. A key whose event retention removed (an expired
// partition, an expired dead letter, a retained event once delivered) is
// accepted again; a key whose event is kept (retained, recent) is still a
// duplicate.
func TestRetentionRemovesKeysWithTheirEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if err := b.store.EnsurePartitions(ctx, time.Now().Add(-day(41)), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	b.insertAged(t, "old-delivered", day(10), true, "completed", day(10))
	b.insertAged(t, "old-pending", day(10), false, "retryable", 0)
	b.insertAged(t, "old-dead-expired", day(40), false, "cancelled", day(31))
	b.insertAged(t, "new-dead-expired", day(2), false, "discarded", day(31))
	b.insertAged(t, "new-delivered", day(2), true, "", 0)
	policy := store.RetentionPolicy{EventRetention: day(7), DeadLetterRetention: day(30)}
	if _, err := b.store.Maintain(ctx, policy, quiet); err != nil {
		t.Fatal(err)
	}
	b.keysMatchEvents(t)
	for key, dup := range map[string]bool{
		"old-delivered": false, "old-dead-expired": false, "new-dead-expired": false,
		"old-pending": true, "new-delivered": true,
	} {
		res, err := b.intake.Accept(ctx, keyEvent(key))
		if err != nil {
			t.Fatal(err)
		}
		if res.Duplicate != dup {
			t.Errorf("%s sent again after retention: duplicate=%v, want %v", key, res.Duplicate, dup)
		}
	}
	b.keysMatchEvents(t)

	// Once the retained event is delivered, retention removes it and its
	// key.
	b.exec(t, `UPDATE events SET delivered_at = now() WHERE key = 'old-pending'`)
	b.exec(t, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE args->>'key' = 'old-pending'`)
	if _, err := b.store.Maintain(ctx, policy, quiet); err != nil {
		t.Fatal(err)
	}
	if n := b.count(t, `SELECT count(*) FROM event_keys WHERE key = 'old-pending'`); n != 0 {
		t.Errorf("the removed retained event's key is still there")
	}
	b.keysMatchEvents(t)
}

// TestInterruptedDropRemovesKeysOnce: a drop interrupted between its detach
// and its drop is finished by the next run, keys included, and the survivor
// rescued then keeps its key.
func TestInterruptedDropRemovesKeysOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	part := partitionFixture(t, b)
	store.SetStepHook(b.store, func(_ context.Context, step string) error {
		if step == "detached "+part {
			return errors.New("killed between the detach and the drop")
		}
		return nil
	})
	policy := store.RetentionPolicy{EventRetention: day(7), DeadLetterRetention: day(30)}
	if _, err := b.store.Maintain(ctx, policy, quiet); err == nil {
		t.Fatal("the interrupted run reported no error")
	}
	b.retryLate(t)
	store.SetStepHook(b.store, nil)
	if _, err := b.store.Maintain(ctx, policy, quiet); err != nil {
		t.Fatal(err)
	}
	b.checkNothingLost(t, part)
	b.keysMatchEvents(t)
	if n := b.count(t, `SELECT count(*) FROM event_keys WHERE key IN ('old-retried-late', 'old-dead-kept')`); n != 2 {
		t.Errorf("%d keys of the rescued events, want 2", n)
	}
}

// TestConcurrentIntakeOfOneKey: a second intake of a key whose first
// intake has not committed waits for it, and is then a duplicate if it
// committed, or stored if it rolled back. Nothing is answered before the
// first transaction ends.
func TestConcurrentIntakeOfOneKey(t *testing.T) {
	t.Parallel()
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("first commits=%v", commit), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			first := store.NewIntake(b.store, b.client)
			inTx, release := make(chan struct{}), make(chan struct{})
			store.SetBeforeCommit(first, func() { close(inTx); <-release })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			firstDone := make(chan error, 1)
			go func() {
				_, err := first.Accept(ctx, keyEvent("k"))
				firstDone <- err
			}()
			<-inTx
			var second outbox.Accepted
			var secondErr error
			secondDone := make(chan struct{})
			go func() {
				defer close(secondDone)
				second, secondErr = b.intake.Accept(context.Background(), keyEvent("k"))
			}()
			// The second waits on the first's uncommitted key.
			for b.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'transactionid'`) == 0 {
				select {
				case <-secondDone:
					t.Fatalf("the second intake returned before the first ended: %+v %v", second, secondErr)
				case <-time.After(5 * time.Millisecond):
				}
			}
			if !commit {
				cancel() // the commit fails: the first rolls back
			}
			close(release)
			err := <-firstDone
			<-secondDone
			if commit && err != nil {
				t.Fatal(err)
			}
			if !commit && err == nil {
				t.Fatal("the first intake committed despite its cancelled context")
			}
			if secondErr != nil {
				t.Fatal(secondErr)
			}
			if second.Duplicate != commit {
				t.Errorf("second intake: duplicate=%v, want %v", second.Duplicate, commit)
			}
			if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'k'`); n != 1 {
				t.Errorf("%d events for the key, want 1", n)
			}
			b.keysMatchEvents(t)
		})
	}
}

// TestBatchesSharingKeysInOppositeOrders: concurrent batches that share
// keys, sent in opposite orders, neither deadlock nor store a key twice.
func TestBatchesSharingKeysInOppositeOrders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var keys []*outbox.NewEvent
	for i := range 50 {
		keys = append(keys, keyEvent(fmt.Sprint("k", i)))
	}
	reversed := make([]*outbox.NewEvent, len(keys))
	for i, k := range keys {
		reversed[len(keys)-1-i] = k
	}
	var wg sync.WaitGroup
	accepted := make([]int, 8)
	errs := make([]error, 8)
	for w := range 8 {
		wg.Go(func() {
			batch := keys
			if w%2 == 1 {
				batch = reversed
			}
			res, err := b.intake.AcceptBatch(context.Background(), batch)
			errs[w] = err
			for _, r := range res {
				if !r.Duplicate {
					accepted[w]++
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for w := range 8 {
		if errs[w] != nil {
			t.Errorf("batch %d: %v", w, errs[w])
		}
		total += accepted[w]
	}
	if total != len(keys) {
		t.Errorf("%d accepted in all, want %d: each key once", total, len(keys))
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != int64(len(keys)) {
		t.Errorf("%d events, want %d", n, len(keys))
	}
	b.keysMatchEvents(t)
}

// TestEventByKeyInOldAndRetainedEvents: an operator's lookup by key finds the
// event in an old partition and in events_retained.
func TestEventByKeyInOldAndRetainedEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.insertAged(t, "old", day(3), false, "available", 0)
	b.insertAged(t, "retained", day(3), false, "available", 0)
	b.exec(t, `UPDATE events SET retained = true WHERE key = 'retained'`)
	for _, key := range []string{"old", "retained"} {
		ev, err := b.store.EventByKey(ctx, "r", key)
		if err != nil || ev.Key != key {
			t.Errorf("%s: %+v %v", key, ev, err)
		}
	}
	if _, err := b.store.EventByKey(ctx, "r", "never"); outbox.ErrorCode(err) != outbox.ENOTFOUND {
		t.Errorf("unknown key: %v, want ENOTFOUND", err)
	}
}

// TestEventLoader loads many events at once, as concurrent deliveries do:
// each gets its own event, and a missing one is ENOTFOUND.
func TestEventLoader(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var evs []*outbox.NewEvent
	for i := range 300 {
		evs = append(evs, keyEvent(fmt.Sprint("e", i)))
	}
	res, err := b.intake.AcceptBatch(ctx, evs)
	if err != nil {
		t.Fatal(err)
	}
	var receivedAt time.Time
	if err := b.pool.QueryRow(ctx, `SELECT received_at FROM events LIMIT 1`).Scan(&receivedAt); err != nil {
		t.Fatal(err)
	}
	loader := store.NewEventLoader(b.store, 2, 64, 10*time.Second)
	defer loader.Close()
	var wg sync.WaitGroup
	for i, r := range res {
		wg.Go(func() {
			ev, err := loader.Load(ctx, r.EventID, receivedAt)
			if err != nil {
				t.Errorf("event %d: %v", i, err)
				return
			}
			if want := fmt.Sprint("e", i); ev.Key != want || string(ev.Body) != `{"id":"`+want+`"}` {
				t.Errorf("event %d: got key %s body %s", i, ev.Key, ev.Body)
			}
		})
	}
	wg.Wait()
	if _, err := loader.Load(ctx, res[0].EventID+100000, receivedAt); outbox.ErrorCode(err) != outbox.ENOTFOUND {
		t.Errorf("a missing event: %v, want ENOTFOUND", err)
	}
}

// loadEvent looks an event up as delivery does, through an EventLoader.
func loadEvent(t *testing.T, st *store.Store, ctx context.Context, id int64, receivedAt time.Time) (*store.DeliveryEvent, error) {
	t.Helper()
	l := store.NewEventLoader(st, 1, 1, 10*time.Second)
	defer l.Close()
	return l.Load(ctx, id, receivedAt)
}
