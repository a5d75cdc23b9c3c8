package migrations_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/migrations"
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
