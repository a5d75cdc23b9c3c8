package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

func orderedEvent(key, conv string) *outbox.NewEvent {
	ev := newEvent(key)
	ev.OrderingKey = conv
	return ev
}

type orderedJob struct {
	id, eventID int64
	key, state  string
	blocked     bool
}

// jobsOf returns the delivery jobs of an ordering value, in event id order.
func (b *bundle) jobsOf(t *testing.T, conv string) []orderedJob {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `
		SELECT id, (args->>'event_id')::bigint, args->>'key', state::text, metadata ? 'ordering_blocked'
		FROM river_job WHERE args->>'ordering_key' = $1 ORDER BY (args->>'event_id')::bigint, id`, conv)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orderedJob, error) {
		var j orderedJob
		err := r.Scan(&j.id, &j.eventID, &j.key, &j.state, &j.blocked)
		return j, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// states sums up an ordering value's jobs as "key:state" in event id order.
func (b *bundle) states(t *testing.T, conv string) string {
	t.Helper()
	var parts []string
	for _, j := range b.jobsOf(t, conv) {
		s := j.key + ":" + j.state
		if j.blocked {
			s += "!"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func (b *bundle) wantStates(t *testing.T, conv, want string) {
	t.Helper()
	if got := b.states(t, conv); got != want {
		t.Errorf("%s: jobs are %q, want %q", conv, got, want)
	}
}

// fetch does what River's producer does when it hands a job to a worker.
func (b *bundle) fetch(t *testing.T, key string) {
	t.Helper()
	b.exec(t, `UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now()
		WHERE args->>'key' = $1 AND state = 'available'`, key)
}

// finish sets a running job's final state the way River's completer and
// outbox's do: with River's JobSetStateIfRunningMany.
func (b *bundle) finish(t *testing.T, key string, state rivertype.JobState) {
	t.Helper()
	b.finishOn(t, riverpgxv5.New(b.pool).GetExecutor(), key, state)
}

func (b *bundle) finishOn(t *testing.T, exec riverdriver.Executor, key string, state rivertype.JobState) {
	t.Helper()
	now := time.Now()
	params := &riverdriver.JobSetStateIfRunningManyParams{
		ID: []int64{b.jobID(t, key)}, Attempt: []*int{nil}, ErrData: [][]byte{nil}, FinalizedAt: []*time.Time{&now},
		MetadataDoMerge: []bool{false}, MetadataUpdates: [][]byte{nil}, ScheduledAt: []*time.Time{nil}, State: []rivertype.JobState{state},
	}
	if state == rivertype.JobStateDiscarded || state == rivertype.JobStateCancelled {
		params.ErrData[0], _ = json.Marshal(map[string]any{"at": now, "attempt": 1, "error": "target answered 500 Internal Server Error"})
	}
	rows, err := exec.JobSetStateIfRunningMany(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].State != state {
		t.Fatalf("job of %s was not set %s: %+v", key, state, rows)
	}
}

func (b *bundle) accept(t *testing.T, evs ...*outbox.NewEvent) {
	t.Helper()
	res, err := b.intake.AcceptBatch(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Duplicate {
			t.Fatalf("%s came back a duplicate", evs[i].Key)
		}
	}
}

// checkRule fails the test if any key breaks ordering's rule: at most one
// head, and no waiting event without one.
func (b *bundle) checkRule(t *testing.T) {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `
		SELECT queue || '/' || (args->>'ordering_key') || ': ' || string_agg(args->>'key' || ' ' || state, ', ')
		FROM river_job
		WHERE kind = 'deliver' AND args ? 'ordering_key'
		  AND (state IN ('available', 'running', 'retryable', 'scheduled')
		       OR (state IN ('discarded', 'cancelled') AND metadata ? 'ordering_blocked'))
		GROUP BY queue, args->>'ordering_key' HAVING count(*) > 1`)
	if err != nil {
		t.Fatal(err)
	}
	twoHeads, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(twoHeads) > 0 {
		t.Errorf("keys with more than one head: %v", twoHeads)
	}
	if n := b.count(t, `SELECT count(*) FROM ordering_blocked_keys WHERE reason = 'no_head'`); n > 0 {
		t.Errorf("%d keys have waiting events and no head", n)
	}
}

// TestOrderingIntakeQueuesBehindTheHead stores events of two conversations
// and an unordered one, some in one batch: each conversation's first event
// is deliverable and the others wait as pending, lowest event id first;
// the unordered event's job args are as before ordering existed.
func TestOrderingIntakeQueuesBehindTheHead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.accept(t, orderedEvent("a1", "conv-a"))
	b.accept(t, orderedEvent("a2", "conv-a"), orderedEvent("b1", "conv-b"), orderedEvent("a3", "conv-a"), newEvent("u1"), orderedEvent("b2", "conv-b"))
	b.wantStates(t, "conv-a", "a1:available a2:pending a3:pending")
	b.wantStates(t, "conv-b", "b1:available b2:pending")
	if n := b.count(t, `SELECT count(*) FROM river_job WHERE args->>'key' = 'u1' AND state = 'available' AND NOT args ? 'ordering_key'`); n != 1 {
		t.Error("the unordered event's job is not available without an ordering_key")
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'a2' AND ordering_key = 'conv-a'`); n != 1 {
		t.Error("the event does not keep its ordering value")
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'u1' AND ordering_key IS NULL`); n != 1 {
		t.Error("the unordered event has an ordering value")
	}
	// Event ids follow commit order within a key.
	jobs := b.jobsOf(t, "conv-a")
	if !slices.IsSortedFunc(jobs, func(x, y orderedJob) int { return strings.Compare(x.key, y.key) }) {
		t.Errorf("event ids of conv-a are not in commit order: %+v", jobs)
	}
	b.checkRule(t)
}

// TestOrderingPromotesWhenTheHeadFinishes walks one conversation through
// every way a head finishes: delivered (outbox's completer), dead letter
// with on_dead_letter continue, with block (held until retried, then
// delivered), and a blocking dead letter deleted or released.
func TestOrderingPromotesWhenTheHeadFinishes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var evs []*outbox.NewEvent
	for i := 1; i <= 7; i++ {
		evs = append(evs, orderedEvent(fmt.Sprint("e", i), "c"))
	}
	for _, ev := range evs {
		b.accept(t, ev)
	}
	b.wantStates(t, "c", "e1:available e2:pending e3:pending e4:pending e5:pending e6:pending e7:pending")

	// Delivered: recorded by outbox's completer, which completes the job
	// with River's JobSetStateIfRunningMany in its own transaction.
	b.fetch(t, "e1")
	c := store.NewCompleter(b.store, 1, 8, 10*time.Second)
	defer c.Close()
	var args outbox.DeliverArgs
	if err := b.pool.QueryRow(ctx, `SELECT args FROM river_job WHERE args->>'key' = 'e1'`).Scan(&args); err != nil {
		t.Fatal(err)
	}
	job := &river.Job[outbox.DeliverArgs]{JobRow: &rivertype.JobRow{ID: b.jobID(t, "e1"), Attempt: 1, State: rivertype.JobStateRunning}, Args: args}
	if err := c.Complete(ctx, job); err != nil {
		t.Fatal(err)
	}
	b.wantStates(t, "c", "e1:completed e2:available e3:pending e4:pending e5:pending e6:pending e7:pending")

	// A failure that retries keeps the head; the others wait.
	b.fetch(t, "e2")
	b.exec(t, `UPDATE river_job SET state = 'retryable', scheduled_at = now() + interval '1 hour' WHERE args->>'key' = 'e2'`)
	b.wantStates(t, "c", "e1:completed e2:retryable e3:pending e4:pending e5:pending e6:pending e7:pending")
	b.exec(t, `UPDATE river_job SET state = 'running' WHERE args->>'key' = 'e2'`)

	// Dead letter, on_dead_letter continue (the default): the next goes.
	b.finish(t, "e2", rivertype.JobStateDiscarded)
	b.wantStates(t, "c", "e1:completed e2:discarded e3:available e4:pending e5:pending e6:pending e7:pending")

	// Dead letter, on_dead_letter block: flagged, and the key holds.
	if err := b.store.SetOrderedRoutes(ctx, []store.OrderedRoute{{Route: "r", OnDeadLetter: "block"}}); err != nil {
		t.Fatal(err)
	}
	b.fetch(t, "e3")
	b.finish(t, "e3", rivertype.JobStateCancelled)
	b.wantStates(t, "c", "e1:completed e2:discarded e3:cancelled! e4:pending e5:pending e6:pending e7:pending")
	keys, _, err := b.store.BlockedKeys(ctx, "r", "", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].OrderingKey != "c" || keys[0].Reason != outbox.BlockedByDeadLetter || keys[0].Waiting != 4 ||
		keys[0].Head == nil || keys[0].Head.Key != "e3" || keys[0].Head.State != "cancelled" || !strings.Contains(keys[0].Head.LastError, "500") {
		t.Errorf("blocked keys: %+v", keys)
	}
	// A new event of a blocked key waits too.
	b.accept(t, orderedEvent("e8", "c"))
	b.wantStates(t, "c", "e1:completed e2:discarded e3:cancelled! e4:pending e5:pending e6:pending e7:pending e8:pending")

	// Retried, the head goes first again, and its delivery releases the
	// next.
	if n, err := b.store.RetryDeadLetterJobs(ctx, []int64{b.jobID(t, "e3")}, []store.RetryBudget{{Route: "r", MaxAttempts: 3, GiveUpAfter: time.Hour}}); err != nil || n != 1 {
		t.Fatalf("retry: %d, %v", n, err)
	}
	b.wantStates(t, "c", "e1:completed e2:discarded e3:available e4:pending e5:pending e6:pending e7:pending e8:pending")
	b.fetch(t, "e3")
	b.finish(t, "e3", rivertype.JobStateCompleted)
	b.wantStates(t, "c", "e1:completed e2:discarded e3:completed e4:available e5:pending e6:pending e7:pending e8:pending")

	// Blocked again, then the dead letter is deleted (River UI's delete,
	// or dead_letter_retention): the key goes on.
	b.fetch(t, "e4")
	b.finish(t, "e4", rivertype.JobStateDiscarded)
	b.wantStates(t, "c", "e1:completed e2:discarded e3:completed e4:discarded! e5:pending e6:pending e7:pending e8:pending")
	if _, err := riverpgxv5.New(b.pool).GetExecutor().JobDelete(ctx, &riverdriver.JobDeleteParams{ID: b.jobID(t, "e4")}); err != nil {
		t.Fatal(err)
	}
	b.wantStates(t, "c", "e1:completed e2:discarded e3:completed e5:available e6:pending e7:pending e8:pending")

	// Blocked again, then released by an operator: the dead letter stays.
	b.fetch(t, "e5")
	b.finish(t, "e5", rivertype.JobStateDiscarded)
	released, err := b.store.ReleaseBlockedKeys(ctx, "r", []string{"c", "not-blocked"})
	if err != nil || !slices.Equal(released, []string{"c"}) {
		t.Fatalf("release: %v, %v", released, err)
	}
	b.wantStates(t, "c", "e1:completed e2:discarded e3:completed e5:discarded e6:available e7:pending e8:pending")

	// Blocked again, then the route goes back to continue: the next
	// check releases it.
	b.fetch(t, "e6")
	b.finish(t, "e6", rivertype.JobStateDiscarded)
	b.wantStates(t, "c", "e1:completed e2:discarded e3:completed e5:discarded e6:discarded! e7:pending e8:pending")
	if err := b.store.SetOrderedRoutes(ctx, []store.OrderedRoute{{Route: "r", OnDeadLetter: "continue"}}); err != nil {
		t.Fatal(err)
	}
	check, err := b.store.CheckOrdering(ctx)
	if err != nil || check.Released != 1 || len(check.Stranded) != 0 {
		t.Fatalf("check: %+v, %v", check, err)
	}
	b.wantStates(t, "c", "e1:completed e2:discarded e3:completed e5:discarded e6:discarded e7:available e8:pending")
	b.checkRule(t)
}

// TestOrderingRetriedDeadLetterGoesFirst retries an old dead letter of a
// conversation whose later event is being delivered: it waits, then goes
// before the events that came after it.
func TestOrderingRetriedDeadLetterGoesFirst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		b.accept(t, orderedEvent(fmt.Sprint("e", i), "c"))
	}
	b.fetch(t, "e1")
	b.finish(t, "e1", rivertype.JobStateDiscarded)
	b.fetch(t, "e2")
	b.wantStates(t, "c", "e1:discarded e2:running e3:pending e4:pending")
	if n, err := b.store.RetryDeadLetterJobs(ctx, []int64{b.jobID(t, "e1")}, []store.RetryBudget{{Route: "r", MaxAttempts: 3, GiveUpAfter: time.Hour}}); err != nil || n != 1 {
		t.Fatalf("retry: %d, %v", n, err)
	}
	b.wantStates(t, "c", "e1:pending e2:running e3:pending e4:pending")
	b.finish(t, "e2", rivertype.JobStateCompleted)
	b.wantStates(t, "c", "e1:available e2:completed e3:pending e4:pending")

	// River UI's retry of a waiting job does not let it jump the queue.
	client, err := jobs.NewInsertOnlyClient(b.pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.JobRetry(ctx, b.jobID(t, "e4")); err != nil {
		t.Fatal(err)
	}
	b.wantStates(t, "c", "e1:available e2:completed e3:pending e4:pending")
	b.checkRule(t)
}

