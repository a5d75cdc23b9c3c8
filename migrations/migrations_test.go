package migrations_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/migrations"
	"github.com/webhook-outbox/webhook-outbox/store"
)

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.EmptyURL(t)
	m, err := migrations.New(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	from, to, err := m.Up()
	if err != nil {
		t.Fatal(err)
	}
	if from != 0 || to != migrations.Latest {
		t.Fatalf("up went from %d to %d, want 0 to %d", from, to, migrations.Latest)
	}
	requireTables(t, dbURL, true)

	// River's own bookkeeping agrees: rivermigrate sees nothing to do.
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := rm.Migrate(ctx, rivermigrate.DirectionUp, &rivermigrate.MigrateOpts{DryRun: true})
	pool.Close() // its connections would hold up the down migration below
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Versions) != 0 {
		t.Errorf("rivermigrate would still apply %d versions; river_migration is out of step", len(res.Versions))
	}

	if _, to, err := m.Down(int(migrations.Latest)); err != nil || to != 0 {
		t.Fatalf("down all: version %d, err %v", to, err)
	}
	requireTables(t, dbURL, false)
	if _, to, err := m.Up(); err != nil || to != migrations.Latest {
		t.Fatalf("up again: version %d, err %v", to, err)
	}
	requireTables(t, dbURL, true)
}

func requireTables(t *testing.T, dbURL string, want bool) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, rel := range []string{"events", "dead_letters", "river_job", "river_queue", "river_migration"} {
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", rel).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists != want {
			t.Errorf("%s exists = %v, want %v", rel, exists, want)
		}
	}
}

// TestConcurrentUp starts several migrators on one empty database at once,
// as replicas starting together do. All must succeed.
func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.EmptyURL(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			m, err := migrations.New(ctx, dbURL, nil)
			if err != nil {
				errs[i] = err
				return
			}
			defer m.Close()
			_, _, errs[i] = m.Up()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("migrator %d: %v", i, err)
		}
	}
	requireTables(t, dbURL, true)
}

// TestUpgradeAdoptsOrphanedPartitions leaves a partition detached and not
// dropped, as retention before migration 13 did when interrupted between the
// two, then migrates up: the table is recorded as a pending drop, and the
// next maintenance run rescues its event that still has a delivery waiting
// and drops it.
func TestUpgradeAdoptsOrphanedPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testdb.EmptyURL(t)
	m, err := migrations.New(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, _, err := m.Up(); err != nil {
		t.Fatal(err)
	}
	// Down to version 12, one step at a time: version numbers have gaps.
	for v := migrations.Latest; v > 12; {
		var err error
		if _, v, err = m.Down(1); err != nil {
			t.Fatal(err)
		}
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, sql := range []string{
		`SELECT outbox_ensure_partitions(now() - interval '10 days', now() - interval '9 days', interval '1 day')`,
		`WITH ev AS (INSERT INTO events (route, key, content_type, body, received_at) VALUES ('r', 'waiting', 'application/json', '{}', now() - interval '10 days') RETURNING id, received_at)
		 INSERT INTO river_job (args, kind, max_attempts, queue, state) SELECT jsonb_build_object('event_id', id, 'received_at', received_at), 'deliver', 3, 'r', 'available' FROM ev`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%v\n%s", err, sql)
		}
	}
	var orphan string
	if err := pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM events WHERE key = 'waiting'`).Scan(&orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE events_live DETACH PARTITION `+orphan); err != nil {
		t.Fatal(err)
	}

	if _, _, err := m.Up(); err != nil {
		t.Fatal(err)
	}
	var recorded int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox_partition_drops WHERE name = $1`, orphan).Scan(&recorded); err != nil || recorded != 1 {
		t.Fatalf("the orphaned %s is not recorded as a pending drop: %d %v", orphan, recorded, err)
	}
	rep, err := store.New(pool).Maintain(ctx, store.RetentionPolicy{EventRetention: 7 * 24 * time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.DropsFinished) != 1 || rep.DropsFinished[0] != orphan {
		t.Errorf("drops finished: %v, want [%s]", rep.DropsFinished, orphan)
	}
	var gone bool
	var retained int
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NULL, (SELECT count(*) FROM events WHERE key = 'waiting' AND retained)`, orphan).Scan(&gone, &retained); err != nil {
		t.Fatal(err)
	}
	if !gone || retained != 1 {
		t.Errorf("after maintenance: %s dropped=%v, waiting event retained=%d (want true, 1)", orphan, gone, retained)
	}
}
