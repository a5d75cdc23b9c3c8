package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// Outcomes of a delivery attempt, as the outcome label of
// outbox_deliveries_total. They say what became of the job: the first four
// are the Verdicts; discarded is a retryable failure on the last attempt,
// which River discards into the dead letters; interrupted is an attempt cut
// short by a shutdown, which River puts back without using an attempt.
const (
	OutcomeDelivered   = "delivered"
	OutcomeRetry       = "retry"
	OutcomeSnoozed     = "snoozed"
	OutcomeCancelled   = "cancelled"
	OutcomeDiscarded   = "discarded"
	OutcomeInterrupted = "interrupted"
)

var outcomes = []string{OutcomeDelivered, OutcomeRetry, OutcomeSnoozed, OutcomeCancelled, OutcomeDiscarded, OutcomeInterrupted}

// CircuitStateMetric is the name of the circuit breaker's gauge, which the
// dashboard and the docs refer to.
const CircuitStateMetric = "outbox_circuit_state"

// circuitValue is a circuit breaker state as outbox_circuit_state reports
// it. The values rise with severity, so max() across replicas shows the
// worst (they agree within a second: the breaker is the fleet's).
func circuitValue(s outbox.CircuitState) float64 {
	switch s {
	case outbox.CircuitOpen:
		return 2
	case outbox.CircuitHalfOpen:
		return 1
	}
	return 0
}

// Metrics are the delivery worker's Prometheus metrics. Every label comes
// from the config (route) or from a fixed set (outcome); an event's key
// never becomes a label.
type Metrics struct {
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	attempts   *prometheus.HistogramVec
	lag        *prometheus.HistogramVec
}

// NewMetrics registers the delivery metrics on reg. Each route's outcome
// series start at 0, so rate() and increase() work from the first scrape.
func NewMetrics(reg prometheus.Registerer, routes []string) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_deliveries_total",
			Help: "Delivery attempts by route and outcome: delivered, retry, snoozed, cancelled, discarded, interrupted.",
		}, []string{"route", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outbox_delivery_duration_seconds",
			Help:    "Time one delivery attempt took, mostly waiting for the target's answer, by route.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outbox_delivery_attempts",
			Help:    "Attempts each delivered event needed, by route; snoozes do not count.",
			Buckets: []float64{1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50},
		}, []string{"route"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outbox_delivery_lag_seconds",
			Help:    "Time from a delivery job's creation (intake, or a replay) to its successful delivery, by route.",
			Buckets: []float64{.01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 72 * 3600},
		}, []string{"route"}),
	}
	reg.MustRegister(m.deliveries, m.duration, m.attempts, m.lag)
	for _, r := range routes {
		for _, o := range outcomes {
			m.deliveries.WithLabelValues(r, o)
		}
	}
	return m
}

// ConcurrencyLimitMetric is the name of the gauge of each route's current
// concurrency limit on this replica (adaptive_concurrency): the most
// deliveries it lets be in flight to the route's target right now, its
// adaptive limit capped by its share of the route's fleet-wide
// concurrency. Summed over replicas it is what the fleet may send at once,
// never more than the route's concurrency.
const ConcurrencyLimitMetric = "outbox_delivery_concurrency_limit"

// gaugeCollector reads one gauge per route when scraped, so that it is
// never staler than the scrape (a limit moves every round trip, a circuit
// when any replica moves it).
type gaugeCollector struct {
	desc   *prometheus.Desc
	routes []string
	value  func(route string) (float64, bool)
}

func (c *gaugeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.routes {
		if v, ok := c.value(r); ok {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, r)
		}
	}
}

