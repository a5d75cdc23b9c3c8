package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel/trace"

	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/handler"
	"github.com/webhook-outbox/webhook-outbox/handler/console"
	"github.com/webhook-outbox/webhook-outbox/internal/logging"
	"github.com/webhook-outbox/webhook-outbox/internal/tracing"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/migrations"
	"github.com/webhook-outbox/webhook-outbox/store"
)

func runServe(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, configPath := newFlagSet("serve", stderr)
	migrate := fs.Bool("migrate", false, "apply pending migrations before serving, instead of refusing to start")
	logFormat := fs.String("log-format", "json", "log format: json or text")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("serve takes no arguments, got %q", rest)
	}
	cfg, err := loadServable(*configPath)
	if err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	// River logs routine progress at info; only its warnings and errors
	// reach outbox's log unless log_level is debug.
	riverLevel := "warn"
	if cfg.LogLevel == "debug" {
		riverLevel = "debug"
	}
	riverLogger, _ := newLogger(stderr, *logFormat, riverLevel)
	knobs, err := readTestKnobs(os.Getenv)
	if err != nil {
		return err
	}
	stopDebug, err := startDebugServer(logger)
	if err != nil {
		return err
	}
	defer stopDebug()
	m := &Main{Config: cfg, Logger: logger, RiverLogger: riverLogger.With("component", "river"), Migrate: *migrate, testKnobs: knobs}
	if err := m.Run(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.D().String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	return m.Close(shutdownCtx)
}

// loadServable loads the config that serve would serve, or config check
// would approve: DemoTokens are refused unless OUTBOX_ALLOW_DEMO_TOKENS=1.
func loadServable(configPath string) (*config.Config, error) {
	path := config.Path(configPath)
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if os.Getenv(config.AllowDemoTokensEnv) != "1" {
		if err := cfg.RefuseDemoTokens(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return cfg, nil
}

// newLogger returns the process's logger: JSON or text on w, at level,
// with With's attributes formatted only for lines written (logging.Lazy).
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "json":
		return slog.New(logging.Lazy(slog.NewJSONHandler(w, opts))), nil
	case "text":
		return slog.New(logging.Lazy(slog.NewTextHandler(w, opts))), nil
	}
	return nil, usagef("--log-format must be json or text, not %q", format)
}

// Main is the wired service: the database pool, the River client that runs
// deliveries, and the HTTP server. End-to-end tests run the same Main on
// port :0.
type Main struct {
	Config *config.Config
	Logger *slog.Logger
	// RiverLogger receives River's own logs; Logger when nil.
	RiverLogger *slog.Logger
	Migrate     bool
	// StatsInterval is how often the backlog and dead-letter gauges are
	// refreshed from the database; jobs.DefaultStatsInterval when 0.
	StatsInterval time.Duration
	// TracerProvider records intake and delivery spans. When nil, Run
	// builds one from the environment: exporting over OTLP when
	// OTEL_EXPORTER_OTLP_ENDPOINT is set, recording nothing otherwise.
	TracerProvider trace.TracerProvider

	stopStats func()
	registry  *prometheus.Registry // what /metrics serves
	pool      *pgxpool.Pool
	river     *river.Client[pgx.Tx]
	server    *http.Server
	listener  net.Listener
	ops       *opsServer // /metrics on metrics_listen; nil without it
	served    chan error
	stopUI    context.CancelFunc
	batcher   *store.Batcher
	completer *store.Completer
	// limits are the routes' fleet-wide limits and circuit breakers;
	// started before River, stopped after it.
	fleetLimits *jobs.Limits
	// stopPauses stops the periodic pause reconciliation.
	stopPauses func()
	// limits replaces defaultHTTPLimits when set (tests shorten them).
	limits *httpLimits
	// testKnobs are the fault suite's settings from the environment.
	testKnobs testKnobs
	// flushTraces sends the spans still buffered; nil without an exporter.
	flushTraces func(context.Context) error
}

// pauseReconcileInterval is how often serve checks that River's queue rows
// still carry the routes' pauses (see store.Admin.ReconcilePauses).
const pauseReconcileInterval = time.Minute