// TestOrderingReplayKeepsOrder replays a window holding delivered events
// and a dead letter of one conversation, while a later event of it is
// being delivered: all wait, and go in event id order.
func TestOrderingReplayKeepsOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	client, err := jobs.NewInsertOnlyClient(b.pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Minute)
	for i := 1; i <= 3; i++ {
		b.accept(t, orderedEvent(fmt.Sprint("e", i), "c"))
	}
	b.accept(t, orderedEvent("x1", "other"))
	for _, k := range []string{"e1", "e2"} {
		b.fetch(t, k)
		b.finish(t, k, rivertype.JobStateCompleted)
	}
	b.fetch(t, "e3")
	b.finish(t, "e3", rivertype.JobStateDiscarded)
	b.accept(t, orderedEvent("e4", "c"))
	b.fetch(t, "e4")
	b.wantStates(t, "c", "e1:completed e2:completed e3:discarded e4:running")

	w := store.ReplayWindow{Route: "r", Since: since, Until: time.Now().Add(time.Minute)}
	if _, err := b.store.StartReplay(ctx, "ordered", w); err != nil {
		t.Fatal(err)
	}
	out, err := b.store.ReplayNextBatch(ctx, client, "ordered", 3, []store.RetryBudget{{Route: "r", MaxAttempts: 3, GiveUpAfter: time.Hour}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if out.Replayed != 2 || out.Revived != 1 || out.Skipped != 2 { // e4 and x1 are waiting already
		t.Errorf("replay: %+v", out)
	}
	b.wantStates(t, "c", "e1:completed e1:pending e2:completed e2:pending e3:pending e4:running")
	for _, want := range []string{"e1", "e2", "e3"} {
		b.finish(t, runningOrFetch(t, b, "c"), rivertype.JobStateCompleted)
		if got := deliverable(t, b, "c"); got != want {
			t.Fatalf("after the head was delivered, %q is deliverable, want %q (%s)", got, want, b.states(t, "c"))
		}
		b.fetch(t, want)
	}
	b.checkRule(t)
}

// runningOrFetch returns the key of the conversation's running job.
func runningOrFetch(t *testing.T, b *bundle, conv string) string {
	t.Helper()
	for _, j := range b.jobsOf(t, conv) {
		if j.state == "running" {
			return j.key
		}
	}
	t.Fatalf("%s has no running job: %s", conv, b.states(t, conv))
	return ""
}

// deliverable returns the key of the conversation's available job.
func deliverable(t *testing.T, b *bundle, conv string) string {
	t.Helper()
	var keys []string
	for _, j := range b.jobsOf(t, conv) {
		if j.state == "available" {
			keys = append(keys, j.key)
		}
	}
	if len(keys) != 1 {
		t.Fatalf("%s has %d deliverable jobs: %s", conv, len(keys), b.states(t, conv))
	}
	return keys[0]
}

// TestOrderingIntakeRacesPromotion stages both orders of the race between
// an intake of a conversation's event and the delivery of its head, with
// the real intake and River's completion, and checks that the new event
// never ends up waiting behind nothing.
func TestOrderingIntakeRacesPromotion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("intake holds the key while the head is delivered", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.accept(t, orderedEvent("e1", "c"))
		b.fetch(t, "e1")
		held, release := make(chan struct{}), make(chan struct{})
		b.intake.SetBeforeCommit(func() {
			close(held)
			<-release
		})
		accepted := make(chan error, 1)
		go func() {
			_, err := b.intake.Accept(ctx, orderedEvent("e2", "c"))
			accepted <- err
		}()
		<-held // e2 is inserted, pending behind the running e1, not committed
		b.intake.SetBeforeCommit(nil)
		finished := make(chan struct{})
		go func() {
			defer close(finished)
			b.finish(t, "e1", rivertype.JobStateCompleted)
		}()
		waitForLockWait(t, b)
		close(release)
		if err := <-accepted; err != nil {
			t.Fatal(err)
		}
		<-finished
		b.wantStates(t, "c", "e1:completed e2:available")
		b.checkRule(t)
	})

	t.Run("the head's delivery holds the key while intake waits", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.accept(t, orderedEvent("e1", "c"))
		b.fetch(t, "e1")
		tx, err := b.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		// Completed in an open transaction: its trigger holds the key.
		b.finishOn(t, riverpgxv5.New(nil).UnwrapExecutor(tx), "e1", rivertype.JobStateCompleted)
		accepted := make(chan error, 1)
		go func() {
			_, err := b.intake.Accept(ctx, orderedEvent("e2", "c"))
			accepted <- err
		}()
		waitForLockWait(t, b)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-accepted; err != nil {
			t.Fatal(err)
		}
		b.wantStates(t, "c", "e1:completed e2:available")
		b.checkRule(t)
	})
}

