package admin_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// The tests in this file stage races between operator actions
// deterministically: a second connection holds a row lock, and the test
// waits until the actions queue behind it before it lets go.

// seedDelivered stores n events of route genesys, delivered, with their
// delivery jobs completed: what a replay sends again.
func (b *bundle) seedDelivered(t *testing.T, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		_, err := b.intake.Accept(ctx, &outbox.NewEvent{Route: "genesys", Key: fmt.Sprint(prefix, i), ContentType: "application/json", Body: []byte(`{}`), MaxAttempts: 7})
		require.NoError(t, err)
	}
	_, err := b.pool.Exec(ctx, `UPDATE events SET delivered_at = now() WHERE key LIKE $1 || '%'`, prefix)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `UPDATE river_job SET state = 'completed', attempt = 1, attempted_at = now(), finalized_at = now() WHERE args ->> 'key' LIKE $1 || '%'`, prefix)
	require.NoError(t, err)
}

// queuedPerEvent counts, per event of route genesys, the delivery jobs that
// will send it (not completed, not dead).
func (b *bundle) queuedPerEvent(t *testing.T) map[string]int {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `
		SELECT e.key, count(j.id) FROM events e
		LEFT JOIN river_job j ON j.kind = 'deliver' AND (j.args ->> 'event_id')::bigint = e.id
		     AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
		WHERE e.route = 'genesys' GROUP BY e.key`)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var key string
		var n int
		require.NoError(t, rows.Scan(&key, &n))
		out[key] = n
	}
	require.NoError(t, rows.Err())
	return out
}

func (b *bundle) conn(t *testing.T) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), b.pool.Config().ConnConfig.ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// waitForLockWaiters waits until n sessions other than holder wait for a
// lock in the test's database.
func (b *bundle) waitForLockWaiters(t *testing.T, n int, holder *pgx.Conn) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var waiting int
		require.NoError(t, b.pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> $1`, holder.PgConn().PID()).Scan(&waiting))
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait for a lock after 60s, want %d", waiting, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type replayOutcome struct {
	res *admin.ReplayResult
	err error
}

// TestConcurrentReplaysDeliverOnce runs two replays of the same window at
// once, as an operator's CLI and a script's API call might: the same
// request twice (one replay), or two replays named apart. The first is held
// inside its batch transaction (it waits for a dead letter's job that
// another session has locked) while the second starts; then both finish.
// Every event must be queued for delivery exactly once.
func TestConcurrentReplaysDeliverOnce(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		ids  [2]string
	}{
		{"same request twice", [2]string{"", ""}},
		{"two named replays", [2]string{"from-cli", "from-api"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			since := time.Now().Add(-time.Hour)
			testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "dead", N: 1, Error: "target answered 500", FailedAgo: time.Second})
			b.seedDelivered(t, "delivered", 5)

			holder := b.conn(t)
			_, err := holder.Exec(ctx, `BEGIN; SELECT id FROM river_job WHERE args ->> 'key' = 'dead1' FOR UPDATE`)
			require.NoError(t, err)

			outcomes := make(chan replayOutcome, 2)
			replay := func(id string) {
				res, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: since, ReplayID: id})
				outcomes <- replayOutcome{res, err}
			}
			go replay(c.ids[0])
			b.waitForLockWaiters(t, 1, holder)
			go replay(c.ids[1])
			b.waitForLockWaiters(t, 2, holder)
			_, err = holder.Exec(ctx, `ROLLBACK`)
			require.NoError(t, err)

			var replayed, revived int64
			for range 2 {
				o := <-outcomes
				require.NoError(t, o.err)
				t.Logf("replay %s: replayed %d, revived %d, skipped %d, already %d", o.res.ReplayID, o.res.Replayed, o.res.Revived, o.res.Skipped, o.res.AlreadyReplayed)
				replayed += o.res.Replayed
				revived += o.res.Revived
			}
			for key, n := range b.queuedPerEvent(t) {
				require.Equal(t, 1, n, "event %s is queued for %d deliveries: the target would get it %d times", key, n, n)
			}
			require.Equal(t, int64(5), replayed, "the delivered events replayed, once in all")
			require.Equal(t, int64(1), revived, "the dead letter revived, once in all")
		})
	}
}

// TestReplayRunAgainDoesNotResend replays a window, lets every replayed
// delivery complete, and runs the same replay again: nothing is sent twice.
func TestReplayRunAgainDoesNotResend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	since := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	b.seedDelivered(t, "delivered", 3)

	first, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: since})
	require.NoError(t, err)
	require.Equal(t, int64(3), first.Replayed)
	// The target acknowledges the replayed deliveries.
	_, err = b.pool.Exec(ctx, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE state = 'available'`)
	require.NoError(t, err)

	again, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: since})
	require.NoError(t, err)
	t.Logf("again: %+v", *again)
	require.Zero(t, again.Replayed, "running the same replay again sent events it had already sent")
	for key, n := range b.queuedPerEvent(t) {
		require.Zero(t, n, "event %s queued again", key)
	}
}

