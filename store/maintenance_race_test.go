package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/webhook-outbox/webhook-outbox/store"
)

// The tests in this file stage races between maintenance and operators or
// intake deterministically: a second connection holds a lock, and the test
// waits for maintenance to queue behind it (waitForLockWait) before it lets
// go, or a step hook pauses or fails maintenance between two steps.

var policy7d30d = store.RetentionPolicy{EventRetention: day(7), DeadLetterRetention: day(30)}

type maintainResult struct {
	rep *store.MaintenanceReport
	err error
}

// maintainAsync runs Maintain in the background.
func (b *bundle) maintainAsync(ctx context.Context, policy store.RetentionPolicy, logger *slog.Logger) chan maintainResult {
	done := make(chan maintainResult, 1)
	go func() {
		rep, err := b.store.Maintain(ctx, policy, logger)
		done <- maintainResult{rep, err}
	}()
	return done
}

// waitForLockWait waits until some session of the test's database other
// than the given ones waits for a lock, or until done is ready. It reports
// whether a waiter was seen.
func (b *bundle) waitForLockWait(t *testing.T, done chan maintainResult, holders ...*pgx.Conn) bool {
	t.Helper()
	pids := []uint32{}
	for _, h := range holders {
		pids = append(pids, h.PgConn().PID())
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := b.pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND NOT (pid = ANY($1::int[]))`, pids).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return true
		}
		select {
		case res := <-done:
			done <- res // put it back for the caller
			return false
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("maintenance neither finished nor waited for a lock within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bundle) conn(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), b.pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// hold runs sql in a transaction on a connection of its own, and leaves the
// transaction open, holding the locks sql took.
func (b *bundle) hold(t *testing.T, sql string) *pgx.Conn {
	t.Helper()
	c := b.conn(t)
	mustExec(t, c, `BEGIN`)
	mustExec(t, c, sql)
	return c
}

// dropPartition drops the first events partition matching where, as if
// maintenance had not created it, and returns its name.
func (b *bundle) dropPartition(t *testing.T, where string) string {
	t.Helper()
	var name string
	if err := b.pool.QueryRow(context.Background(), `SELECT name FROM outbox_live_partitions() WHERE `+where+` LIMIT 1`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `DROP TABLE `+name)
	return name
}

func mustExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

func await(t *testing.T, done <-chan maintainResult) maintainResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(60 * time.Second):
		t.Fatal("maintenance did not finish within 60s")
		return maintainResult{}
	}
}

func (b *bundle) jobID(t *testing.T, key string) int64 {
	t.Helper()
	return b.count(t, `SELECT id FROM river_job WHERE args->>'key' = $1 ORDER BY id DESC LIMIT 1`, key)
}

// TestExpiryKeepsADeadLetterRetriedMeanwhile retries an expired dead letter
// while maintenance expires it: the retry's transaction holds the job row
// when maintenance reaches it, and commits once maintenance waits for it.
// The retried job and its event must both survive, since the operator was
// told the dead letter was retried.
func TestExpiryKeepsADeadLetterRetriedMeanwhile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.insertAged(t, "expired-then-retried", day(32), false, "discarded", day(31))
	b.insertAged(t, "expired", day(32), false, "cancelled", day(31))
	// Their partition expired long ago; earlier runs kept them as survivors.
	b.exec(t, `UPDATE events SET retained = true`)
	id := b.jobID(t, "expired-then-retried")

	retry := b.hold(t, fmt.Sprintf(`UPDATE river_job SET state = 'available', attempt = 0, finalized_at = NULL, scheduled_at = now() WHERE id = %d`, id))

	done := b.maintainAsync(ctx, policy7d30d, quiet)
	if !b.waitForLockWait(t, done, retry) {
		t.Log("maintenance finished without waiting for the retry's lock")
	}
	mustExec(t, retry, `COMMIT`)
	res := await(t, done)
	if res.err != nil {
		t.Fatal(res.err)
	}

	if n := b.count(t, `SELECT count(*) FROM river_job WHERE id = $1 AND state = 'available'`, id); n != 1 {
		t.Errorf("the retried job is gone or not available (%d rows): maintenance expired a dead letter an operator had just retried", n)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'expired-then-retried'`); n != 1 {
		t.Errorf("the retried dead letter's event is gone: its delivery will find nothing to send")
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'expired'`); n != 0 {
		t.Errorf("the expired dead letter that nobody retried is still there")
	}
	if res.rep.DeadLettersExpired != 1 {
		t.Errorf("report says %d dead letters expired, want 1", res.rep.DeadLettersExpired)
	}
}

// partitionFixture stores three events in one partition ten days old: one
// delivered (dropped with its partition), one dead letter still kept
// (retained before the detach), and one delivered whose completed job an
// operator will retry after the detach (a survivor that appears late).
func partitionFixture(t *testing.T, b *bundle) (partition string) {
	t.Helper()
	b.insertAged(t, "old-delivered", day(10), true, "completed", day(10))
	b.insertAged(t, "old-dead-kept", day(10), false, "discarded", day(9))
	b.insertAged(t, "old-retried-late", day(10), true, "completed", day(10))
	return b.partitionOf(t, "old-delivered")
}

func (b *bundle) partitionOf(t *testing.T, key string) string {
	t.Helper()
	var name string
	if err := b.pool.QueryRow(context.Background(), `SELECT tableoid::regclass::text FROM events WHERE key = $1`, key).Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// retryLate retries old-retried-late's completed job through River's API, as
// River UI does: the job becomes available again while its event is in a
// partition retention is removing.
func (b *bundle) retryLate(t *testing.T) {
	t.Helper()
	if _, err := b.client.JobRetry(context.Background(), b.jobID(t, "old-retried-late")); err != nil {
		t.Fatal(err)
	}
}

// checkNothingLost asserts the end state after retention has finished with
// partition: no table of it left, no events table outside events_live, and
// every event that must stay still reachable.
func (b *bundle) checkNothingLost(t *testing.T, partition string) {
	t.Helper()
	if n := b.count(t, `SELECT count(*) FROM pg_class WHERE relname = $1`, partition); n != 0 {
		t.Errorf("%s still exists on disk", partition)
	}
	if n := b.count(t, `SELECT count(*) FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'events\_p%'
		AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)`); n != 0 {
		t.Errorf("%d events partitions are orphaned: detached from events_live and never dropped", n)
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters WHERE key = 'old-dead-kept'`); n != 1 {
		t.Errorf("the kept dead letter left dead_letters")
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'old-delivered'`); n != 0 {
		t.Errorf("the expired delivered event is still there")
	}
	var id int64
	var receivedAt time.Time
	if err := b.pool.QueryRow(context.Background(), `SELECT (args->>'event_id')::bigint, (args->>'received_at')::timestamptz FROM river_job WHERE args->>'key' = 'old-retried-late'`).Scan(&id, &receivedAt); err != nil {
		t.Fatal(err)
	}
	if _, err := loadEvent(t, b.store, context.Background(), id, receivedAt); err != nil {
		t.Errorf("the event of a job retried during the drop is lost: %v", err)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job j WHERE j.state <> 'completed' AND NOT EXISTS (
		SELECT 1 FROM events e WHERE e.id = (j.args->>'event_id')::bigint AND e.received_at = (j.args->>'received_at')::timestamptz)`); n != 0 {
		t.Errorf("%d open jobs point at events that are gone", n)
	}
}

