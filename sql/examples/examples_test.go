// Package examples_test runs every operator query in sql/examples against a
// seeded database, so they never rot.
package examples_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"

	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

func TestExamplesRunAsWritten(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.Pool(t)
	ctx := context.Background()

	// Dead letters: five 503s of varying duration in the last hour, two
	// permanent 410s, and the three Genesys shapes of one conversation.
	for i, d := range []string{"3ms", "212ms", "1.2s", "40µs", "9ms"} {
		testdb.SeedDeadLetters(t, pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: fmt.Sprintf("503-%d-", i), N: 1,
			Error: "target answered 503 Service Unavailable after " + d + ": db down", FailedAgo: 10 * time.Minute})
	}
	testdb.SeedDeadLetters(t, pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "gone-", N: 2, State: "cancelled",
		Error: "target answered 410 Gone after 2ms: no such tenant"})
	for _, f := range []string{"data-action.json", "eventbridge.json", "notification.json"} {
		body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "genesys", f))
		if err != nil {
			t.Fatal(err)
		}
		_, err = pool.Exec(ctx, `
			WITH ev AS (INSERT INTO events (route, key, content_type, body) VALUES ('genesys', $1, 'application/json', $2) RETURNING id, received_at)
			INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, finalized_at, errors)
			SELECT jsonb_build_object('event_id', id, 'route', 'genesys', 'key', $1::text, 'received_at', received_at), 'deliver', 3, 'genesys', 'discarded', 3, now(),
			       ARRAY['{"attempt":3,"error":"no answer within 10s"}'::jsonb] FROM ev`, "conv-"+f, body)
		if err != nil {
			t.Fatal(err)
		}
	}
	// Delivered events needing 1, 1, 2 and 3 attempts; a waiting backlog.
	_, err := pool.Exec(ctx, `
		INSERT INTO events (route, key, content_type, body, delivered_at, delivery_attempts)
		SELECT 'genesys', 'ok-' || a || '-' || g, 'application/json', '{}', now() - interval '5 minutes', a
		FROM unnest(ARRAY[1, 1, 2, 3]) WITH ORDINALITY AS t(a, g)`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `
		WITH ev AS (
			INSERT INTO events (route, key, content_type, body, received_at)
			SELECT 'genesys', 'waiting-' || g, 'application/json', '{}', now() - g * interval '1 minute' FROM generate_series(1, 3) g
			RETURNING id, key, received_at)
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, scheduled_at, errors)
		SELECT jsonb_build_object('event_id', id, 'route', 'genesys', 'key', key, 'received_at', received_at), 'deliver', 10, 'genesys',
		       CASE WHEN key = 'waiting-1' THEN 'available' ELSE 'retryable' END::river_job_state, 1, now() + interval '1 minute',
		       ARRAY['{"attempt":1,"error":"connection refused by 127.0.0.1:3000"}'::jsonb]
		FROM ev`)
	if err != nil {
		t.Fatal(err)
	}

	files, err := filepath.Glob("*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 6 {
		t.Fatalf("%d example queries, want at least 6", len(files))
	}
	results := map[string][]map[string]any{}
	for _, f := range files {
		sql, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(sql), "--") {
			t.Errorf("%s does not start with a comment saying what it answers", f)
		}
		rows, err := pool.Query(ctx, string(sql))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		got, err := pgx.CollectRows(rows, pgx.RowToMap)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(got) == 0 {
			t.Errorf("%s returned no rows on a database seeded for it", f)
		}
		results[f] = got
	}

	// A few answers checked in detail.
	byError := results["01_failures_last_hour_by_error.sql"]
	if assert.NotEmpty(t, byError, "failures by error") {
		assert.Equal(t, "target answered 503 Service Unavailable: db down", byError[0]["error"], "failures by error: the five 503s should group together: %v", byError)
		assert.Equal(t, int64(5), byError[0]["dead_letters"], "failures by error: the five 503s should group together: %v", byError)
	}
	if got := results["02_dead_letters_for_conversation.sql"]; len(got) != 3 {
		t.Errorf("conversation search found %d of the 3 Genesys shapes: %v", len(got), got)
	}
	if permanent := results["06_permanent_failures_by_status.sql"]; assert.NotEmpty(t, permanent, "permanent failures") {
		assert.Equal(t, "410 Gone", permanent[0]["cause"], "permanent failures: %v", permanent)
		assert.Equal(t, int64(2), permanent[0]["dead_letters"], "permanent failures: %v", permanent)
	}
	if backlog := results["03_backlog_age_per_route.sql"]; assert.Len(t, backlog, 1, "backlog") {
		assert.Equal(t, int64(1), backlog[0]["available"], "backlog: %v", backlog)
		assert.Equal(t, int64(2), backlog[0]["retryable"], "backlog: %v", backlog)
	}
	if attempts := results["04_attempts_per_delivered_event.sql"]; assert.Len(t, attempts, 3, "attempts histogram") {
		assert.Equal(t, int64(2), attempts[0]["events"], "attempts histogram: %v", attempts)
	}
}
