// Package store is webhook-outbox's access to Postgres: events, their
// delivery jobs, and the schema's readiness. The HTTP handlers and the River
// workers both use it, and neither imports the other.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/migrations"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// Store runs webhook-outbox's queries.
type Store struct {
	pool *pgxpool.Pool
	q    *dbsqlc.Queries

	// PartitionInterval is the time span of each events partition
	// (config event_partition_interval).
	PartitionInterval time.Duration

	// stepHook, set only by tests (export_test.go), is called as
	// maintenance starts each step; an error it returns stops the run
	// there, as a crash would.
	stepHook func(ctx context.Context, step string) error
}

// New returns a Store over pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: dbsqlc.New(pool), PartitionInterval: config.DefaultPartitionInterval}
}

// Pool returns the connection pool, for River's driver.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Connect opens a pool to databaseURL and checks that it answers. Connection
// attempts are bounded so that a down database fails fast.
func Connect(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("invalid database_url: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.MaxConns = max(cfg.MaxConns, 20)
	cfg.ConnConfig.RuntimeParams["application_name"] = "webhook-outbox"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("invalid database_url: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach the database at %s: %w", redactURL(cfg.ConnConfig), err)
	}
	return pool, nil
}

func redactURL(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s:%d/%s", c.Host, c.Port, c.Database)
}

// CheckSchema returns nil when the database's schema is exactly the version
// this binary carries, and otherwise an EUNAVAILABLE error that says what to
// run.
func (s *Store) CheckSchema(ctx context.Context) error {
	row, err := s.q.SchemaVersion(ctx)
	switch {
	case errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err):
		return outbox.Errorf(outbox.EUNAVAILABLE, "the database has no webhook-outbox schema: run `outbox migrate up` (or start with `outbox serve --migrate`)")
	case err != nil:
		return outbox.Wrap(outbox.EUNAVAILABLE, err, "the database is unreachable")
	case row.Dirty:
		return outbox.Errorf(outbox.EUNAVAILABLE, "the schema is dirty at version %d: a migration failed halfway; repair it, then run `outbox migrate force %d`", row.Version, row.Version)
	case uint(row.Version) < migrations.Latest:
		return outbox.Errorf(outbox.EUNAVAILABLE, "the schema is at version %d and this binary needs %d: run `outbox migrate up` (or start with `outbox serve --migrate`)", row.Version, migrations.Latest)
	case uint(row.Version) > migrations.Latest:
		return outbox.Errorf(outbox.EUNAVAILABLE, "the schema is at version %d, newer than this binary's %d: run the newer outbox binary, or `outbox migrate down` with it", row.Version, migrations.Latest)
	}
	return nil
}

// Ready reports whether the database answers and the schema is current:
// nil, or an EUNAVAILABLE error that says why not.
func (s *Store) Ready(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return outbox.Wrap(outbox.EUNAVAILABLE, err, "the database is unreachable")
	}
	return s.CheckSchema(ctx)
}

// DeliveryEvent is what a delivery needs of an event.
type DeliveryEvent struct {
	ID          int64
	Route       string
	Key         string
	ReceivedAt  time.Time
	ContentType string
	Body        []byte
}

// JobInserter is the part of a River client that enqueues jobs in a
// transaction. An insert-only client serves.
type JobInserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}