// TestInterruptedPartitionDropIsFinished interrupts retention after it has
// started removing an expired partition, lets a survivor appear in it (an
// operator retries an old delivery from River UI), and runs retention again:
// that run must rescue the survivor and remove the partition, leaving
// nothing orphaned and losing nothing.
func TestInterruptedPartitionDropIsFinished(t *testing.T) {
	t.Parallel()

	t.Run("error between detach and drop", func(t *testing.T) {
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
		if _, err := b.store.Maintain(ctx, policy7d30d, quiet); err == nil {
			t.Fatal("the interrupted run reported no error")
		}
		b.retryLate(t)
		store.SetStepHook(b.store, nil)
		if _, err := b.store.Maintain(ctx, policy7d30d, quiet); err != nil {
			t.Fatal(err)
		}
		b.checkNothingLost(t, part)
	})

	t.Run("postgres error in the drop", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		part := partitionFixture(t, b)
		// Between the detach and the drop, a session reads the detached
		// table, so the drop cannot have it; the run is cancelled while it
		// waits (or gives up on its own), and Postgres fails the statement.
		reader := b.conn(t)
		store.SetStepHook(b.store, func(_ context.Context, step string) error {
			if step != "detached "+part {
				return nil
			}
			// This runs on maintenance's goroutine: errors, not t.Fatal.
			ctx := context.Background() // not the run's, which the test cancels
			if _, err := reader.Exec(ctx, `BEGIN; SELECT count(*) FROM `+part); err != nil {
				return fmt.Errorf("test reader: %w", err)
			}
			var late int64
			if err := b.pool.QueryRow(ctx, `SELECT id FROM river_job WHERE args->>'key' = 'old-retried-late'`).Scan(&late); err != nil {
				return err
			}
			_, err := b.client.JobRetry(ctx, late)
			return err
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := b.maintainAsync(ctx, policy7d30d, quiet)
		b.waitForLockWait(t, done, reader)
		cancel()
		if res := await(t, done); res.err == nil {
			t.Fatal("the interrupted run reported no error")
		} else {
			t.Logf("interrupted run: %v", res.err)
		}
		mustExec(t, reader, `ROLLBACK`)
		store.SetStepHook(b.store, nil)
		if _, err := b.store.Maintain(context.Background(), policy7d30d, quiet); err != nil {
			t.Fatal(err)
		}
		b.checkNothingLost(t, part)
	})

	t.Run("detach cancelled while it waits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		part := partitionFixture(t, b)
		// A reader of the partition makes DETACH ... CONCURRENTLY wait in
		// its second transaction; cancelled there, the detach stays pending.
		reader := b.hold(t, `SELECT count(*) FROM `+part)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := b.maintainAsync(ctx, policy7d30d, quiet)
		b.waitForLockWait(t, done, reader)
		cancel()
		if res := await(t, done); res.err == nil {
			t.Fatal("the interrupted run reported no error")
		} else {
			t.Logf("interrupted run: %v", res.err)
		}
		b.retryLate(t)
		mustExec(t, reader, `ROLLBACK`)
		if _, err := b.store.Maintain(context.Background(), policy7d30d, quiet); err != nil {
			t.Fatal(err)
		}
		b.checkNothingLost(t, part)
	})
}

