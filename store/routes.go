package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/sql/dbsqlc"
)

// RouteStatus is one route's state, for `outbox routes list` and GET
// /admin/v1/routes.
type RouteStatus struct {
	Name     string     `json:"name"`
	Target   string     `json:"target"`
	Paused   bool       `json:"paused"`
	PausedAt *time.Time `json:"paused_at"`
	Backlog  Backlog    `json:"backlog"`
	// DeadLetters counts the route's events in the dead_letters view.
	DeadLetters int64 `json:"dead_letters"`
	// OldestUndeliveredAge is how long the oldest event still waiting for
	// delivery has waited, in seconds, counted from its intake (or its
	// replay); null when none waits. It is outbox_oldest_undelivered_age_seconds.
	OldestUndeliveredAge *float64 `json:"oldest_undelivered_age_seconds"`
	// DeliveredLastHour counts deliveries that succeeded in the last hour.
	DeliveredLastHour int64 `json:"delivered_last_hour"`
	Concurrency       int   `json:"concurrency"`
	// Circuit is the route's circuit breaker on the replica that answered
	// (each replica has its own). The CLI, which runs no deliveries, has
	// none to show.
	Circuit *CircuitInfo `json:"circuit,omitempty"`
}

// CircuitInfo is a route's circuit breaker state on one replica.
type CircuitInfo struct {
	// State is closed, open or half-open.
	State               string     `json:"state"`
	Since               time.Time  `json:"since"`
	OpenUntil           *time.Time `json:"open_until,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	LastError           string     `json:"last_error,omitempty"`
}

// SetCircuits lets Routes report this replica's circuit breakers.
func (a *Admin) SetCircuits(fn func(route string) (CircuitInfo, bool)) { a.circuits = fn }

// Backlog splits the events waiting for delivery by why they wait.
type Backlog struct {
	// Available jobs are due now and wait for a worker.
	Available int64 `json:"available"`
	// Retryable jobs failed and wait for their backoff.
	Retryable int64 `json:"retryable"`
	// Scheduled jobs were snoozed (Retry-After) or wait for a distant retry.
	Scheduled int64 `json:"scheduled"`
	// Running jobs are being delivered now.
	Running int64 `json:"running"`
}

// Routes reports every configured route's state.
func (a *Admin) Routes(ctx context.Context) ([]RouteStatus, error) {
	now := a.now()
	names := make([]string, len(a.cfg.Routes))
	byName := map[string]*RouteStatus{}
	out := make([]RouteStatus, len(a.cfg.Routes))
	for i, r := range a.cfg.Routes {
		names[i] = r.Name
		out[i] = RouteStatus{Name: r.Name, Target: config.RedactURL(r.Target.URL), Concurrency: r.Concurrency}
		byName[r.Name] = &out[i]
	}
	q := a.store.q
	// The same queries as the backlog and dead-letter gauges, so the
	// listing and /metrics agree.
	st, err := a.store.DeliveryStats(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range st.Backlog {
		s := byName[b.Route]
		if s == nil {
			continue
		}
		switch b.State {
		case "available", "pending":
			s.Backlog.Available += b.Jobs
		case "retryable":
			s.Backlog.Retryable += b.Jobs
		case "scheduled":
			s.Backlog.Scheduled += b.Jobs
		case "running":
			s.Backlog.Running += b.Jobs
		}
		if s.OldestUndeliveredAge == nil || b.OldestAge > *s.OldestUndeliveredAge {
			s.OldestUndeliveredAge = new(max(b.OldestAge, 0))
		}
	}
	for route, n := range st.DeadLetters {
		if s := byName[route]; s != nil {
			s.DeadLetters = n
		}
	}
	delivered, err := q.DeliveredSinceByRoute(ctx, new(now.Add(-time.Hour)))
	if err != nil {
		return nil, fmt.Errorf("error counting deliveries: %w", err)
	}
	for _, d := range delivered {
		if s := byName[d.Route]; s != nil {
			s.DeliveredLastHour = d.Delivered
		}
	}
	states, err := q.QueuePauseStates(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("error reading pauses: %w", err)
	}
	for _, st := range states {
		if s := byName[st.Name]; s != nil && st.PausedAt != nil {
			s.Paused, s.PausedAt = true, st.PausedAt
		}
	}
	pauses, err := q.ListRoutePauses(ctx)
	if err != nil {
		return nil, fmt.Errorf("error reading pauses: %w", err)
	}
	for _, p := range pauses {
		// River's row may be gone (its queue cleaner); ours still holds.
		if s := byName[p.Route]; s != nil && !s.Paused {
			s.Paused, s.PausedAt = true, &p.PausedAt
		}
	}
	if a.circuits != nil {
		for i := range out {
			if c, ok := a.circuits(out[i].Name); ok {
				out[i].Circuit = &c
			}
		}
	}
	return out, nil
}

// Pause stops a route's deliveries on every replica; intake goes on. The
// pause is kept both in River's queue row, which the workers obey, and in
// route_pauses, from which serve restores it should River's queue cleaner
// delete an idle queue's row. It works before the route's queue has ever
// run.
func (a *Admin) Pause(ctx context.Context, route string) error {
	return a.setPaused(ctx, route, true)
}

// Resume lets a paused route's deliveries run again, at the route's normal
// concurrency.
func (a *Admin) Resume(ctx context.Context, route string) error {
	return a.setPaused(ctx, route, false)
}

func (a *Admin) setPaused(ctx context.Context, route string, paused bool) error {
	if _, err := a.checkRoute(route); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, a.store.pool, func(tx pgx.Tx) error {
		q := a.store.q.WithTx(tx)
		if err := q.EnsureQueueRow(ctx, dbsqlc.EnsureQueueRowParams{Name: route}); err != nil {
			return fmt.Errorf("error creating queue %s: %w", route, err)
		}
		if paused {
			if err := q.SetRoutePaused(ctx, route); err != nil {
				return fmt.Errorf("error recording pause: %w", err)
			}
			// River's pause notifies every replica's workers in the same
			// transaction; those that miss it poll within a minute.
			if err := a.jobs.QueuePauseTx(ctx, tx, route, &river.QueuePauseOpts{}); err != nil {
				return fmt.Errorf("error pausing queue %s: %w", route, err)
			}
			return nil
		}
		if err := q.ClearRoutePaused(ctx, route); err != nil {
			return fmt.Errorf("error recording resume: %w", err)
		}
		if err := a.jobs.QueueResumeTx(ctx, tx, route, &river.QueuePauseOpts{}); err != nil {
			return fmt.Errorf("error resuming queue %s: %w", route, err)
		}
		return nil
	})
}

// ReconcilePauses brings River's queue rows and route_pauses into step for
// the configured routes. Where River's row exists, it is the truth (a pause
// or resume from River UI is adopted). Where it is missing (never created,
// or deleted by River's queue cleaner after a day idle) it is created from
// route_pauses, paused if the route was. Serve runs it before starting its
// workers, so a restored pause holds from their first fetch, and then
// periodically.
func (a *Admin) ReconcilePauses(ctx context.Context, logger *slog.Logger) error {
	names := make([]string, len(a.cfg.Routes))
	for i, r := range a.cfg.Routes {
		names[i] = r.Name
	}
	q := a.store.q
	pauses, err := q.ListRoutePauses(ctx)
	if err != nil {
		return fmt.Errorf("error reading pauses: %w", err)
	}
	ours := map[string]time.Time{}
	for _, p := range pauses {
		ours[p.Route] = p.PausedAt
	}
	rows, err := q.QueuePauseStates(ctx, names)
	if err != nil {
		return fmt.Errorf("error reading River's queues: %w", err)
	}
	riverPaused := map[string]bool{}
	exists := map[string]bool{}
	for _, r := range rows {
		exists[r.Name] = true
		riverPaused[r.Name] = r.PausedAt != nil
	}
	for _, name := range names {
		pausedAt, paused := ours[name]
		switch {
		case !exists[name]:
			params := dbsqlc.EnsureQueueRowParams{Name: name}
			if paused {
				params.PausedAt = &pausedAt
				logger.Info("restoring the pause of a route whose queue row was missing", "route", name)
			}
			if err := q.EnsureQueueRow(ctx, params); err != nil {
				return fmt.Errorf("error creating queue %s: %w", name, err)
			}
		case riverPaused[name] && !paused:
			logger.Info("route was paused outside webhook-outbox (River UI?); recording the pause", "route", name)
			if err := q.SetRoutePaused(ctx, name); err != nil {
				return err
			}
		case !riverPaused[name] && paused:
			logger.Info("route was resumed outside webhook-outbox (River UI?); recording the resume", "route", name)
			if err := q.ClearRoutePaused(ctx, name); err != nil {
				return err
			}
		}
	}
	return nil
}