// waitForLockWait waits until a session of the test's database waits for
// an advisory lock.
func waitForLockWait(t *testing.T, b *bundle) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for b.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no session waits for the key's lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOrderingUnderConcurrency runs intake batches from concurrent
// writers, deliveries, dead letters and bulk retries of a few
// conversations at once, on a route with on_dead_letter: block, and checks
// while it runs that the rule holds and no statement failed (a deadlock
// would), and in the end that each conversation's events were delivered
// once each, in event id order: a dead letter held its conversation until
// it was retried.
func TestOrderingUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if err := b.store.SetOrderedRoutes(ctx, []store.OrderedRoute{{Route: "r", OnDeadLetter: "block"}}); err != nil {
		t.Fatal(err)
	}
	const convs, perConv = 8, 40
	batcher := store.NewBatcher(b.intake, store.BatcherOptions{Workers: 3, MaxBatch: 16, Timeout: 30 * time.Second})
	defer batcher.Close()
	var senders sync.WaitGroup
	for c := range convs {
		for w := range 2 { // two concurrent writers per conversation
			senders.Go(func() {
				for i := w; i < perConv; i += 2 {
					if _, err := batcher.Accept(ctx, orderedEvent(fmt.Sprintf("c%d-%03d", c, i), fmt.Sprint("c", c))); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	// Workers: fetch a deliverable job, then deliver it or, one time in
	// five, fail it for good; another loop retries the dead letters in
	// bulk. Deliveries are recorded per conversation.
	var mu sync.Mutex
	delivered := map[string][]int64{}
	stop := make(chan struct{})
	var workers sync.WaitGroup
	exec := riverpgxv5.New(b.pool).GetExecutor()
	for range 4 {
		workers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var id, eventID int64
				var conv string
				err := b.pool.QueryRow(ctx, `
					UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now()
					WHERE id = (SELECT id FROM river_job WHERE state = 'available' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
					RETURNING id, (args->>'event_id')::bigint, args->>'ordering_key'`).Scan(&id, &eventID, &conv)
				if err == pgx.ErrNoRows {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				state := rivertype.JobStateCompleted
				if rand.IntN(5) == 0 {
					state = rivertype.JobStateDiscarded
				}
				now := time.Now()
				if _, err := exec.JobSetStateIfRunningMany(ctx, &riverdriver.JobSetStateIfRunningManyParams{
					ID: []int64{id}, Attempt: []*int{nil}, ErrData: [][]byte{nil}, FinalizedAt: []*time.Time{&now},
					MetadataDoMerge: []bool{false}, MetadataUpdates: [][]byte{nil}, ScheduledAt: []*time.Time{nil}, State: []rivertype.JobState{state},
				}); err != nil {
					t.Error(err)
					return
				}
				if state == rivertype.JobStateCompleted {
					mu.Lock()
					delivered[conv] = append(delivered[conv], eventID)
					mu.Unlock()
				}
			}
		})
	}
	workers.Go(func() {
		budgets := []store.RetryBudget{{Route: "r", MaxAttempts: 3, GiveUpAfter: time.Hour}}
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			rows, err := b.pool.Query(ctx, `SELECT id FROM river_job WHERE state = 'discarded' ORDER BY random() LIMIT 10`)
			if err != nil {
				t.Error(err)
				return
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := b.store.RetryDeadLetterJobs(ctx, ids, budgets); err != nil {
				t.Error(err)
				return
			}
		}
	})
	senders.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for b.count(t, `SELECT count(*) FROM river_job WHERE state <> 'completed'`) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not all delivered: %d jobs left", b.count(t, `SELECT count(*) FROM river_job WHERE state <> 'completed'`))
		}
		b.checkRule(t)
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	workers.Wait()
	b.checkRule(t)
	if len(delivered) != convs {
		t.Errorf("%d conversations delivered, want %d", len(delivered), convs)
	}
	for conv, ids := range delivered {
		if len(ids) != perConv || len(slices.Compact(slices.Clone(ids))) != perConv {
			t.Errorf("%s: %d deliveries of %d events, want %d once each", conv, len(ids), len(slices.Compact(slices.Clone(ids))), perConv)
		}
		if !slices.IsSorted(ids) {
			t.Errorf("%s: delivered out of event id order: %v", conv, ids)
		}
	}
}

// TestOrderingCheckPromotesAStrandedKey leaves a key with waiting events
// and no head behind the triggers' back (as no path of outbox does), and
// checks that the ordering check finds it and promotes its next event.
func TestOrderingCheckPromotesAStrandedKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.accept(t, orderedEvent("e1", "c"), orderedEvent("e2", "c"), orderedEvent("e3", "c"))
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`SET LOCAL session_replication_role = replica`, // no triggers
		`DELETE FROM river_job WHERE args->>'key' = 'e1'`,
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.wantStates(t, "c", "e2:pending e3:pending")
	keys, _, err := b.store.BlockedKeys(ctx, "r", outbox.BlockedNoHead, "", 10)
	if err != nil || len(keys) != 1 || keys[0].Waiting != 2 || keys[0].Head != nil {
		t.Fatalf("no_head keys: %+v, %v", keys, err)
	}
	check, err := b.store.CheckOrdering(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if check.Promoted != 1 || len(check.Stranded) != 1 || check.Stranded[0].OrderingKey != "c" {
		t.Errorf("check: %+v", check)
	}
	b.wantStates(t, "c", "e2:available e3:pending")
	if check, err := b.store.CheckOrdering(ctx); err != nil || check.Promoted != 0 || len(check.Stranded) != 0 {
		t.Errorf("second check: %+v, %v", check, err)
	}
}

// TestOrderingPromotionNotifiesLikeRiver pins the notification a promotion
// sends to what River's own insert sends, so River's producers fetch a
// promoted job at once: same channel, same payload.
func TestOrderingPromotionNotifiesLikeRiver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var channel string
	if err := conn.QueryRow(ctx, `SELECT current_schema() || '.river_insert'`).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := conn.Conn().WaitForNotification(wctx)
		if err != nil {
			t.Fatalf("no notification on %s: %v", channel, err)
		}
		return n.Payload
	}
	// River's insert (the client is told to notify at once).
	b.accept(t, orderedEvent("e1", "c"))
	river := next()
	b.accept(t, orderedEvent("e2", "c"))
	b.fetch(t, "e1")
	b.finish(t, "e1", rivertype.JobStateCompleted)
	var ours string
	for ours == "" || ours == river && b.states(t, "c") != "e1:completed e2:available" {
		ours = next()
	}
	var a, c map[string]any
	if json.Unmarshal([]byte(river), &a) != nil || json.Unmarshal([]byte(ours), &c) != nil || a["queue"] != "r" || c["queue"] != "r" || len(a) != len(c) {
		t.Errorf("River notified %s, a promotion %s", river, ours)
	}
}

