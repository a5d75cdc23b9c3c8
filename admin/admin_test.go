package admin_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

const testConfig = `
database_url: postgres://unused
admin_token: 0123456789abcdef0123456789abcdef
routes:
  - name: genesys
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: http://127.0.0.1:1/hook}
    retry: {max_attempts: 7, give_up_after: 5h}
  - name: other
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: http://127.0.0.1:1/other}
`

type bundle struct {
	svc    *admin.Service
	store  *store.Store
	pool   *pgxpool.Pool
	intake *store.Intake
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool, _ := testdb.Pool(t)
	cfg, err := config.Parse([]byte(testConfig), func(string) (string, bool) { return "", false })
	require.NoError(t, err)
	client, err := jobs.NewInsertOnlyClient(pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	st := store.New(pool)
	return &bundle{svc: admin.New(st, client, cfg), store: st, pool: pool, intake: store.NewIntake(st, client)}
}

// jobRow is what River holds of one delivery job.
type jobRow struct {
	State       string
	Attempt     int
	MaxAttempts int
	GiveUpAt    *string
}

func (b *bundle) job(t *testing.T, id int64) jobRow {
	t.Helper()
	var j jobRow
	err := b.pool.QueryRow(context.Background(),
		`SELECT state::text, attempt, max_attempts, metadata ->> 'give_up_at' FROM river_job WHERE id = $1`, id).
		Scan(&j.State, &j.Attempt, &j.MaxAttempts, &j.GiveUpAt)
	require.NoError(t, err)
	return j
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{in: "", want: time.Time{}},
		{in: "2h", want: now.Add(-2 * time.Hour)},
		{in: "2026-11-27", want: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)},
		{in: "2026-11-27T09:30:00Z", want: time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)},
		{in: " 2026-11-27 09:30:00 ", want: time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)},
		{in: "yesterday", wantErr: `since: "yesterday" is not a time`},
	} {
		got, err := admin.ParseTime("since", tc.in, now)
		if tc.wantErr != "" {
			require.Equal(t, outbox.EINVALID, outbox.ErrorCode(err), tc.in)
			require.Contains(t, outbox.ErrorMessage(err), tc.wantErr)
			continue
		}
		require.NoError(t, err, tc.in)
		require.True(t, tc.want.Equal(got), "%q: got %s, want %s", tc.in, got, tc.want)
	}
}

func TestParseIdentifier(t *testing.T) {
	t.Parallel()
	id, err := admin.ParseIdentifier("42")
	require.NoError(t, err)
	require.Equal(t, admin.Identifier{JobID: 42}, id)

	id, err = admin.ParseIdentifier("genesys/conv/with/slashes")
	require.NoError(t, err)
	require.Equal(t, admin.Identifier{Route: "genesys", Key: "conv/with/slashes"}, id)
	require.Equal(t, "genesys/conv/with/slashes", id.String())

	for _, bad := range []string{"", "0", "-3", "genesys", "/key", "genesys/"} {
		_, err := admin.ParseIdentifier(bad)
		require.Equal(t, outbox.EINVALID, outbox.ErrorCode(err), "%q", bad)
	}
}

func TestRetryByIDGivesTheFullBudget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "k", N: 2, Error: "target answered 500"})
	page, _, err := b.svc.ListDeadLetters(ctx, outbox.DeadLetterFilter{Route: "genesys"}, 10, "")
	require.NoError(t, err)
	require.Len(t, page, 2)

	res, err := b.svc.RetryDeadLetters(ctx, admin.RetryRequest{IDs: []admin.Identifier{{JobID: page[0].JobID}, {Route: "genesys", Key: "nope"}}})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Matched)
	require.Equal(t, int64(1), res.Retried)
	require.Len(t, res.NotRetried, 1)
	require.Contains(t, res.NotRetried[0], "genesys/nope: no event genesys/nope")

	j := b.job(t, page[0].JobID)
	require.Equal(t, "available", j.State)
	require.Equal(t, 0, j.Attempt)
	require.Equal(t, 7, j.MaxAttempts, "the route's max_attempts")
	require.NotNil(t, j.GiveUpAt)
	giveUp, err := time.Parse(time.RFC3339Nano, *j.GiveUpAt)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(5*time.Hour), giveUp, time.Minute, "a fresh give_up_after")

	// Retrying it again is a no-op: it is no longer dead.
	res, err = b.svc.RetryDeadLetters(ctx, admin.RetryRequest{IDs: []admin.Identifier{{JobID: page[0].JobID}}})
	require.NoError(t, err)
	require.Zero(t, res.Retried)
	require.Equal(t, "available", b.job(t, page[0].JobID).State)
	require.Equal(t, "discarded", b.job(t, page[1].JobID).State, "the other dead letter is untouched")
}

