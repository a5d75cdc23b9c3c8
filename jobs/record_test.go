package jobs_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestLockedRowsDoNotMultiplyDeliveries holds, from a second connection,
// the rows that recording a delivery must update (the events, or their
// River jobs) while the target acknowledges deliveries, for longer than
// the completer's old 10 s limit. While recording waits, the target sees no
// more than the route's concurrency of deliveries it has not seen recorded;
// once the rows are free, every event is recorded, and the target got
// exactly one request per event: a lock is not a crash.
func TestLockedRowsDoNotMultiplyDeliveries(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, lock string }{
		{"events rows", `SELECT id FROM events FOR UPDATE`},
		{"river_job rows", `SELECT id FROM river_job WHERE kind = 'deliver' FOR UPDATE`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			const concurrency, events = 2, 10
			gate := make(chan struct{})
			var mu sync.Mutex
			perKey := map[string]int{}
			inFlight := 0
			tg := newTarget(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				perKey[r.Header.Get("X-Outbox-Key")]++
				inFlight++
				mu.Unlock()
				<-gate
				mu.Lock()
				inFlight--
				mu.Unlock()
			})
			// A fixed limit: the test holds the first deliveries at the
			// target, which an adaptive limit's slow start would send one
			// at a time.
			b := setup(t, tg.URL, fmt.Sprintf(`    retry: {initial_backoff: 100ms, max_backoff: 200ms}
    concurrency: %d
    adaptive_concurrency: false`, concurrency))
			for i := range events {
				b.accept(t, fmt.Sprintf(`{"id":"locked-%02d"}`, i), 10)
			}
			requests := func() (total int, keys map[string]int) {
				mu.Lock()
				defer mu.Unlock()
				keys = map[string]int{}
				for k, n := range perKey {
					keys[k] = n
					total += n
				}
				return total, keys
			}
			waitFor(t, 30*time.Second, "the first deliveries to reach the target", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return inFlight == concurrency
			})

			// Lock the rows, then let the target answer 200.
			ctx := context.Background()
			tx, err := b.pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx) //nolint:errcheck
			if _, err := tx.Exec(ctx, c.lock); err != nil {
				t.Fatal(err)
			}
			close(gate)
			// Past the 10 s after which the completer used to give up and
			// fail a delivery the target already had. Nothing here waits on
			// the machine's speed: recording must simply outlast the lock.
			holdUntil := time.Now().Add(11 * time.Second)
			worst := 0
			for time.Now().Before(holdUntil) {
				n, _ := requests()
				worst = max(worst, n)
				time.Sleep(50 * time.Millisecond)
			}
			if worst > concurrency {
				t.Errorf("while the rows were locked the target got %d requests; at most concurrency (%d) may wait to be recorded", worst, concurrency)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}

			waitFor(t, 60*time.Second, "every event to be recorded as delivered", func() bool {
				var n int
				err := b.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE delivered_at IS NOT NULL`).Scan(&n)
				return err == nil && n == events
			})
			waitFor(t, 30*time.Second, "every job to be completed", func() bool {
				var n int
				err := b.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'deliver' AND state = 'completed'`).Scan(&n)
				return err == nil && n == events
			})
			total, keys := requests()
			if total != events || len(keys) != events {
				t.Errorf("target got %d requests for %d events (%v); want exactly one each", total, events, keys)
			}
			var attempts []int32
			rows, _ := b.pool.Query(ctx, `SELECT delivery_attempts FROM events ORDER BY key`)
			attempts, err = pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil {
				t.Fatal(err)
			}
			for i, a := range attempts {
				if a != 1 {
					t.Errorf("event %d recorded with delivery_attempts %d, want 1", i, a)
				}
			}
		})
	}
}