// TestPartitionCreationDoesNotStallIntake runs maintenance's partition
// creation while another session holds a lock on events_live, and sends a
// webhook meanwhile: intake must commit promptly instead of queueing behind
// a lock request of maintenance's.
func TestPartitionCreationDoesNotStallIntake(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, hold string
		// retryLater: maintenance cannot create the partition while the
		// lock is held, and says it will retry.
		retryLater bool
	}{
		// A long reader, such as outbox stats --exact.
		{"long reader", `SELECT count(*) FROM events_live`, false},
		// Other DDL on events_live, such as a detach waiting for a reader.
		{"ddl in progress", `LOCK TABLE events_live IN SHARE UPDATE EXCLUSIVE MODE`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			// The newest partition is missing, so maintenance creates it.
			newest := b.dropPartition(t, `true ORDER BY range_start DESC`)
			holder := b.hold(t, c.hold)

			var logs syncBuffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			done := b.maintainAsync(context.Background(), store.RetentionPolicy{EventRetention: day(7)}, logger)
			b.waitForLockWait(t, done, holder)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			if _, err := b.intake.Accept(ctx, newEvent("during-partition-creation")); err != nil {
				t.Fatalf("intake did not commit while maintenance created a partition (after %s): %v", time.Since(start).Round(time.Millisecond), err)
			}
			t.Logf("intake committed in %s", time.Since(start).Round(time.Millisecond))

			res := await(t, done)
			mustExec(t, holder, `ROLLBACK`)
			if res.err != nil {
				t.Fatal(res.err)
			}
			exists := b.count(t, `SELECT count(*) FROM outbox_live_partitions() WHERE name = $1`, newest) == 1
			if c.retryLater {
				if exists || !strings.Contains(logs.String(), "retry") {
					t.Errorf("maintenance should have given up on the partition and said it will retry; exists=%v, logs:\n%s", exists, logs.String())
				}
				// The next run creates it.
				if _, err := b.store.Maintain(context.Background(), store.RetentionPolicy{EventRetention: day(7)}, quiet); err != nil {
					t.Fatal(err)
				}
				exists = b.count(t, `SELECT count(*) FROM outbox_live_partitions() WHERE name = $1`, newest) == 1
			}
			if !exists {
				t.Errorf("partition %s was not created", newest)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runKey struct{}

// TestMaintainRunsOneAtATime pauses one maintenance run inside a step and
// starts a second, as River's rescuer would when a run outlasts
// RescueStuckJobsAfter: the second must not run any step while the first is
// in one, and must return at once rather than wait.
func TestMaintainRunsOneAtATime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	paused, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var overlaps []string
	firstInStep := false
	store.SetStepHook(b.store, func(ctx context.Context, step string) error {
		switch ctx.Value(runKey{}) {
		case 1:
			if step == "expire-dead-letters" {
				mu.Lock()
				firstInStep = true
				mu.Unlock()
				close(paused)
				<-release
				mu.Lock()
				firstInStep = false
				mu.Unlock()
			}
		case 2:
			mu.Lock()
			if firstInStep {
				overlaps = append(overlaps, step)
			}
			mu.Unlock()
		}
		return nil
	})
	first := b.maintainAsync(context.WithValue(context.Background(), runKey{}, 1), policy7d30d, quiet)
	select {
	case <-paused:
	case res := <-first:
		t.Fatalf("the first run finished without pausing: %v", res.err)
	case <-time.After(60 * time.Second):
		t.Fatal("the first run did not reach its pause within 60s")
	}
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), runKey{}, 2), 30*time.Second)
	defer cancel()
	var logs syncBuffer
	rep, err := b.store.Maintain(ctx, policy7d30d, slog.New(slog.NewTextHandler(&logs, nil)))
	close(release)
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	mu.Lock()
	if len(overlaps) > 0 {
		t.Errorf("the second run ran steps %v while the first was in one", overlaps)
	}
	mu.Unlock()
	if !strings.Contains(logs.String(), "already running") {
		t.Errorf("the second run did not say why it did nothing: %s", logs.String())
	}
	t.Logf("second run: %+v", rep)
	if res := await(t, first); res.err != nil {
		t.Fatalf("first run: %v", res.err)
	}
	// Once the first has finished, a run goes ahead again.
	ran := false
	store.SetStepHook(b.store, func(context.Context, string) error { ran = true; return nil })
	if _, err := b.store.Maintain(context.Background(), policy7d30d, quiet); err != nil || !ran {
		t.Errorf("a run after the first finished: ran=%v err=%v", ran, err)
	}
}

