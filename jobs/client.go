package jobs

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// River tuning. River's defaults (100 ms fetch cooldown, 1 s poll interval)
// cap a queue at about MaxWorkers × 10 jobs/s and make short backoffs late by
// up to a second; these keep a 2 s backoff within its ±10% jitter while an
// idle replica polls each queue only a few times a second.
const (
	FetchCooldown     = 20 * time.Millisecond
	FetchPollInterval = 200 * time.Millisecond
	// rescueMargin is added to the longest target timeout to decide that a
	// running job's replica died. River's rescuer runs every 30 s, so a
	// killed replica's deliveries resume within about a minute plus that
	// timeout.
	rescueMargin = 30 * time.Second
	// rescueSafety is how long before the rescuer could take it a delivery
	// job gives up its run (Deliverer.Timeout): River's leader and this
	// replica read different clocks.
	rescueSafety = 10 * time.Second
)

// RescueAfter is River's RescueStuckJobsAfter for cfg: the longest target
// timeout plus rescueMargin. A running job older than this is taken to be a
// crashed replica's, and is run again.
func RescueAfter(cfg *config.Config) time.Duration {
	return cfg.MaxTargetTimeout() + rescueMargin
}

// ClientOptions are what the River client needs besides the config.
type ClientOptions struct {
	Logger *slog.Logger
	// RiverLogger receives River's own logs; River is chatty at info.
	RiverLogger *slog.Logger
	// Metrics records every delivery attempt. Nil records to a private,
	// unserved registry.
	Metrics *Metrics
	// IntakePressure, when set, makes deliveries give way to intake during
	// bursts; intake's Batcher marks it.
	IntakePressure *store.IntakePressure
	// Completer records successful deliveries (NewCompleter). Required:
	// its owner closes it after River has stopped, since the last
	// deliveries record through it.
	Completer *store.Completer
	// Limits are the routes' fleet-wide limits and circuit breakers
	// (NewLimits with the same config). Required: its owner starts it
	// before River and stops it after, since deliveries hold their places
	// until they have recorded.
	Limits *Limits
	// TracerProvider, when set, records a span for every delivery attempt
	// and River's own work spans (otelriver); otherwise nothing is
	// recorded, though the trace context still reaches the target.
	TracerProvider trace.TracerProvider
	// MaintenanceInterval is how often retention runs; MaintenanceInterval
	// when 0. Only the fault suite changes it (OUTBOX_TEST_MAINTENANCE_INTERVAL).
	MaintenanceInterval time.Duration

	// jobTimeout, when set and positive, replaces a delivery's own
	// timeout; tests set it (export_test.go) to stage a job that times out.
	jobTimeout func(*river.Job[outbox.DeliverArgs]) time.Duration
}