func TestRetryByFilter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "a", N: 3, Error: "target answered 500"})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "b", N: 2, Error: "target answered 410 Gone", State: "cancelled"})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "other", KeyPrefix: "c", N: 4, Error: "target answered 500"})

	f := outbox.DeadLetterFilter{Route: "genesys", ErrorContains: "410"}
	dry, err := b.svc.RetryDeadLetters(ctx, admin.RetryRequest{Filter: &f, DryRun: true})
	require.NoError(t, err)
	require.Equal(t, int64(2), dry.Matched)
	require.Zero(t, dry.Retried)
	n, err := b.svc.CountDeadLetters(ctx, outbox.DeadLetterFilter{})
	require.NoError(t, err)
	require.Equal(t, int64(9), n, "a dry run changes nothing")

	res, err := b.svc.RetryDeadLetters(ctx, admin.RetryRequest{Filter: &f})
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Retried)
	n, err = b.svc.CountDeadLetters(ctx, outbox.DeadLetterFilter{})
	require.NoError(t, err)
	require.Equal(t, int64(7), n)

	_, err = b.svc.RetryDeadLetters(ctx, admin.RetryRequest{Filter: &outbox.DeadLetterFilter{Route: "nope"}})
	require.Equal(t, outbox.ENOTFOUND, outbox.ErrorCode(err))
	require.Contains(t, outbox.ErrorMessage(err), `no route named "nope" (configured: genesys, other)`)
	_, err = b.svc.RetryDeadLetters(ctx, admin.RetryRequest{})
	require.Equal(t, outbox.EINVALID, outbox.ErrorCode(err))
}

func TestReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	start := time.Now().Add(-time.Minute)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "dead", N: 1, Error: "target answered 500", FailedAgo: time.Second})
	for _, key := range []string{"queued", "delivered"} {
		_, err := b.intake.Accept(ctx, &outbox.NewEvent{Route: "genesys", Key: key, ContentType: "application/json", Body: []byte(`{"id":"` + key + `"}`), MaxAttempts: 7})
		require.NoError(t, err)
	}
	_, err := b.pool.Exec(ctx, `UPDATE events SET delivered_at = now() WHERE key = 'delivered'`)
	require.NoError(t, err)
	_, err = b.pool.Exec(ctx, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE args ->> 'key' = 'delivered'`)
	require.NoError(t, err)

	res, err := b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: start.Add(-time.Hour), DryRun: true})
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Matched)
	require.Zero(t, res.Replayed+res.Revived)

	res, err = b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: start.Add(-time.Hour)})
	require.NoError(t, err)
	require.Equal(t, int64(3), res.Matched)
	require.Equal(t, int64(1), res.Replayed, "the delivered event gets a new job")
	require.Equal(t, int64(1), res.Revived, "the dead letter's job is retried")
	require.Equal(t, int64(1), res.Skipped, "the queued event is not queued twice")
	n, err := b.svc.CountDeadLetters(ctx, outbox.DeadLetterFilter{})
	require.NoError(t, err)
	require.Zero(t, n)

	ev, err := b.svc.Event(ctx, "genesys", "delivered")
	require.NoError(t, err)
	require.Len(t, ev.Jobs, 2)
	require.Equal(t, outbox.EventQueued, ev.State)

	_, err = b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys"})
	require.Equal(t, outbox.EINVALID, outbox.ErrorCode(err))
	_, err = b.svc.Replay(ctx, admin.ReplayRequest{Route: "genesys", Since: time.Now().Add(time.Hour)})
	require.Equal(t, outbox.EINVALID, outbox.ErrorCode(err))
	require.Contains(t, outbox.ErrorMessage(err), "the window is empty")
}

func TestPauseResumeAndReconcile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	paused := func() map[string]bool {
		routes, err := b.svc.Routes(ctx)
		require.NoError(t, err)
		out := map[string]bool{}
		for _, r := range routes {
			out[r.Name] = r.Paused
		}
		return out
	}

	// Before the queue has ever run.
	require.NoError(t, b.svc.Pause(ctx, "genesys"))
	require.Equal(t, map[string]bool{"genesys": true, "other": false}, paused())

	// River's queue cleaner deleted the idle queue's row: the listing
	// still shows the pause, and reconciling restores it in River.
	_, err := b.pool.Exec(ctx, `DELETE FROM river_queue WHERE name = 'genesys'`)
	require.NoError(t, err)
	require.Equal(t, map[string]bool{"genesys": true, "other": false}, paused())
	require.NoError(t, b.svc.ReconcilePauses(ctx, logger))
	var riverPaused bool
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT paused_at IS NOT NULL FROM river_queue WHERE name = 'genesys'`).Scan(&riverPaused))
	require.True(t, riverPaused)

	// A resume from River UI is adopted.
	_, err = b.pool.Exec(ctx, `UPDATE river_queue SET paused_at = NULL WHERE name = 'genesys'`)
	require.NoError(t, err)
	require.NoError(t, b.svc.ReconcilePauses(ctx, logger))
	var recorded int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM route_pauses`).Scan(&recorded))
	require.Zero(t, recorded)
	require.Equal(t, map[string]bool{"genesys": false, "other": false}, paused())

	require.NoError(t, b.svc.Pause(ctx, "other"))
	require.NoError(t, b.svc.Resume(ctx, "other"))
	require.Equal(t, map[string]bool{"genesys": false, "other": false}, paused())
	require.Equal(t, outbox.ENOTFOUND, outbox.ErrorCode(b.svc.Pause(ctx, "nope")))
}
