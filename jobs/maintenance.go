package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/webhook-outbox/webhook-outbox/store"
)

// MaintenanceQueue runs webhook-outbox's own maintenance. Route names cannot
// hold "_", so no route's queue can take this name.
const MaintenanceQueue = "outbox_maintenance"

// MaintenanceInterval is how often retention runs.
const MaintenanceInterval = 10 * time.Minute

// MaintenanceArgs are the args of the retention job.
type MaintenanceArgs struct{}

// Kind is the River job kind.
func (MaintenanceArgs) Kind() string { return "outbox_maintenance" }

// InsertOpts keeps at most one maintenance job waiting or running, however
// many replicas there are and however long a run takes.
func (MaintenanceArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       MaintenanceQueue,
		MaxAttempts: 3,
		UniqueOpts: river.UniqueOpts{ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
			rivertype.JobStateRetryable, rivertype.JobStateScheduled,
		}},
	}
}

// Maintainer is the River worker that enforces retention (store.Maintain).
// River's leader enqueues it periodically, and at most one job waits or runs.
// That alone does not make runs exclusive: River's rescuer gives a job that
// runs longer than RescueStuckJobsAfter (the longest target timeout plus
// 30 s) to another replica while it still runs. store.Maintain therefore
// takes an advisory lock for its whole run, and a second run finds it held
// and completes at once without doing anything.
type Maintainer struct {
	river.WorkerDefaults[MaintenanceArgs]
	store  *store.Store
	policy store.RetentionPolicy
	logger *slog.Logger
}

// Timeout allows a long first run after an upgrade or an outage. A run
// cut off by it loses nothing: the next one finishes what it left.
func (m *Maintainer) Timeout(*river.Job[MaintenanceArgs]) time.Duration { return time.Hour }

// Work runs retention once.
func (m *Maintainer) Work(ctx context.Context, _ *river.Job[MaintenanceArgs]) error {
	_, err := m.store.Maintain(ctx, m.policy, m.logger)
	return err
}

func maintenancePeriodicJob(interval time.Duration) *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return MaintenanceArgs{}, nil },
		&river.PeriodicJobOpts{ID: "outbox_maintenance", RunOnStart: true})
}
