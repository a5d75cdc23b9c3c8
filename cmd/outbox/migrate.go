package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/migrations"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("migrate", stderr)
	all := fs.Bool("all", false, "with down: revert every migration, dropping all of outbox's and River's tables")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("migrate needs up, down, version or force")
	}
	switch rest[0] {
	case "up", "down", "version", "force":
	default:
		return usagef("unknown migrate command %q: use up, down, version or force", rest[0])
	}
	cfg, err := config.Load(config.Path(*configPath))
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m, err := migrations.New(ctx, cfg.DatabaseURL, logger)
	if err != nil {
		return err
	}
	defer m.Close()

	switch sub, subArgs := rest[0], rest[1:]; sub {
	case "up":
		if len(subArgs) > 0 {
			return usagef("migrate up takes no arguments")
		}
		from, to, err := m.Up()
		if err != nil {
			return err
		}
		if from == to {
			fmt.Fprintf(stdout, "schema is up to date at version %d\n", to)
		} else {
			fmt.Fprintf(stdout, "migrated from version %d to %d\n", from, to)
		}
	case "down":
		steps := 1
		switch {
		case *all && len(subArgs) > 0:
			return usagef("migrate down takes N or --all, not both")
		case *all:
			steps = int(migrations.Latest)
		case len(subArgs) == 1:
			steps, err = strconv.Atoi(subArgs[0])
			if err != nil || steps < 1 {
				return usagef("migrate down N: N must be a positive number of steps, got %q", subArgs[0])
			}
		case len(subArgs) > 1:
			return usagef("migrate down takes at most one argument, the number of steps")
		}
		from, to, err := m.Down(steps)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "migrated down from version %d to %d\n", from, to)
	case "version":
		v, err := m.Version()
		if err != nil {
			return err
		}
		state := "up to date"
		if v < migrations.Latest {
			state = fmt.Sprintf("behind: run `outbox migrate up` to reach %d", migrations.Latest)
		} else if v > migrations.Latest {
			state = fmt.Sprintf("ahead of this binary's %d", migrations.Latest)
		}
		fmt.Fprintf(stdout, "%d (%s)\n", v, state)
	case "force":
		if len(subArgs) != 1 {
			return usagef("migrate force needs the version to record")
		}
		v, err := strconv.ParseUint(subArgs[0], 10, 32)
		if err != nil || uint(v) > migrations.Latest {
			return usagef("migrate force VERSION: VERSION must be a number from 0 to %d", migrations.Latest)
		}
		if err := m.Force(uint(v)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "recorded version %d as applied and clean\n", v)
	}
	return nil
}

// migrateUp applies pending migrations, for serve --migrate.
func migrateUp(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	m, err := migrations.New(ctx, databaseURL, logger)
	if err != nil {
		return err
	}
	defer m.Close()
	from, to, err := m.Up()
	if err != nil {
		return err
	}
	if from != to {
		logger.Info("migrated the schema", "from", from, "to", to)
	}
	return nil
}
