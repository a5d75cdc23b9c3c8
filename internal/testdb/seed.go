package testdb

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DeadLetters describes dead letters to create directly in SQL, as many as
// a test needs, without running deliveries.
type DeadLetters struct {
	Route string
	// Keys are KeyPrefix followed by 1..N.
	KeyPrefix string
	N         int
	// State is discarded (the default) or cancelled.
	State string
	// Error is each one's last error.
	Error string
	// FailedAgo is how long ago they failed (default 1 minute).
	FailedAgo time.Duration
}

// SeedDeadLetters inserts events and their dead delivery jobs. Each payload
// is {"id": key, "conversationId": "conv-<i>", "n": i}.
func SeedDeadLetters(t testing.TB, pool *pgxpool.Pool, d DeadLetters) {
	t.Helper()
	if d.State == "" {
		d.State = "discarded"
	}
	if d.FailedAgo == 0 {
		d.FailedAgo = time.Minute
	}
	// Partitions must cover the past these rows are dated in.
	if _, err := pool.Exec(context.Background(), `SELECT outbox_ensure_partitions(now() - $1::interval - interval '1 day', now() + interval '1 day', interval '1 day')`,
		d.FailedAgo.String()); err != nil {
		t.Fatalf("cannot create partitions: %v", err)
	}
	_, err := pool.Exec(context.Background(), `
		WITH ev AS (
			INSERT INTO events (route, key, content_type, headers, body, received_at)
			SELECT $1, $2 || g, 'application/json', '{}',
			       convert_to(format('{"id":"%s%s","conversationId":"conv-%s","n":%s}', $2, g, g, g), 'UTF8'),
			       now() - $5::interval - interval '1 minute'
			FROM generate_series(1, $3::int) AS g
			RETURNING id, route, key, received_at
		)
		INSERT INTO river_job (args, kind, max_attempts, queue, state, attempt, attempted_at, finalized_at, scheduled_at, created_at, errors)
		SELECT jsonb_build_object('event_id', id, 'route', route, 'key', key, 'received_at', received_at), 'deliver', 3, route, $4::river_job_state, 3,
		       now() - $5::interval, now() - $5::interval, now() - $5::interval, now() - $5::interval - interval '1 minute',
		       ARRAY[jsonb_build_object('at', now() - $5::interval, 'attempt', 3, 'error', $6::text)]
		FROM ev`,
		d.Route, d.KeyPrefix, d.N, d.State, d.FailedAgo.String(), d.Error)
	if err != nil {
		t.Fatalf("cannot seed dead letters: %v", err)
	}
}
