package store_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// TestGrowthBoundedByRetention fills 40 simulated days with a million
// events (generated in SQL, not over HTTP), runs retention, and checks that
// the expired data is gone while every pending event and every dead letter
// still within dead_letter_retention is intact. It logs sizes, and timings
// and plans of intake and the dead_letters view before and after, for a
// reader to compare; it asserts no wall-clock time.
func TestGrowthBoundedByRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("the growth test inserts a million rows; run without -short")
	}
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const (
		total = 1_000_000
		days  = 40
	)
	start := time.Now()
	if err := b.store.EnsurePartitions(ctx, time.Now().Add(-day(days+1)), time.Now().Add(store.PartitionLookahead)); err != nil {
		t.Fatal(err)
	}
	// Per thousand events: 5 dead letters (failed an hour after intake),
	// 1 still pending, the rest delivered.
	b.exec(t, fmt.Sprintf(`
		INSERT INTO events (route, key, content_type, headers, body, received_at, delivered_at, delivery_attempts)
		SELECT 'genesys', 'evt-' || g, 'application/json', '{"User-Agent":["Genesys"]}',
		       convert_to(format('{"id":"evt-%%s","type":"conversation.start","conversationId":"%%s","queueName":"Billing Support","mediaType":"VOICE","startedAt":"%%s"}',
		                         g, md5(g::text), now()), 'UTF8'),
		       ts, CASE WHEN g %% 1000 >= 6 THEN ts + interval '2 seconds' END, CASE WHEN g %% 1000 >= 6 THEN 1 END
		FROM (SELECT g, now() - ((g - 1) / %d) * interval '1 day' - (g %% 86000) * interval '1 second' AS ts
		      FROM generate_series(1, %d) AS g) s`, total/days, total))
	// Their idempotency keys, as intake stores them (migration 000022).
	b.exec(t, `INSERT INTO event_keys (route, key, event_id, received_at) SELECT route, key, id, received_at FROM events`)
	b.exec(t, `
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, finalized_at, scheduled_at, created_at, errors)
		SELECT jsonb_build_object('event_id', id, 'route', route, 'key', key, 'received_at', received_at), 'deliver', 10, route,
		       CASE WHEN substring(key FROM 5)::int % 1000 < 5 THEN 'discarded' ELSE 'retryable' END::river_job_state,
		       CASE WHEN substring(key FROM 5)::int % 1000 < 5 THEN 10 ELSE 3 END,
		       received_at + interval '1 hour',
		       CASE WHEN substring(key FROM 5)::int % 1000 < 5 THEN received_at + interval '1 hour' END,
		       now() + interval '10 minutes', received_at,
		       ARRAY['{"attempt":10,"error":"target answered 503 Service Unavailable after 20ms"}'::jsonb]
		FROM events WHERE delivered_at IS NULL`)
	b.exec(t, `ANALYZE`)
	t.Logf("seeded %d events over %d days in %s", total, days, time.Since(start).Round(time.Millisecond))

	pendingBefore := b.count(t, `SELECT count(*) FROM river_job WHERE state = 'retryable'`)
	keptDeadBefore := b.count(t, `SELECT count(*) FROM dead_letters WHERE failed_at >= now() - interval '30 days'`)
	expiredDeadBefore := b.count(t, `SELECT count(*) FROM dead_letters WHERE failed_at < now() - interval '30 days'`)
	if pendingBefore == 0 || keptDeadBefore == 0 || expiredDeadBefore == 0 {
		t.Fatalf("seed is wrong: %d pending, %d kept dead, %d expired dead", pendingBefore, keptDeadBefore, expiredDeadBefore)
	}
	before := b.measure(t, "before")

	start = time.Now()
	rep, err := b.store.Maintain(ctx, store.RetentionPolicy{EventRetention: day(7), DeadLetterRetention: day(30)}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("retention took %s: dropped %d partitions, retained %d survivors, expired %d dead letters",
		time.Since(start).Round(time.Millisecond), len(rep.PartitionsDropped), rep.SurvivorsRetained, rep.DeadLettersExpired)
	b.exec(t, `ANALYZE`)
	after := b.measure(t, "after")

	t.Logf("events: %d rows, %s -> %d rows, %s", before.rows, mib(before.bytes), after.rows, mib(after.bytes))
	t.Logf("live partitions: %d -> %d", before.partitions, after.partitions)

	// What must stay, stayed.
	if n := b.count(t, `SELECT count(*) FROM river_job WHERE state = 'retryable'`); n != pendingBefore {
		t.Errorf("pending jobs: %d, want %d", n, pendingBefore)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job j JOIN events e ON e.id = (j.args->>'event_id')::bigint
		AND e.received_at = (j.args->>'received_at')::timestamptz WHERE j.state = 'retryable'`); n != pendingBefore {
		t.Errorf("pending jobs with their event: %d, want %d", n, pendingBefore)
	}
	if n := b.count(t, `SELECT count(*) FROM dead_letters`); n != keptDeadBefore {
		t.Errorf("dead letters: %d, want the %d within dead_letter_retention", n, keptDeadBefore)
	}
	if n := rep.DeadLettersExpired; n != expiredDeadBefore {
		t.Errorf("expired %d dead letters, want %d", n, expiredDeadBefore)
	}
	// What had to go, went: nothing older than 7 days but survivors, and
	// no job left pointing at a missing event.
	if n := b.count(t, `SELECT count(*) FROM events WHERE received_at < now() - interval '8 days' AND NOT retained`); n != 0 {
		t.Errorf("%d expired events remain outside events_retained", n)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE retained AND delivered_at IS NOT NULL`); n != 0 {
		t.Errorf("%d delivered events were retained", n)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job j WHERE NOT EXISTS (SELECT 1 FROM events e
		WHERE e.id = (j.args->>'event_id')::bigint AND e.received_at = (j.args->>'received_at')::timestamptz)`); n != 0 {
		t.Errorf("%d jobs point at events that are gone", n)
	}
	if after.rows > before.rows/4 {
		t.Errorf("events went from %d to %d rows; 7 of 40 days should remain", before.rows, after.rows)
	}
	if after.partitions > 7+1+int(store.PartitionLookahead/day(1))+1 {
		t.Errorf("%d live partitions remain", after.partitions)
	}
	// The key table shrank with events: one key per remaining event.
	b.keysMatchEvents(t)
}

type measurement struct {
	rows, bytes int64
	partitions  int
}

// measure logs sizes, the median time of 50 intakes and of the
// dead_letters listing, and the listing's plan.
func (b *bundle) measure(t *testing.T, label string) measurement {
	t.Helper()
	ctx := context.Background()
	st, err := b.store.Stats(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	m := measurement{rows: st.EventsRows, bytes: st.EventsBytes}
	for _, tb := range st.Tables {
		if tb.Parent == "events_live" {
			m.partitions++
		}
	}
	var intake []time.Duration
	for i := range 50 {
		t0 := time.Now()
		_, err := b.intake.Accept(ctx, &outbox.NewEvent{Route: "genesys", Key: fmt.Sprintf("%s-probe-%d", label, i), ContentType: "application/json",
			Headers: http.Header{}, Body: []byte(`{"id":"probe"}`), MaxAttempts: 10})
		if err != nil {
			t.Fatal(err)
		}
		intake = append(intake, time.Since(t0))
	}
	var listing []time.Duration
	for range 10 {
		t0 := time.Now()
		if _, _, err := b.store.ListDeadLetters(ctx, outbox.DeadLetterFilter{Route: "genesys"}, 100, ""); err != nil {
			t.Fatal(err)
		}
		listing = append(listing, time.Since(t0))
	}
	rows, err := b.pool.Query(ctx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON)
		SELECT * FROM dead_letters WHERE route = 'genesys' ORDER BY failed_at DESC, job_id DESC LIMIT 100`)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		_ = rows.Scan(&line)
		plan = append(plan, line)
	}
	rows.Close()
	t.Logf("%s: %d events in %d live partitions, %s; intake median %s; dead_letters page median %s\n  plan: %s",
		label, m.rows, m.partitions, mib(m.bytes), median(intake), median(listing), summarize(plan))
	return m
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Microsecond)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// summarize keeps a plan's node lines and its execution time.
func summarize(plan []string) string {
	var out []string
	for _, l := range plan {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "->") || strings.HasPrefix(l, "Limit") || strings.HasPrefix(l, "Execution Time") {
			out = append(out, l)
		}
	}
	if len(out) > 12 {
		out = append(out[:12], "…")
	}
	return strings.Join(out, " | ")
}
