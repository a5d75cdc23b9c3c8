package store_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type bundle struct {
	pool   *pgxpool.Pool
	store  *store.Store
	intake *store.Intake
	client *river.Client[pgx.Tx]
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool, _ := testdb.Pool(t)
	st := store.New(pool)
	client, err := jobs.NewInsertOnlyClient(pool, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{pool: pool, store: st, intake: store.NewIntake(st, client), client: client}
}

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

func (b *bundle) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	return n
}

// insertAged inserts an event received `age` ago, delivered or not, with a
// delivery job in jobState (none if ""), finalized finalizedAgo ago for
// final states.
func (b *bundle) insertAged(t *testing.T, key string, age time.Duration, delivered bool, jobState string, finalizedAgo time.Duration) {
	t.Helper()
	if err := b.store.EnsurePartitions(context.Background(), time.Now().Add(-age-day(1)), time.Now().Add(day(1))); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `
		WITH ev AS (
			INSERT INTO events (route, key, content_type, body, received_at, delivered_at, delivery_attempts)
			VALUES ('r', $1, 'application/json', '{"id":1}', now() - $2::interval,
			        CASE WHEN $3 THEN now() - $2::interval + interval '1 second' END, CASE WHEN $3 THEN 1 END)
			RETURNING id, key, received_at),
		k AS (
			-- Its idempotency key, as intake stores it (migration 000022).
			INSERT INTO event_keys (route, key, event_id, received_at) SELECT 'r', key, id, received_at FROM ev)
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, finalized_at, errors)
		SELECT jsonb_build_object('event_id', id, 'route', 'r', 'key', key, 'received_at', received_at), 'deliver', 3, 'r',
		       nullif($4::text, '')::river_job_state, 3,
		       CASE WHEN $4::text IN ('completed', 'discarded', 'cancelled') THEN now() - $5::interval END,
		       ARRAY['{"attempt":3,"error":"boom"}'::jsonb]
		FROM ev WHERE $4::text <> ''`, key, age.String(), delivered, jobState, finalizedAgo.String())
}

