package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// OrderingCheckInterval is how often the ordering check runs.
const OrderingCheckInterval = time.Minute

// OrderingCheckArgs are the args of the ordering check job.
type OrderingCheckArgs struct{}

// Kind is the River job kind.
func (OrderingCheckArgs) Kind() string { return "outbox_ordering_check" }

// InsertOpts keeps at most one check waiting or running, in the
// maintenance queue.
func (OrderingCheckArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       MaintenanceQueue,
		MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
			rivertype.JobStateRetryable, rivertype.JobStateScheduled,
		}},
	}
}

// OrderingChecker is the River worker of the ordering safety net (see
// CheckOrdering). River's leader enqueues it every OrderingCheckInterval,
// so one replica runs it at a time.
type OrderingChecker struct {
	river.WorkerDefaults[OrderingCheckArgs]
	store  *store.Store
	logger *slog.Logger
}

// Timeout bounds one check.
func (c *OrderingChecker) Timeout(*river.Job[OrderingCheckArgs]) time.Duration { return time.Minute }

// Work runs the check once.
func (c *OrderingChecker) Work(ctx context.Context, _ *river.Job[OrderingCheckArgs]) error {
	return CheckOrdering(ctx, c.store, c.logger)
}

func orderingCheckPeriodicJob() *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(OrderingCheckInterval),
		func() (river.JobArgs, *river.InsertOpts) { return OrderingCheckArgs{}, nil },
		&river.PeriodicJobOpts{ID: "outbox_ordering_check"})
}

// CheckOrdering runs the ordering safety net (store.CheckOrdering) and
// logs what it repaired. Keys left with waiting events and no head are an
// anomaly the database's triggers should make impossible: they are logged
// as an error, with examples, to be reported.
func CheckOrdering(ctx context.Context, st *store.Store, logger *slog.Logger) error {
	res, err := st.CheckOrdering(ctx)
	if err != nil {
		return err
	}
	if res.Released > 0 {
		logger.Info("released ordering keys held by dead letters of routes that no longer block (on_dead_letter: continue, or no ordering)", "keys", res.Released)
	}
	if len(res.Stranded) > 0 {
		examples := make([]string, 0, 5)
		for _, k := range res.Stranded[:min(5, len(res.Stranded))] {
			examples = append(examples, fmt.Sprintf("%s/%s (%d waiting)", k.Route, k.OrderingKey, k.Waiting))
		}
		logger.Error("anomaly: ordering keys had events waiting and no event being delivered; promoted the next event of each",
			"keys", len(res.Stranded), "promoted", res.Promoted, "examples", examples)
	}
	return nil
}

// SyncOrdering records the config's ordered routes and their
// on_dead_letter in the database, where its triggers read them, and runs
// the check once, which releases the keys a switch from block to continue
// lets go. Serve runs it at start, before its workers.
func SyncOrdering(ctx context.Context, st *store.Store, cfg *config.Config, logger *slog.Logger) error {
	var routes []store.OrderedRoute
	for _, r := range cfg.Routes {
		if r.Ordering != nil {
			routes = append(routes, store.OrderedRoute{Route: r.Name, OnDeadLetter: r.Ordering.OnDeadLetter})
		}
	}
	if err := st.SetOrderedRoutes(ctx, routes); err != nil {
		return err
	}
	return CheckOrdering(ctx, st, logger)
}

// hasOrdering reports whether any route of cfg has ordering.
func hasOrdering(cfg *config.Config) bool {
	for _, r := range cfg.Routes {
		if r.Ordering != nil {
			return true
		}
	}
	return false
}
