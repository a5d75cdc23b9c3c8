package handler

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// unknownRoute is the route label of requests for a route that is not
// configured. Labels come only from the config, so a scanner probing
// /webhooks/<anything> cannot create new series. A route name cannot start
// with "_", so it never collides with a real route.
const unknownRoute = "_unknown"

// intakeMetrics are intake's Prometheus metrics, labelled by route (from the
// config) and never by anything a sender chooses, such as the key.
type intakeMetrics struct {
	requests *prometheus.CounterVec
	events   *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newIntakeMetrics registers intake's metrics on reg. Each route's accepted
// and duplicate series start at 0, so rate() works from the first scrape.
func newIntakeMetrics(reg prometheus.Registerer, routes []string) *intakeMetrics {
	m := &intakeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_intake_requests_total",
			Help: "Webhook requests answered, by route and HTTP status. Unknown routes count under route=\"_unknown\".",
		}, []string{"route", "status"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_intake_events_total",
			Help: "Webhooks stored (result=\"accepted\") or recognised as already stored (result=\"duplicate\"), by route.",
		}, []string{"route", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "outbox_intake_duration_seconds",
			Help:    "Time from a webhook request's arrival to its answer, including reading the body and the database commit, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.events, m.duration)
	for _, r := range routes {
		m.events.WithLabelValues(r, resultAccepted)
		m.events.WithLabelValues(r, resultDuplicate)
	}
	return m
}

// Values of outbox_intake_events_total's result label.
const (
	resultAccepted  = "accepted"
	resultDuplicate = "duplicate"
)

// routeNames returns the configured routes' names, sorted.
func (in *Intake) routeNames() []string {
	names := make([]string, 0, len(in.routes))
	for name := range in.routes {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// observe wraps the intake handler: it counts every answer by route and
// status, times it, and counts what intake reported through
// noteIntakeResult.
func (m *intakeMetrics) observe(in *Intake) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := mux.Vars(r)["route"]
		if in.routes[route] == nil {
			route = unknownRoute
		}
		note := &intakeNote{}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			status := sw.status
			v := recover()
			if v != nil && status == 0 {
				status = http.StatusServiceUnavailable // what recoverer answers
			}
			m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
			m.requests.WithLabelValues(route, strconv.Itoa(cmp.Or(status, http.StatusOK))).Inc()
			if note.result != "" {
				m.events.WithLabelValues(route, note.result).Inc()
			}
			if v != nil {
				panic(v)
			}
		}()
		in.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), intakeNoteKey{}, note)))
	})
}

// intakeNote is how intake tells the metrics around it what became of a
// webhook, without knowing about metrics.
type intakeNote struct{ result string }

type intakeNoteKey struct{}

// noteIntakeResult records that the request of ctx was accepted or a
// duplicate. It does nothing outside the metrics wrapper.
func noteIntakeResult(ctx context.Context, result string) {
	if n, ok := ctx.Value(intakeNoteKey{}).(*intakeNote); ok {
		n.result = result
	}
}

// statusWriter remembers the status of the answer it passes on.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// connWriter returns the server's own ResponseWriter under w's wrappers.
// http.MaxBytesReader needs it: only the server's writer can learn that a
// body was cut off, and then close the connection rather than read the rest
// of an oversized body to keep it alive.
func connWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// metricsHandler serves reg's metrics, and counts its own scrapes on reg.
func metricsHandler(reg *prometheus.Registry, logger *slog.Logger) http.Handler {
	return promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		Registry: reg,
	}))
}