// TestIntakeCreatesAMissingPartitionBesideALongReader removes the current
// partition, as if maintenance had not run for days, while a long reader
// holds events_live: intake creates the partition on the spot without
// queueing behind the reader. While other DDL holds events_live, intake gives
// up within its lock wait instead of hanging (the sender gets a 503 and
// retries).
func TestIntakeCreatesAMissingPartitionBesideALongReader(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, hold string
		accepted   bool
	}{
		{"long reader", `SELECT count(*) FROM events_live`, true},
		{"ddl in progress", `LOCK TABLE events_live IN SHARE UPDATE EXCLUSIVE MODE`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.dropPartition(t, `range_start <= now() AND range_end > now()`)
			holder := b.hold(t, c.hold)
			defer mustExec(t, holder, `ROLLBACK`)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			_, err := b.intake.Accept(ctx, newEvent("needs-a-partition"))
			took := time.Since(start).Round(time.Millisecond)
			t.Logf("intake answered in %s: %v", took, err)
			switch {
			case c.accepted && err != nil:
				t.Fatalf("intake could not create the missing partition beside a long reader: %v", err)
			case !c.accepted && err == nil:
				t.Fatal("intake created a partition while other DDL held events_live")
			case !c.accepted && ctx.Err() != nil:
				t.Fatalf("intake waited for the DDL until its deadline (%s) instead of giving up", took)
			}
		})
	}
}
