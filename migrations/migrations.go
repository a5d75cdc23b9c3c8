// Package migrations holds the database schema as golang-migrate up/down
// pairs, embedded in the binary, and the code that applies them.
//
// Versions 1-8 are River's own migrations (riverpgxv5, line "main"), one file
// per River version so that each runs in its own transaction: River's 004 adds
// an enum value that 006 uses, and Postgres cannot use a new enum value in the
// transaction that added it. They are generated from the River module and
// checked against it by TestRiverMigrationsMatchRiver. They also keep River's
// own river_migration table up to date, so River's tooling agrees with ours.
// Versions from 9 on are webhook-outbox's tables and views.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed *.sql
var files embed.FS

// Latest is the newest schema version this binary carries. `outbox serve`
// refuses to run against any other version.
var Latest = mustLatest()

func mustLatest() uint {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		panic(err)
	}
	var latest uint
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(prefix, 10, 32)
		if err != nil {
			panic(fmt.Sprintf("migration file %s does not start with a version number", e.Name()))
		}
		latest = max(latest, uint(v))
	}
	return latest
}

// ErrDirty reports a schema left half-migrated by a failed migration.
var ErrDirty = errors.New("database schema is dirty")

// Migrator applies the embedded migrations to one database.
type Migrator struct {
	db *sql.DB
	m  *migrate.Migrate
}

// New connects to databaseURL and prepares the embedded migrations. Several
// processes may call Up at once: golang-migrate serialises them with a
// Postgres advisory lock, and the later ones find nothing left to do.
func New(ctx context.Context, databaseURL string, logger *slog.Logger) (*Migrator, error) {
	connConfig, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("invalid database_url: %w", err)
	}
	db := stdlib.OpenDB(*connConfig)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("cannot reach the database: %w", err)
	}
	driver, err := migratepgx.WithInstance(db, &migratepgx.Config{})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("error preparing migrations: %w", err)
	}
	source, err := iofs.New(files, ".")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("error reading embedded migrations: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", source, "postgres", driver)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("error preparing migrations: %w", err)
	}
	if logger != nil {
		m.Log = &migrateLogger{logger: logger}
	}
	return &Migrator{db: db, m: m}, nil
}

// Close releases the database connection.
func (m *Migrator) Close() error {
	srcErr, dbErr := m.m.Close()
	return errors.Join(srcErr, dbErr, m.db.Close())
}

// Up applies every migration not yet applied. It returns the versions before
// and after; they are equal when there was nothing to do.
func (m *Migrator) Up() (from, to uint, err error) {
	// Read outside the lock, so another replica may be mid-migration (and
	// the schema dirty) right now: this is only for reporting. m.m.Up takes
	// the lock and reads the version again before doing anything.
	if v, _, err := m.m.Version(); err == nil {
		from = v
	}
	if err := m.m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return from, 0, explain(err)
	}
	to, err = m.Version()
	return from, to, err
}

// Down reverts the newest steps migrations.
func (m *Migrator) Down(steps int) (from, to uint, err error) {
	from, err = m.Version()
	if err != nil {
		return 0, 0, err
	}
	if from == 0 {
		return 0, 0, nil
	}
	steps = min(steps, int(from))
	// Version numbers have gaps (each engineer is given their own), so
	// there are fewer migrations than the version number; going past the
	// first one is reaching version 0, not an error.
	var short migrate.ErrShortLimit
	if err := m.m.Steps(-steps); err != nil && !errors.Is(err, migrate.ErrNoChange) && !errors.As(err, &short) {
		return from, 0, explain(err)
	}
	to, err = m.Version()
	return from, to, err
}

// Force records version as applied and clean, without running anything. It is
// the way out after a migration failed halfway and the operator has repaired
// the schema by hand.
func (m *Migrator) Force(version uint) error {
	if err := m.m.Force(int(version)); err != nil {
		return explain(err)
	}
	return nil
}

// Version returns the applied schema version, 0 for an empty database. A
// dirty schema returns ErrDirty.
func (m *Migrator) Version() (uint, error) {
	v, dirty, err := m.m.Version()
	switch {
	case errors.Is(err, migrate.ErrNilVersion):
		return 0, nil
	case err != nil:
		return 0, explain(err)
	case dirty:
		return v, fmt.Errorf("%w at version %d: a migration failed halfway; repair it by hand, then run `outbox migrate force %d`", ErrDirty, v, v)
	}
	return v, nil
}

func explain(err error) error {
	var dirty migrate.ErrDirty
	if errors.As(err, &dirty) {
		return fmt.Errorf("%w at version %d: a migration failed halfway; repair it by hand, then run `outbox migrate force %d`", ErrDirty, dirty.Version, dirty.Version)
	}
	return fmt.Errorf("migration failed: %w", err)
}

type migrateLogger struct{ logger *slog.Logger }

func (l *migrateLogger) Printf(format string, v ...any) {
	l.logger.Info(strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l *migrateLogger) Verbose() bool { return false }