func day(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// TestMaintainKeepsWhatMustStay builds 40 days of events in every state and
// runs retention: expired partitions are dropped whole, and nothing pending
// and no dead letter still within dead_letter_retention is lost.
func TestMaintainKeepsWhatMustStay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if err := b.store.EnsurePartitions(ctx, time.Now().Add(-day(41)), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	b.insertAged(t, "old-delivered", day(10), true, "", 0)
	b.insertAged(t, "old-delivered-job-completed", day(9), true, "completed", day(9))
	b.insertAged(t, "old-pending", day(10), false, "retryable", 0)
	b.insertAged(t, "old-paused", day(20), false, "available", 0)
	b.insertAged(t, "old-dead-kept", day(9), false, "discarded", day(8))
	b.insertAged(t, "old-dead-expired", day(40), false, "cancelled", day(31))
	b.insertAged(t, "new-delivered", day(2), true, "", 0)
	b.insertAged(t, "new-dead-expired", day(2), false, "discarded", day(31)) // finalized "before" received: only the age matters
	b.insertAged(t, "now-pending", 0, false, "available", 0)

	policy := store.RetentionPolicy{EventRetention: day(7), DeadLetterRetention: day(30)}
	rep, err := b.store.Maintain(ctx, policy, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)

	present := func(key string) bool {
		return b.count(t, `SELECT count(*) FROM events WHERE key = $1`, key) == 1
	}
	for key, want := range map[string]bool{
		"old-delivered": false, "old-delivered-job-completed": false, "old-dead-expired": false, "new-dead-expired": false,
		"old-pending": true, "old-paused": true, "old-dead-kept": true, "new-delivered": true, "now-pending": true,
	} {
		if got := present(key); got != want {
			t.Errorf("%s: present=%v, want %v", key, got, want)
		}
	}
	// Survivors of dropped partitions live in events_retained now; the
	// dead letter is still in the view, and no job points at a missing event.
	if n := b.count(t, `SELECT count(*) FROM events WHERE retained`); n != 3 {
		t.Errorf("%d retained events, want 3 (old-pending, old-paused, old-dead-kept)", n)
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters WHERE key = 'old-dead-kept'`); n != 1 {
		t.Errorf("the kept dead letter left the view")
	}
	if n := b.count(t, `SELECT count(*) FROM river_job j WHERE NOT EXISTS (
		SELECT 1 FROM events e WHERE e.id = (j.args->>'event_id')::bigint AND e.received_at = (j.args->>'received_at')::timestamptz)
		AND j.state <> 'completed'`); n != 0 {
		t.Errorf("%d jobs point at events that are gone", n)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job WHERE args->>'key' IN ('old-dead-expired', 'new-dead-expired')`); n != 0 {
		t.Errorf("expired dead letters' jobs remain: %d", n)
	}
	// A retained event is still found by id and partition key, as a
	// delivery looks it up.
	var id int64
	var receivedAt time.Time
	if err := b.pool.QueryRow(ctx, `SELECT id, received_at FROM events WHERE key = 'old-pending'`).Scan(&id, &receivedAt); err != nil {
		t.Fatal(err)
	}
	if ev, err := loadEvent(t, b.store, ctx, id, receivedAt); err != nil || ev.Key != "old-pending" {
		t.Errorf("retained event lookup: %v %v", ev, err)
	}

	parts := b.partitions(t)
	if len(parts) == 0 || parts[0].Before(time.Now().Add(-day(8))) {
		t.Errorf("oldest remaining partition starts %v; partitions older than 7 days should be gone", parts[0])
	}
	if last := parts[len(parts)-1]; last.Before(time.Now().Add(store.PartitionLookahead - day(1))) {
		t.Errorf("newest partition starts %v; partitions should exist %s ahead", last, store.PartitionLookahead)
	}

	// Idempotent: a second run drops nothing more.
	rep, err = b.store.Maintain(ctx, policy, quiet)
	if err != nil || len(rep.PartitionsDropped) != 0 || rep.DeadLettersExpired != 0 {
		t.Errorf("second run: %+v %v", rep, err)
	}

	// Once a retained event is delivered, the next run removes it.
	b.exec(t, `UPDATE events SET delivered_at = now() WHERE key = 'old-pending'`)
	b.exec(t, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE args->>'key' = 'old-pending'`)
	if _, err := b.store.Maintain(ctx, policy, quiet); err != nil {
		t.Fatal(err)
	}
	if present("old-pending") || !present("old-paused") || !present("old-dead-kept") {
		t.Errorf("after delivery: old-pending=%v old-paused=%v old-dead-kept=%v", present("old-pending"), present("old-paused"), present("old-dead-kept"))
	}
}

func (b *bundle) partitions(t *testing.T) []time.Time {
	t.Helper()
	rows, err := b.pool.Query(context.Background(), `SELECT range_start FROM outbox_live_partitions()`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var ts time.Time
		if err := rows.Scan(&ts); err != nil {
			t.Fatal(err)
		}
		out = append(out, ts)
	}
	return out
}

// TestDedupeAcrossPartitions stores a key in an old partition, and in
// events_retained, and sends it again now: a duplicate either way.
func TestDedupeAcrossPartitions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if err := b.store.EnsurePartitions(ctx, time.Now().Add(-day(3)), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	b.insertAged(t, "two-days-old", day(2), false, "available", 0)
	b.insertAged(t, "retained", day(2), false, "available", 0)
	b.exec(t, `UPDATE events SET retained = true WHERE key = 'retained'`)
	for _, key := range []string{"two-days-old", "retained"} {
		res, err := b.intake.Accept(ctx, &outbox.NewEvent{Route: "r", Key: key, ContentType: "application/json", Headers: http.Header{}, Body: []byte(`{}`), MaxAttempts: 3})
		if err != nil || !res.Duplicate {
			t.Errorf("%s sent again: %+v %v, want a duplicate", key, res, err)
		}
		if n := b.count(t, `SELECT count(*) FROM events WHERE key = $1`, key); n != 1 {
			t.Errorf("%s: %d rows", key, n)
		}
	}
}

// TestIntakeCreatesAMissingPartition removes the current partition, as if
// maintenance had not run for days: intake creates it and accepts.
func TestIntakeCreatesAMissingPartition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	var name string
	if err := b.pool.QueryRow(ctx, `SELECT name FROM outbox_live_partitions() WHERE range_start <= now() AND range_end > now()`).Scan(&name); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `DROP TABLE `+name)
	res, err := b.intake.Accept(ctx, &outbox.NewEvent{Route: "r", Key: "k", ContentType: "application/json", Headers: http.Header{}, Body: []byte(`{}`), MaxAttempts: 3})
	if err != nil || res.Duplicate {
		t.Fatalf("accept without a partition: %+v %v", res, err)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'k'`); n != 1 {
		t.Errorf("%d rows", n)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.insertAged(t, "dead", time.Hour, false, "discarded", 30*time.Minute)
	b.insertAged(t, "ok", time.Minute, true, "", 0)
	st, err := b.store.Stats(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exact || st.EventsRows != 2 || st.DeadLetters != 1 || st.OldestEvent == nil || st.DeadLetterAgeSecs == nil || *st.DeadLetterAgeSecs < 1700 {
		t.Errorf("stats: %+v", st)
	}
	names := []string{}
	for _, tb := range st.Tables {
		names = append(names, tb.Name)
	}
	joined := strings.Join(names, " ")
	for _, want := range []string{"events_retained", "river_job", "events_p"} {
		if !strings.Contains(joined, want) {
			t.Errorf("stats tables %v lack %s", names, want)
		}
	}
}