// TestReplayResumesWithItsCursor interrupts a replay after its first batch,
// resumes it with the cursor it returned, then runs the original request
// again once everything was delivered: each event is sent once. A replay
// named anew sends the window again, on purpose.
func TestReplayResumesWithItsCursor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	admin.SetBatchSizes(b.svc, 2, 2)
	since := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	b.seedDelivered(t, "delivered", 7)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progress [][2]int64
	res, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: since, Progress: func(done, total int64) {
		progress = append(progress, [2]int64{done, total})
		cancel() // Ctrl-C after the first batch
	}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "with outbox replay --resume "+res.ReplayID)
	require.Equal(t, outbox.EUNAVAILABLE, outbox.ErrorCode(err))
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, res.ReplayID, res.NextCursor)
	require.Equal(t, [][2]int64{{2, 7}}, progress)
	require.Equal(t, int64(2), res.Replayed)

	res, err = b.svc.Replay(context.Background(), admin.ReplayRequest{Resume: res.NextCursor})
	require.NoError(t, err)
	require.Equal(t, int64(7), res.Matched)
	require.Equal(t, int64(2), res.AlreadyReplayed)
	require.Equal(t, int64(5), res.Replayed)
	require.Empty(t, res.NextCursor)
	for key, n := range b.queuedPerEvent(t) {
		require.Equal(t, 1, n, "event %s", key)
	}
	var tagged int
	require.NoError(t, b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE metadata ->> 'replay_id' = $1`, res.ReplayID).Scan(&tagged))
	require.Equal(t, 7, tagged, "replay jobs carry the replay id")

	// Delivered; the same request again sends nothing.
	_, err = b.pool.Exec(context.Background(), `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE state = 'available'`)
	require.NoError(t, err)
	again, err := b.svc.Replay(context.Background(), admin.ReplayRequest{Route: "genesys", Since: since})
	require.NoError(t, err)
	require.Equal(t, res.ReplayID, again.ReplayID)
	require.Zero(t, again.Replayed)
	require.Equal(t, int64(7), again.AlreadyReplayed)

	// The id names the window its first run fixed.
	_, err = b.svc.Replay(context.Background(), admin.ReplayRequest{Route: "genesys", Since: since.Add(time.Minute), ReplayID: res.ReplayID})
	require.Equal(t, outbox.ECONFLICT, outbox.ErrorCode(err))
	require.Contains(t, outbox.ErrorMessage(err), "name a new replay")
	_, err = b.svc.Replay(context.Background(), admin.ReplayRequest{Resume: "no-such-replay"})
	require.Equal(t, outbox.ENOTFOUND, outbox.ErrorCode(err))

	// A new name is a new replay: the window is sent again.
	fresh, err := b.svc.Replay(context.Background(), admin.ReplayRequest{Route: "genesys", Since: since, ReplayID: "second-time"})
	require.NoError(t, err)
	require.Equal(t, int64(7), fresh.Replayed)
}

// TestBulkRetryResumesWithItsCursor interrupts a retry by filter after its
// first batch (Ctrl-C, through the progress callback), lets the dead letters
// it retried fail again and a new one fail, then resumes with the cursor it
// returned: every dead letter of the first run's start is retried exactly
// once, and the new one not at all.
func TestBulkRetryResumesWithItsCursor(t *testing.T) {
	t.Parallel()
	b := setup(t)
	admin.SetBatchSizes(b.svc, 2, 3)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "d", N: 8, Error: "target answered 500"})
	available := func() []int64 {
		rows, err := b.pool.Query(context.Background(), `SELECT id FROM river_job WHERE state = 'available' ORDER BY id`)
		require.NoError(t, err)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		return ids
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := outbox.DeadLetterFilter{Route: "genesys"}
	res, err := b.svc.RetryDeadLetters(ctx, admin.RetryRequest{Filter: &f, Progress: func(done, total int64) { cancel() }})
	require.Error(t, err)
	require.NotEmpty(t, res.NextCursor)
	require.Contains(t, err.Error(), "outbox dlq retry --resume "+res.NextCursor)
	require.Equal(t, int64(3), res.Retried)
	first := available()
	require.Len(t, first, 3)

	// Before the operator resumes, the retried ones fail again, and another
	// event becomes a dead letter.
	_, err = b.pool.Exec(context.Background(), `UPDATE river_job SET state = 'discarded', attempt = 7, finalized_at = now() WHERE state = 'available'`)
	require.NoError(t, err)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "late", N: 1, Error: "target answered 500", FailedAgo: -time.Second})

	res, err = b.svc.RetryDeadLetters(context.Background(), admin.RetryRequest{Resume: res.NextCursor})
	require.NoError(t, err)
	require.Equal(t, int64(5), res.Matched)
	require.Equal(t, int64(5), res.Retried)
	require.Empty(t, res.NextCursor)
	second := available()
	require.Len(t, second, 5)
	for _, id := range second {
		require.NotContains(t, first, id, "job %d was retried twice", id)
	}
	n, err := b.svc.CountDeadLetters(context.Background(), outbox.DeadLetterFilter{})
	require.NoError(t, err)
	require.Equal(t, int64(4), n, "the 3 that failed again and the late one stay dead letters")

	_, err = b.svc.RetryDeadLetters(context.Background(), admin.RetryRequest{Resume: "not-a-cursor"})
	require.Equal(t, outbox.EINVALID, outbox.ErrorCode(err))
}

// TestReplayOneEventTwice replays one event by key, lets the delivery
// complete, and replays it again, as an operator clicking the console's
// Replay twice: each is a replay of its own, so both send it; while one
// waits, the other does not queue it again.
func TestReplayOneEventTwice(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.seedDelivered(t, "one", 2)

	first, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Key: "one0"})
	require.NoError(t, err)
	require.Equal(t, int64(1), first.Matched)
	require.Equal(t, int64(1), first.Replayed)
	waiting, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Key: "one0"})
	require.NoError(t, err)
	require.NotEqual(t, first.ReplayID, waiting.ReplayID)
	require.Equal(t, int64(1), waiting.Skipped, "a delivery of it is already waiting")

	_, err = b.pool.Exec(ctx, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE state = 'available'`)
	require.NoError(t, err)
	again, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Key: "one0"})
	require.NoError(t, err)
	require.Equal(t, int64(1), again.Replayed)
	require.Equal(t, map[string]int{"one0": 1, "one1": 0}, b.queuedPerEvent(t))
}
