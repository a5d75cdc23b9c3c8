package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhook-outbox/webhook-outbox/store"
)

// DefaultStatsInterval is how often each replica refreshes the
// database-wide gauges. Scrapes in between read the last refresh.
const DefaultStatsInterval = 15 * time.Second

// statsTimeout bounds one refresh, so a slow database delays the gauges
// rather than piling up queries.
const statsTimeout = 10 * time.Second

// backlogStates are the River states of a delivery that is not finished.
// Snoozed deliveries are scheduled.
var backlogStates = []string{"available", "pending", "retryable", "running", "scheduled"}

// Stats publishes the database-wide delivery gauges: the backlog and the
// age of the oldest undelivered event per route, and the dead letters per
// route. Run refreshes them on a timer with two cheap queries, and a scrape
// only reads the last result, so scraping costs the database nothing. Every
// replica reports the same database, so aggregate them with max, not sum.
//
// On the same timer it runs this replica's readiness check (what /readyz
// answers) and publishes it as outbox_ready, so that an alert sees a
// replica that is not ready without depending on who probes /readyz.
type Stats struct {
	store  *store.Store
	routes []string
	logger *slog.Logger

	backlog, oldest, dead, refreshed, ready *prometheus.Desc
	errors                                  prometheus.Counter

	mu   sync.Mutex
	last *store.DeliveryStats
	at   time.Time
	// isReady is the last readiness check's result; checked says whether
	// one has run yet.
	isReady, checked bool
}

// NewStats returns Stats over st. Configured routes are always reported,
// at 0 when they have nothing, so that a quiet route is not a missing one.
func NewStats(st *store.Store, routes []string, logger *slog.Logger) *Stats {
	return &Stats{
		store:  st,
		routes: routes,
		logger: logger,
		backlog: prometheus.NewDesc("outbox_backlog_events",
			"Events waiting for delivery (all replicas), by route and River job state: available, pending, retryable (waiting out a backoff), running, scheduled (includes snoozed).",
			[]string{"route", "state"}, nil),
		oldest: prometheus.NewDesc("outbox_oldest_undelivered_age_seconds",
			"Age of the oldest event still waiting for delivery (all replicas), by route; 0 when none waits. As of the last refresh.",
			[]string{"route"}, nil),
		dead: prometheus.NewDesc("outbox_dead_letters",
			"Rows in the dead_letters view (all replicas), by route.",
			[]string{"route"}, nil),
		refreshed: prometheus.NewDesc("outbox_stats_refreshed_timestamp_seconds",
			"Unix time of this replica's last successful refresh of the backlog and dead-letter gauges.",
			nil, nil),
		ready: prometheus.NewDesc("outbox_ready",
			"1 when this replica's last readiness check passed (the database answers and the schema is the one this binary needs: what /readyz answers), else 0. Checked with each refresh.",
			nil, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_stats_refresh_errors_total",
			Help: "Failed refreshes of the backlog and dead-letter gauges on this replica.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (s *Stats) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.backlog
	ch <- s.oldest
	ch <- s.dead
	ch <- s.refreshed
	ch <- s.ready
	s.errors.Describe(ch)
}

// Collect implements prometheus.Collector. Before the first successful
// refresh it reports only the error counter and readiness: no data rather
// than zeros nobody measured.
func (s *Stats) Collect(ch chan<- prometheus.Metric) {
	s.errors.Collect(ch)
	s.mu.Lock()
	last, at, ready, checked := s.last, s.at, s.isReady, s.checked
	s.mu.Unlock()
	if checked {
		v := 0.0
		if ready {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(s.ready, prometheus.GaugeValue, v)
	}
	if last == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(s.refreshed, prometheus.GaugeValue, float64(at.UnixNano())/1e9)

	type key struct{ route, state string }
	backlog := map[key]int64{}
	oldest := map[string]float64{}
	dead := map[string]int64{}
	for _, r := range s.routes {
		for _, st := range backlogStates {
			backlog[key{r, st}] = 0
		}
		oldest[r] = 0
		dead[r] = 0
	}
	for _, b := range last.Backlog {
		backlog[key{b.Route, b.State}] += b.Jobs
		oldest[b.Route] = max(oldest[b.Route], b.OldestAge)
	}
	for r, n := range last.DeadLetters {
		dead[r] = n
		if _, ok := oldest[r]; !ok {
			oldest[r] = 0
		}
	}
	for k, n := range backlog {
		ch <- prometheus.MustNewConstMetric(s.backlog, prometheus.GaugeValue, float64(n), k.route, k.state)
	}
	for r, age := range oldest {
		ch <- prometheus.MustNewConstMetric(s.oldest, prometheus.GaugeValue, age, r)
	}
	for r, n := range dead {
		ch <- prometheus.MustNewConstMetric(s.dead, prometheus.GaugeValue, float64(n), r)
	}
}

// Refresh checks readiness and reads the stats from the database now.
func (s *Stats) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	ready := s.store.Ready(ctx) == nil
	s.mu.Lock()
	s.isReady, s.checked = ready, true
	s.mu.Unlock()
	st, err := s.store.DeliveryStats(ctx)
	if err != nil {
		s.errors.Inc()
		return err
	}
	s.mu.Lock()
	s.last, s.at = st, time.Now()
	s.mu.Unlock()
	return nil
}

// Run refreshes the stats at once and then every interval, until ctx ends.
// A failed refresh is logged and leaves the last values in place; the
// refresh timestamp shows how old they are.
func (s *Stats) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Refresh(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("cannot refresh the backlog and dead-letter metrics", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