// NewClient returns the River client that runs deliveries: one queue per
// route, named after it, with WorkersPerSlot workers per unit of the
// route's concurrency, and dead letters kept for dead_letter_retention.
func NewClient(pool *pgxpool.Pool, st *store.Store, cfg *config.Config, opts ClientOptions) (*river.Client[pgx.Tx], error) {
	if opts.Completer == nil || opts.Limits == nil {
		return nil, errors.New("jobs.NewClient needs ClientOptions.Completer and ClientOptions.Limits: their owner closes them after River stops")
	}
	deliverer, err := NewDeliverer(st, cfg, opts.Limits, opts.Logger)
	if err != nil {
		return nil, err
	}
	if opts.TracerProvider != nil {
		deliverer.tracer = opts.TracerProvider.Tracer(tracing.InstrumentationName)
	}
	deliverer.pressure = opts.IntakePressure
	deliverer.jobTimeout = opts.jobTimeout
	deliverer.completer = opts.Completer
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, deliverer); err != nil {
		return nil, fmt.Errorf("error registering delivery worker: %w", err)
	}
	policy := store.RetentionPolicy{EventRetention: cfg.EventRetention.D()}
	if !cfg.DeadLetterRetention.Forever() {
		policy.DeadLetterRetention = cfg.DeadLetterRetention.D()
	}
	if err := river.AddWorkerSafely(workers, &Maintainer{store: st, policy: policy, logger: opts.Logger.With("component", "retention")}); err != nil {
		return nil, fmt.Errorf("error registering maintenance worker: %w", err)
	}
	// The check's worker is always there, for a check enqueued before
	// ordering was removed from the config; it is enqueued only with it.
	if err := river.AddWorkerSafely(workers, &OrderingChecker{store: st, logger: opts.Logger.With("component", "ordering")}); err != nil {
		return nil, fmt.Errorf("error registering ordering check worker: %w", err)
	}
	periodic := []*river.PeriodicJob{maintenancePeriodicJob(cmp.Or(opts.MaintenanceInterval, MaintenanceInterval))}
	if hasOrdering(cfg) {
		periodic = append(periodic, orderingCheckPeriodicJob())
	}
	queues := make(map[string]river.QueueConfig, len(cfg.Routes)+1)
	for _, r := range cfg.Routes {
		queues[r.Name] = river.QueueConfig{MaxWorkers: r.Concurrency * WorkersPerSlot}
	}
	queues[MaintenanceQueue] = river.QueueConfig{MaxWorkers: 1}
	metrics := opts.Metrics
	if metrics == nil {
		metrics = NewMetrics(prometheus.NewRegistry(), nil)
	}
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger:            opts.RiverLogger,
		Queues:            queues,
		Workers:           workers,
		Middleware:        middleware(metrics, opts.TracerProvider),
		FetchCooldown:     FetchCooldown,
		FetchPollInterval: FetchPollInterval,
		// Every delivery sets its own timeout (Deliverer.Timeout).
		JobTimeout:           -1,
		RescueStuckJobsAfter: RescueAfter(cfg),
		// A dead letter is a discarded (attempts exhausted) or cancelled
		// (permanent failure) job. River's defaults delete them after 7
		// days and 1 day, leaving their events behind. River keeps them
		// forever here; the maintenance job expires each dead letter with
		// its event at dead_letter_retention, so neither outlives the other.
		DiscardedJobRetentionPeriod: -1,
		CancelledJobRetentionPeriod: -1,
		// Completed jobs go after completed_job_retention; delivered events
		// stay until event_retention, recorded by events.delivered_at.
		CompletedJobRetentionPeriod: cfg.CompletedJobRetention.D(),
		PeriodicJobs:                periodic,
	})
	if err != nil {
		return nil, fmt.Errorf("error creating River client: %w", err)
	}
	return client, nil
}

// CompleterWorkers is how many commits record successful deliveries at
// once (NewCompleter). Concurrent commits update neighbouring river_job
// index entries and wait on each other: CompleteRunningJobs took 65 µs a
// row with one committer, 120-133 with two, 208 with four, and side by
// side one committer drained a median 2,405 deliveries/s against 1,869
// with two (bench/README.md, "What made it fast").
const CompleterWorkers = 1

// NewCompleter returns the group commit for successful deliveries, with
// the settings serve uses: workers commits at once (CompleterWorkers when
// 0), batches of up to 512.
func NewCompleter(st *store.Store, workers int) *store.Completer {
	return store.NewCompleter(st, cmp.Or(workers, CompleterWorkers), 512, 10*time.Second)
}

// NewInsertOnlyClient returns a River client that enqueues and manages jobs
// but works none, for the CLI.
func NewInsertOnlyClient(pool *pgxpool.Pool, logger *slog.Logger) (*river.Client[pgx.Tx], error) {
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("error creating River client: %w", err)
	}
	return client, nil
}

// middleware is River's middleware: delivery metrics, and with a tracer
// provider River's own spans (otelriver). Its trace propagation stays off:
// it would overwrite the intake request's context in the job's metadata
// with that of the batch insert's span, which belongs to no request; the
// delivery span carries the request's trace instead. Its OpenTelemetry
// metrics are not collected: /metrics has its own.
func middleware(m *Metrics, tp trace.TracerProvider) []rivertype.Middleware {
	mw := []rivertype.Middleware{m.middleware()}
	if tp != nil {
		mw = append(mw, otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			TracerProvider: tp, MeterProvider: metricnoop.NewMeterProvider(),
		}))
	}
	return mw
}
