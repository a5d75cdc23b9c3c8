package admin

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
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
	// Circuit is the route's circuit breaker, one for the whole fleet,
	// read from Postgres: every replica and the CLI show the same.
	Circuit outbox.CircuitInfo `json:"circuit"`
	// Limit is the route's concurrency limit across the fleet now, from
	// the replicas' leases in Postgres.
	Limit LimitStatus `json:"limit"`
	// Ordering is set for a route with ordering: its blocked keys.
	Ordering *OrderingStatus `json:"ordering,omitempty"`
}

// LimitStatus is a route's concurrency limit across the fleet: the sum of
// the replicas' shares of its `concurrency`, each share the smaller of the
// replica's adaptive limit and a fair split of the concurrency.
type LimitStatus struct {
	// Adaptive is false when adaptive_concurrency is off: the limit is
	// then the concurrency, split between the replicas with work.
	Adaptive bool `json:"adaptive"`
	// Current is how many requests the fleet may have in flight to the
	// target now; null when no replica holds a share, because the route
	// has had no work for a while (its next deliveries start slowly).
	Current *int `json:"current"`
	// InFlight is how many requests the replicas had in flight at their
	// last renewal (every few seconds while the route has work).
	InFlight int `json:"in_flight"`
	// Replicas is how many replicas hold a share now.
	Replicas int `json:"replicas"`
}

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
	// Waiting events, on a route with ordering, wait for an earlier event
	// of their ordering key (River's pending jobs).
	Waiting int64 `json:"waiting"`
}