// Run connects, checks or migrates the schema, starts the workers, and
// starts serving HTTP. It returns once the service is up.
func (m *Main) Run(ctx context.Context) (err error) {
	cfg, logger := m.Config, m.Logger
	defer func() {
		if err != nil {
			if m.listener != nil {
				m.listener.Close()
			}
			if m.ops != nil {
				_ = m.ops.close(context.Background())
			}
			if m.batcher != nil {
				m.batcher.Close()
			}
			m.closeResources()
		}
	}()
	if m.Migrate {
		if err := migrateUp(ctx, cfg.DatabaseURL, logger); err != nil {
			return err
		}
	}
	m.pool, err = store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	st := store.New(m.pool)
	st.PartitionInterval = cfg.EventPartitionInterval.D()
	if iv := m.testKnobs.PartitionInterval; iv > 0 {
		logger.Warn("test-only knob set: events partitions of "+iv.String()+"; never use it outside tests", "env", envTestPartitionInterval)
		st.PartitionInterval = iv
	}
	if iv := m.testKnobs.MaintenanceInterval; iv > 0 {
		logger.Warn("test-only knob set: retention runs every "+iv.String()+"; never use it outside tests", "env", envTestMaintenanceInterval)
	}
	if err := st.CheckSchema(ctx); err != nil {
		return err
	}
	// The maintenance job keeps partitions days ahead; this covers a first
	// start, or one after maintenance has been stopped for long.
	// Busy means another replica's maintenance is doing DDL right now; it
	// or this replica's maintenance creates them, and intake on demand.
	if err := st.EnsurePartitions(ctx, time.Now().Add(-st.PartitionInterval), st.PartitionHorizon(time.Now())); errors.Is(err, store.ErrPartitionsBusy) {
		logger.Warn("events partitions not created at startup; maintenance will create them", "error", err)
	} else if err != nil {
		return err
	}
	riverLogger := m.RiverLogger
	if riverLogger == nil {
		riverLogger = logger
	}
	routes := make([]string, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		routes = append(routes, r.Name)
	}
	if m.TracerProvider == nil && tracing.Enabled(os.Getenv) {
		m.TracerProvider, m.flushTraces, err = tracing.NewProvider(ctx, os.Getenv, buildVersion())
		if err != nil {
			return err
		}
		logger.Info("exporting traces over OTLP")
	}
	registry := newRegistry()
	m.registry = registry
	metrics := jobs.NewMetrics(registry, routes)
	m.completer = jobs.NewCompleter(st, m.testKnobs.CompleterWorkers)
	m.fleetLimits = jobs.NewLimits(st, cfg, logger.With("component", "delivery"))
	jobs.RegisterLimits(registry, routes, m.fleetLimits)
	pressure := &store.IntakePressure{}
	m.river, err = jobs.NewClient(m.pool, st, cfg, jobs.ClientOptions{
		Logger:      logger.With("component", "delivery"),
		RiverLogger: riverLogger,
		Metrics:     metrics,
		Completer:   m.completer,
		Limits:      m.fleetLimits,
		// 0 unless the fault suite set it.
		MaintenanceInterval: m.testKnobs.MaintenanceInterval,
		// During a burst, intake comes first; deliveries catch up after.
		IntakePressure: pressure,
		TracerProvider: m.TracerProvider,
	})
	if err != nil {
		return err
	}
	// Group commit: concurrent webhooks share transactions.
	m.batcher = store.NewBatcher(store.NewIntake(st, m.river), store.BatcherOptions{
		Timeout: cfg.IntakeTimeout.D(), Workers: m.testKnobs.IntakeBatchWorkers, Pressure: pressure,
	})
	intake, err := handler.NewIntake(cfg, m.batcher, logger.With("component", "intake"))
	if err != nil {
		return err
	}
	if m.TracerProvider != nil {
		intake.SetTracerProvider(m.TracerProvider)
	}
	ops := admin.New(st, m.river, cfg).WithLocalWorkers()
	// Restore pauses before the workers start, so that a paused route's
	// queue is paused from its first fetch.
	if err := ops.ReconcilePauses(ctx, logger); err != nil {
		return err
	}
	// The ordered routes' on_dead_letter, as the database's triggers read
	// it; a switch from block to continue releases blocked keys now.
	if err := jobs.SyncOrdering(ctx, st, cfg, logger.With("component", "ordering")); err != nil {
		return err
	}
	// A body deadline must never outlast the server's own read timeout.
	intake.LimitBodyTimeout(m.httpLimits().read)
	routerOpts := handler.RouterOptions{Intake: intake, Readiness: st, Logger: logger, Registry: registry, TrustedProxies: cfg.TrustedProxyPrefixes(),
		MetricsElsewhere: cfg.MetricsListen != ""}
	if !cfg.DisableAdmin {
		ui, err := handler.NewRiverUI(m.river, riverLogger)
		if err != nil {
			return err
		}
		uiCtx, stopUI := context.WithCancel(context.WithoutCancel(ctx))
		if err := ui.Start(uiCtx); err != nil {
			stopUI()
			return fmt.Errorf("error starting River UI: %w", err)
		}
		m.stopUI = stopUI
		routerOpts.Admin, routerOpts.AdminToken, routerOpts.RiverUI = ops, cfg.AdminToken, ui
		trusted := cfg.TrustedProxyPrefixes()
		routerOpts.Console, err = console.New(console.Options{
			Operator: ops, Reader: st, Config: cfg, AdminToken: cfg.AdminToken,
			Logger:     logger.With("component", "console"),
			ClientAddr: func(r *http.Request) string { return handler.ClientAddr(r, trusted).String() },
			RiverUI:    handler.RiverUIPrefix,
		})
		if err != nil {
			return err
		}
	}
	server, err := m.newHTTPServer(handler.NewRouter(routerOpts))
	if err != nil {
		return err
	}
	stats := jobs.NewStats(st, routes, logger.With("component", "stats"))
	var ordered []string
	for _, r := range cfg.Routes {
		if r.Ordering != nil {
			ordered = append(ordered, r.Name)
		}
	}
	stats.SetOrderedRoutes(ordered)
	registry.MustRegister(stats)

	m.listener, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	if cfg.MetricsListen != "" {
		if m.ops, err = m.startOpsServer(cfg.MetricsListen, handler.NewOpsRouter(registry, st, logger)); err != nil {
			return err
		}
	}
	// Deliveries get their own context: a shutdown stops them through
	// river.Stop, after intake has drained, not by cancelling ctx.
	// The fleet limits first: until this replica holds a lease on a
	// route, it sends the route nothing.
	m.fleetLimits.Start(ctx)
	if err := m.river.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("error starting River: %w", err)
	}
	m.server = server
	m.served = make(chan error, 1)
	go func() { m.served <- m.serve() }()
	m.stopStats = runInBackground(ctx, func(ctx context.Context) {
		stats.Run(ctx, cmp.Or(m.StatsInterval, jobs.DefaultStatsInterval))
	})
	m.stopPauses = runInBackground(ctx, func(ctx context.Context) {
		ticker := time.NewTicker(pauseReconcileInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				if err := ops.ReconcilePauses(ctx, logger); err != nil && ctx.Err() == nil {
					logger.Warn("cannot reconcile route pauses; will try again", "error", err)
				}
			}
		}
	})
	logger.Info("outbox is serving", "addr", m.listener.Addr().String(), "tls", cfg.TLS != nil, "routes", routes, "schema_version", migrations.Latest)
	for _, w := range cfg.Warnings() {
		logger.Warn(w)
	}
	return nil
}

