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

// CircuitStateMetric is the name of the circuit breaker's gauge, reserved
// here so that the dashboard and the docs can refer to it before the
// breaker exists.
const CircuitStateMetric = "outbox_circuit_state"

// CircuitState is a route's circuit breaker state as outbox_circuit_state
// reports it. The values rise with severity, so max() across replicas shows
// the worst.
type CircuitState int

// Circuit breaker states.
const (
	CircuitClosed   CircuitState = 0
	CircuitHalfOpen CircuitState = 1
	CircuitOpen     CircuitState = 2
)

// Metrics are the delivery worker's Prometheus metrics. Every label comes
// from the config (route) or from a fixed set (outcome); an event's key
// never becomes a label.
type Metrics struct {
	deliveries *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	attempts   *prometheus.HistogramVec
	lag        *prometheus.HistogramVec
	circuit    *prometheus.GaugeVec
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
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: CircuitStateMetric,
			Help: "Circuit breaker state of a route's target on this replica: 0 closed, 1 half-open, 2 open.",
		}, []string{"route"}),
	}
	reg.MustRegister(m.deliveries, m.duration, m.attempts, m.lag, m.circuit)
	for _, r := range routes {
		for _, o := range outcomes {
			m.deliveries.WithLabelValues(r, o)
		}
	}
	return m
}

// circuitState maps a breaker's state to the gauge's value.
func circuitState(s BreakerState) CircuitState {
	switch s {
	case BreakerOpen:
		return CircuitOpen
	case BreakerHalfOpen:
		return CircuitHalfOpen
	}
	return CircuitClosed
}

// SetCircuitState publishes route's circuit breaker state. It is the hook
// for the breaker: call it on every transition (and once per route at
// start). Until something calls it, outbox_circuit_state has no series,
// rather than claiming a closed circuit that nobody measured.
func (m *Metrics) SetCircuitState(route string, s CircuitState) {
	m.circuit.WithLabelValues(route).Set(float64(s))
}

// ConcurrencyLimitMetric is the name of the gauge of each route's current
// concurrency limit on this replica (adaptive_concurrency): the most
// deliveries it lets be in flight to the route's target right now. With a
// fixed limit it is the route's concurrency. Summed over replicas it is
// what the fleet may send at once (the fleet-wide cap on concurrency still
// applies).
const ConcurrencyLimitMetric = "outbox_delivery_concurrency_limit"

// limitCollector reads each route's concurrency limit when scraped, so the
// gauge is never staler than the scrape (the limit moves every round trip).
type limitCollector struct {
	desc   *prometheus.Desc
	routes []string
	limit  func(route string) (int, bool)
}

// RegisterConcurrencyLimit registers outbox_delivery_concurrency_limit on
// reg. At each scrape it reports limit(route) for every route for which
// limit answers true.
func RegisterConcurrencyLimit(reg prometheus.Registerer, routes []string, limit func(route string) (int, bool)) {
	reg.MustRegister(&limitCollector{
		desc: prometheus.NewDesc(ConcurrencyLimitMetric,
			"Current concurrency limit of a route's deliveries on this replica: adaptive between 1 and the route's concurrency, or the concurrency itself when adaptive_concurrency is false.",
			[]string{"route"}, nil),
		routes: routes,
		limit:  limit,
	})
}

func (c *limitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *limitCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.routes {
		if v, ok := c.limit(r); ok {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), r)
		}
	}
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