// Routes reports every configured route's state.
func (s *Service) Routes(ctx context.Context) ([]RouteStatus, error) {
	byName := map[string]*RouteStatus{}
	out := make([]RouteStatus, len(s.cfg.Routes))
	for i, r := range s.cfg.Routes {
		out[i] = RouteStatus{Name: r.Name, Target: config.RedactURL(r.Target.URL), Concurrency: r.Concurrency,
			Circuit: outbox.CircuitInfo{State: outbox.CircuitClosed}, Limit: LimitStatus{Adaptive: r.Adaptive()}}
		if r.Ordering != nil {
			out[i].Ordering = &OrderingStatus{OnDeadLetter: r.Ordering.OnDeadLetter}
		}
		byName[r.Name] = &out[i]
	}
	// The same queries as the backlog and dead-letter gauges, so the
	// listing and /metrics agree.
	st, err := s.store.DeliveryStats(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range st.Backlog {
		rs := byName[b.Route]
		if rs == nil {
			continue
		}
		switch rivertype.JobState(b.State) {
		case rivertype.JobStateAvailable:
			rs.Backlog.Available += b.Jobs
		case rivertype.JobStatePending:
			rs.Backlog.Waiting += b.Jobs
		case rivertype.JobStateRetryable:
			rs.Backlog.Retryable += b.Jobs
		case rivertype.JobStateScheduled:
			rs.Backlog.Scheduled += b.Jobs
		case rivertype.JobStateRunning:
			rs.Backlog.Running += b.Jobs
		}
		if rs.OldestUndeliveredAge == nil || b.OldestAge > *rs.OldestUndeliveredAge {
			rs.OldestUndeliveredAge = new(max(b.OldestAge, 0))
		}
	}
	for route, n := range st.DeadLetters {
		if rs := byName[route]; rs != nil {
			rs.DeadLetters = n
		}
	}
	for route, c := range st.BlockedKeys {
		if rs := byName[route]; rs != nil && rs.Ordering != nil {
			rs.Ordering.BlockedKeys, rs.Ordering.ByReason = c.Total(), c
		}
	}
	delivered, err := s.store.DeliveredSince(ctx, s.now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	pauses, err := s.store.PauseStates(ctx, s.routeNames())
	if err != nil {
		return nil, err
	}
	if err := s.fleetState(ctx, byName); err != nil {
		return nil, err
	}
	for i := range out {
		rs := &out[i]
		rs.DeliveredLastHour = delivered[rs.Name]
		// River's queue row is what the workers obey; route_pauses holds
		// the pause while River's row is gone (its queue cleaner).
		if p := pauses[rs.Name]; p.QueuePausedAt != nil {
			rs.Paused, rs.PausedAt = true, p.QueuePausedAt
		} else if p.RecordedAt != nil {
			rs.Paused, rs.PausedAt = true, p.RecordedAt
		}
	}
	return out, nil
}

// fleetState fills in the routes' circuit breakers and limits from
// Postgres, where the replicas keep them.
func (s *Service) fleetState(ctx context.Context, byName map[string]*RouteStatus) error {
	circuits, err := s.store.Circuits(ctx)
	if err != nil {
		return err
	}
	for route, c := range circuits {
		rs := byName[route]
		if rs == nil {
			continue
		}
		rs.Circuit = outbox.CircuitInfo{State: c.State, Since: &c.Since, ConsecutiveFailures: c.ConsecutiveFailures, LastError: c.LastError}
		if !c.OpenUntil.IsZero() {
			rs.Circuit.OpenUntil = &c.OpenUntil
		}
	}
	leases, err := s.store.FleetLeases(ctx)
	if err != nil {
		return err
	}
	for _, l := range leases {
		rs := byName[l.Route]
		if rs == nil {
			continue
		}
		if rs.Limit.Current == nil {
			rs.Limit.Current = new(0)
		}
		*rs.Limit.Current += l.Slots
		rs.Limit.InFlight += l.InFlight
		rs.Limit.Replicas++
	}
	return nil
}

// Pause stops a route's deliveries on every replica; intake goes on. The
// pause is kept both in River's queue row, which the workers obey, and in
// route_pauses, from which serve restores it should River's queue cleaner
// delete an idle queue's row. It works before the route's queue has ever
// run. In serve (WithLocalWorkers) it returns once this replica's workers
// have stopped fetching, within localPauseWait.
func (s *Service) Pause(ctx context.Context, route string) error {
	return s.setPaused(ctx, route, true)
}

// Resume lets a paused route's deliveries run again, at the route's normal
// concurrency.
func (s *Service) Resume(ctx context.Context, route string) error {
	return s.setPaused(ctx, route, false)
}

func (s *Service) setPaused(ctx context.Context, route string, paused bool) error {
	if _, err := s.checkRoute(route); err != nil {
		return err
	}
	confirm := func() {}
	if paused && s.localWorkers {
		confirm = s.awaitLocalPause(ctx, route)
	}
	err := s.store.SetPaused(ctx, route, paused, func(ctx context.Context, tx pgx.Tx) error {
		// River's pause notifies every replica's workers in the same
		// transaction; those that miss it poll within a minute.
		if paused {
			return s.jobs.QueuePauseTx(ctx, tx, route, &river.QueuePauseOpts{})
		}
		return s.jobs.QueueResumeTx(ctx, tx, route, &river.QueuePauseOpts{})
	})
	if err == nil {
		confirm()
	}
	return err
}

// localPauseWait bounds how long a pause waits for this replica's workers
// to confirm it.
const localPauseWait = 2 * time.Second

// awaitLocalPause prepares to wait for this replica's workers of route to
// stop fetching, and returns the wait, to call once the pause has
// committed. River's workers learn of a pause from a notification a few
// milliseconds after the commit; until then they may still fetch, so
// without the wait a webhook taken right after the pause answered could
// still be delivered from this replica. The other replicas' workers stop
// when their notification arrives. A route already paused is not waited
// for: its workers announce nothing.
func (s *Service) awaitLocalPause(ctx context.Context, route string) func() {
	if q, err := s.jobs.QueueGet(ctx, route); err == nil && q.PausedAt != nil {
		return func() {}
	}
	events, cancel := s.jobs.Subscribe(river.EventKindQueuePaused)
	return func() {
		defer cancel()
		timeout := time.NewTimer(localPauseWait)
		defer timeout.Stop()
		for {
			select {
			case ev := <-events:
				if ev != nil && ev.Queue != nil && ev.Queue.Name == route {
					return
				}
			case <-timeout.C:
				// The pause holds anyway; this replica's workers take it
				// from the notification or their next poll.
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// ReconcilePauses brings River's queue rows and route_pauses into step for
// the configured routes. Where River's row exists, it is the truth (a pause
// or resume from River UI is adopted). Where it is missing (never created,
// or deleted by River's queue cleaner after a day idle) it is created from
// route_pauses, paused if the route was. Serve runs it before starting its
// workers, so a restored pause holds from their first fetch, and then
// periodically.
func (s *Service) ReconcilePauses(ctx context.Context, logger *slog.Logger) error {
	states, err := s.store.PauseStates(ctx, s.routeNames())
	if err != nil {
		return err
	}
	for _, name := range s.routeNames() {
		st := states[name]
		recorded := st.RecordedAt != nil
		switch {
		case !st.QueueExists:
			if recorded {
				logger.Info("restoring the pause of a route whose queue row was missing", "route", name)
			}
			if err := s.store.EnsureQueueRow(ctx, name, st.RecordedAt); err != nil {
				return err
			}
		case st.QueuePausedAt != nil && !recorded:
			logger.Info("route was paused outside webhook-outbox (River UI?); recording the pause", "route", name)
			if err := s.store.RecordPause(ctx, name, true); err != nil {
				return err
			}
		case st.QueuePausedAt == nil && recorded:
			logger.Info("route was resumed outside webhook-outbox (River UI?); recording the resume", "route", name)
			if err := s.store.RecordPause(ctx, name, false); err != nil {
				return err
			}
		}
	}
	return nil
}