// newRegistry returns the registry /metrics serves, with Go runtime,
// process and build metrics. Each Main has its own, never the global
// default, so tests can run several in one process.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return reg
}

// runInBackground runs f in a goroutine until the returned stop is called;
// stop cancels f's context and waits for f to return.
func runInBackground(ctx context.Context, f func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Addr is the address the HTTP server listens on.
func (m *Main) Addr() string { return m.listener.Addr().String() }

// MetricsAddr is the address of the metrics_listen server, "" without one.
func (m *Main) MetricsAddr() string {
	if m.ops == nil {
		return ""
	}
	return m.ops.listener.Addr().String()
}

// Close shuts down gracefully within ctx: it stops accepting requests and
// lets in-flight ones finish, then lets running deliveries finish, and
// cancels those still running when ctx ends. A cancelled delivery is retried
// later, by this or another replica.
func (m *Main) Close(ctx context.Context) error {
	var errs []error
	if m.stopPauses != nil {
		m.stopPauses()
	}
	if m.server != nil {
		if err := m.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("error draining HTTP requests: %w", err))
		}
		if err := <-m.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("HTTP server failed: %w", err))
		}
	}
	if m.ops != nil {
		if err := m.ops.close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if m.batcher != nil {
		m.batcher.Close()
	}
	if m.stopUI != nil {
		m.stopUI()
	}
	if m.river != nil {
		if err := m.river.Stop(ctx); err != nil {
			m.Logger.Warn("deliveries still running at the shutdown deadline; cancelling them", "error", err)
			cancelCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := m.river.StopAndCancel(cancelCtx); err != nil {
				errs = append(errs, fmt.Errorf("error stopping deliveries: %w", err))
			}
			cancel()
		}
	}
	m.closeResources()
	if len(errs) == 0 {
		m.Logger.Info("shut down cleanly")
	}
	return errors.Join(errs...)
}

func (m *Main) closeResources() {
	if m.stopStats != nil {
		m.stopStats()
	}
	// After River has stopped: its last deliveries held their places
	// until they recorded. The shares go back to the other replicas now
	// rather than when the leases expire.
	if m.fleetLimits != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := m.fleetLimits.Stop(ctx); err != nil {
			m.Logger.Warn("cannot give the fleet leases back; they expire on their own", "error", err)
		}
		cancel()
	}
	// After River has stopped: its last deliveries record through it.
	if m.completer != nil {
		m.completer.Close()
	}
	if m.flushTraces != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := m.flushTraces(ctx); err != nil {
			m.Logger.Warn("cannot send the last spans", "error", err)
		}
		cancel()
	}
	if m.pool != nil {
		m.pool.Close()
	}
}

// buildVersion is the binary's module version, for the traces' resource.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