// TestEventIDsFollowCommitOrder pins what ordering relies on: events'
// ids come from a sequence without a per-session cache, so an id taken
// under a key's lock is larger than every id taken before the lock was
// granted.
func TestEventIDsFollowCommitOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if n := b.count(t, `SELECT cache_size FROM pg_sequences WHERE sequencename = 'events_id_seq'`); n != 1 {
		t.Errorf("events_id_seq caches %d values per session; ordering needs 1", n)
	}
}

// TestOrderingDeadLetterExpiryReleasesTheKey: a blocking dead letter that
// dead_letter_retention expires lets its key go on.
func TestOrderingDeadLetterExpiryReleasesTheKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if err := b.store.SetOrderedRoutes(ctx, []store.OrderedRoute{{Route: "r", OnDeadLetter: "block"}}); err != nil {
		t.Fatal(err)
	}
	b.accept(t, orderedEvent("e1", "c"), orderedEvent("e2", "c"))
	b.fetch(t, "e1")
	b.finish(t, "e1", rivertype.JobStateDiscarded)
	b.exec(t, `UPDATE river_job SET finalized_at = now() - interval '2 hours' WHERE args->>'key' = 'e1'`)
	b.wantStates(t, "c", "e1:discarded! e2:pending")
	rep, err := b.store.Maintain(ctx, store.RetentionPolicy{EventRetention: 168 * time.Hour, DeadLetterRetention: time.Hour}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeadLettersExpired != 1 {
		t.Errorf("%d dead letters expired, want 1", rep.DeadLettersExpired)
	}
	b.wantStates(t, "c", "e2:available")
	b.checkRule(t)
}
