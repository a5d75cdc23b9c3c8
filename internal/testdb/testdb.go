// Package testdb gives tests their own real Postgres database.
//
// TEST_DATABASE_URL names a server where the test user may create databases
// (`make test` starts a private one). Each test package migrates one
// template database once; each test then gets a fresh copy of it, dropped
// when the test ends, so tests can count rows without seeing each other's.
package testdb

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhook-outbox/webhook-outbox/migrations"
)

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
	createMu     sync.Mutex
	counter      atomic.Int64
)

// BaseURL returns TEST_DATABASE_URL, failing the test when it is not set.
func BaseURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		t.Fatal("TEST_DATABASE_URL is not set: run `make test`, which starts a private Postgres, or set it to a server where you may create databases")
	}
	return base
}

// URL creates a fresh, fully migrated database for the test and returns its
// URL. The database is dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	templateOnce.Do(func() { templateName, templateErr = createTemplate(base) })
	if templateErr != nil {
		t.Fatalf("cannot prepare the template database: %v", templateErr)
	}
	name := fmt.Sprintf("%s_%d", templateName, counter.Add(1))
	createMu.Lock() // a template cannot be copied by two sessions at once
	err := exec(base, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName))
	createMu.Unlock()
	if err != nil {
		t.Fatalf("cannot create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := exec(base, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Logf("cannot drop test database %s: %v", name, err)
		}
	})
	return withDatabase(base, name)
}

// EmptyURL creates an empty database (no schema at all) for the test, for
// tests of migrations themselves.
func EmptyURL(t testing.TB) string {
	t.Helper()
	base := BaseURL(t)
	name := fmt.Sprintf("outbox_empty_%s_%d_%d", packageName(), os.Getpid(), counter.Add(1))
	if err := exec(base, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("cannot create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := exec(base, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Logf("cannot drop test database %s: %v", name, err)
		}
	})
	return withDatabase(base, name)
}

// Pool returns a pool on a fresh, migrated database, closed when the test
// ends.
func Pool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := URL(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, dbURL
}

func createTemplate(base string) (string, error) {
	name := fmt.Sprintf("outbox_t_%s_%d", packageName(), os.Getpid())
	// Templates of earlier runs whose process died are dropped, so a shared
	// server does not fill up with them.
	_ = dropStale(base)
	if err := exec(base, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := migrations.New(ctx, withDatabase(base, name), nil)
	if err != nil {
		return "", err
	}
	defer m.Close()
	if _, _, err := m.Up(); err != nil {
		return "", err
	}
	return name, nil
}

// dropStale drops databases left by test processes that no longer run.
func dropStale(base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname ~ '^outbox_(t|empty)_[a-z0-9]+_[0-9]+'`)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	pidOf := regexp.MustCompile(`^outbox_(?:t|empty)_[a-z0-9]+_([0-9]+)`)
	for _, n := range names {
		pid := pidOf.FindStringSubmatch(n)[1]
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // its process still runs
		}
		_, _ = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{n}.Sanitize()))
	}
	return nil
}

func exec(base, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		panic(fmt.Sprintf("TEST_DATABASE_URL must be a postgres:// URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

var nonAlnum = regexp.MustCompile(`[^a-z0-9]+`)

// packageName names databases after the test binary, which is named after
// its package (handler.test, for example).
func packageName() string {
	name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	name = nonAlnum.ReplaceAllString(strings.ToLower(name), "")
	if len(name) > 20 {
		name = name[:20]
	}
	if name == "" {
		name = "pkg"
	}
	return name
}

// Pools returns n pools on one fresh, migrated database, closed when the
// test ends: n replicas of outbox serve, each with its own connections.
func Pools(t testing.TB, n int) []*pgxpool.Pool {
	t.Helper()
	dbURL := URL(t)
	pools := make([]*pgxpool.Pool, n)
	for i := range pools {
		pool, err := pgxpool.New(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		pools[i] = pool
	}
	return pools
}

// CountedPool returns a pool on a fresh, migrated database that counts the
// statements it sends, for benchmarks that report statements per
// operation; and the database's URL, for connections that should not count.
func CountedPool(t testing.TB) (*pgxpool.Pool, *StatementCounter, string) {
	t.Helper()
	dbURL := URL(t)
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	counter := &StatementCounter{}
	cfg.ConnConfig.Tracer = counter
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, counter, dbURL
}

// StatementCounter is a pgx tracer that counts statements (queries, Execs,
// and the BEGIN and COMMIT of transactions).
type StatementCounter struct{ n atomic.Int64 }

// Count returns the statements sent so far.
func (c *StatementCounter) Count() int64 { return c.n.Load() }

// TraceQueryStart implements pgx.QueryTracer.
func (c *StatementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (c *StatementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