// RegisterConcurrencyLimit registers outbox_delivery_concurrency_limit on
// reg. At each scrape it reports limit(route) for every route for which
// limit answers true.
func RegisterConcurrencyLimit(reg prometheus.Registerer, routes []string, limit func(route string) (int, bool)) {
	reg.MustRegister(&gaugeCollector{
		desc: prometheus.NewDesc(ConcurrencyLimitMetric,
			"Current concurrency limit of a route's deliveries on this replica: its adaptive limit (or the route's concurrency when adaptive_concurrency is false), capped by its share of the route's fleet-wide concurrency.",
			[]string{"route"}, nil),
		routes: routes,
		value: func(route string) (float64, bool) {
			v, ok := limit(route)
			return float64(v), ok
		},
	})
}

// RegisterCircuitState registers outbox_circuit_state on reg. At each
// scrape it reports state(route), the fleet's circuit breaker as this
// replica last read it, for every route for which state answers true.
func RegisterCircuitState(reg prometheus.Registerer, routes []string, state func(route string) (outbox.CircuitState, bool)) {
	reg.MustRegister(&gaugeCollector{
		desc: prometheus.NewDesc(CircuitStateMetric,
			"State of the circuit breaker a route's target has for the whole fleet, as this replica last read it: 0 closed, 1 half-open, 2 open.",
			[]string{"route"}, nil),
		routes: routes,
		value: func(route string) (float64, bool) {
			s, ok := state(route)
			return circuitValue(s), ok
		},
	})
}

// RegisterLimits registers the gauges that limits answer for:
// outbox_delivery_concurrency_limit and outbox_circuit_state.
func RegisterLimits(reg prometheus.Registerer, routes []string, limits *Limits) {
	RegisterConcurrencyLimit(reg, routes, limits.Limit)
	RegisterCircuitState(reg, routes, limits.CircuitState)
}

// middleware returns River worker middleware that records each delivery
// attempt's outcome and duration. It sees exactly what the worker returned,
// so the counts follow River's own rules without touching the worker.
func (m *Metrics) middleware() rivertype.WorkerMiddleware {
	return river.WorkerMiddlewareFunc(func(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) (err error) {
		if job.Kind != outbox.DeliverKind {
			return doInner(ctx)
		}
		start := time.Now()
		defer func() {
			v := recover()
			outcome := outcomeOf(ctx, job, err)
			if v != nil {
				// River records a panic as a failed attempt.
				outcome = outcomeOf(ctx, job, errors.New("panic"))
			}
			m.record(routeOf(job), outcome, job, time.Since(start))
			if v != nil {
				panic(v)
			}
		}()
		return doInner(ctx)
	})
}

func (m *Metrics) record(route, outcome string, job *rivertype.JobRow, took time.Duration) {
	m.deliveries.WithLabelValues(route, outcome).Inc()
	m.duration.WithLabelValues(route).Observe(took.Seconds())
	if outcome == OutcomeDelivered {
		m.attempts.WithLabelValues(route).Observe(float64(job.Attempt))
		m.lag.WithLabelValues(route).Observe(time.Since(job.CreatedAt).Seconds())
	}
}

// outcomeOf mirrors what River's job executor does with a worker's result.
func outcomeOf(ctx context.Context, job *rivertype.JobRow, err error) string {
	var snooze *rivertype.JobSnoozeError
	var cancel *rivertype.JobCancelError
	switch {
	case err == nil:
		return OutcomeDelivered
	case errors.As(err, &snooze):
		return OutcomeSnoozed
	case errors.As(err, &cancel):
		return OutcomeCancelled
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		if errors.Is(context.Cause(ctx), rivertype.ErrJobCancelledRemotely) {
			return OutcomeCancelled
		}
		return OutcomeInterrupted
	case job.Attempt >= job.MaxAttempts:
		return OutcomeDiscarded
	}
	return OutcomeRetry
}

// routeOf reads the route from a delivery job's args. Routes are config
// names, so the label's values stay few.
func routeOf(job *rivertype.JobRow) string {
	var args struct {
		Route string `json:"route"`
	}
	if json.Unmarshal(job.EncodedArgs, &args) != nil || args.Route == "" {
		return job.Queue
	}
	return args.Route
}
