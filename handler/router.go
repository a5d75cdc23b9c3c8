// Package handler is webhook-outbox's HTTP surface: webhook intake, health,
// and metrics, on a gorilla/mux router.
package handler

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

// Readiness reports whether the service can take traffic.
type Readiness interface {
	Ready(ctx context.Context) error
}

// RouterOptions are the router's dependencies.
type RouterOptions struct {
	Intake    *Intake
	Readiness Readiness
	Logger    *slog.Logger
	// Admin serves /admin/v1 behind AdminToken; nil turns the admin API
	// off.
	Admin      *admin.Service
	AdminToken string
	// RiverUI is served at /riverui/ behind AdminToken; nil turns it off.
	RiverUI http.Handler
	// Console is the operator console (handler/console), served at
	// /console/ behind AdminToken, like River UI; nil turns it off.
	Console http.Handler
	// MetricsElsewhere leaves /metrics off this router, for when
	// NewOpsRouter serves it on a listener of its own (metrics_listen).
	MetricsElsewhere bool
	// Registry is where the router registers intake's metrics, and what
	// /metrics serves. Nil gives the router a private one.
	Registry *prometheus.Registry
	// AdminFailures slows down failed admin authentications per client
	// address; the zero value uses the defaults.
	AdminFailures FailureLimit
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client's address.
	TrustedProxies []netip.Prefix
}

// ConsolePrefix is where the operator console is mounted.
const ConsolePrefix = "/console"

// NewRouter returns the HTTP handler for the whole service.
func NewRouter(opts RouterOptions) http.Handler {
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	// SkipClean: paths such as /webhooks/. or //webhooks/x get a JSON 404,
	// not mux's bare 301 to a cleaned path (which a client would follow
	// with a GET).
	r := mux.NewRouter().SkipClean(true)
	r.Handle("/webhooks/{route}", newIntakeMetrics(reg, opts.Intake.routeNames()).observe(opts.Intake)).Methods(http.MethodPost)
	ready := newCachedReadiness(opts.Readiness)
	r.HandleFunc("/healthz", healthz).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", readyz(ready, opts.Logger)).Methods(http.MethodGet, http.MethodHead)
	if !opts.MetricsElsewhere {
		r.Handle("/metrics", metricsHandler(reg, opts.Logger)).Methods(http.MethodGet)
	}
	guard := newAdminGuard(opts)
	protect := newOperatorProtection()
	if opts.Admin != nil {
		api := &adminAPI{admin: opts.Admin, logger: opts.Logger, now: time.Now}
		r.PathPrefix("/admin/").Handler(protect.wrap(guard.wrap(adminRouter(api), false)))
	}
	for prefix, ui := range map[string]http.Handler{RiverUIPrefix: opts.RiverUI, ConsolePrefix: opts.Console} {
		if ui == nil {
			continue
		}
		r.Handle(prefix, http.RedirectHandler(prefix+"/", http.StatusMovedPermanently))
		r.PathPrefix(prefix + "/").Handler(protect.wrap(guard.wrap(ui, true)))
	}
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, methodNotAllowed
	return withRequestID(recoverer(opts.Logger, r))
}

// NewOpsRouter serves /metrics (from reg), /healthz and /readyz, for a
// listener of their own (metrics_listen), so that they can stay on an
// internal network while the main listener faces senders.
func NewOpsRouter(reg *prometheus.Registry, readiness Readiness, logger *slog.Logger) http.Handler {
	r := mux.NewRouter().SkipClean(true)
	r.HandleFunc("/healthz", healthz).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", readyz(newCachedReadiness(readiness), logger)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", metricsHandler(reg, logger)).Methods(http.MethodGet)
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, methodNotAllowed
	return withRequestID(recoverer(logger, r))
}

// adminRouter returns the router of /admin/v1, which NewRouter serves
// behind the admin token. docs/openapi.yaml documents its routes, and a test
// walks it to keep the two in step.
func adminRouter(api *adminAPI) *mux.Router {
	sub := mux.NewRouter().SkipClean(true)
	api.mount(sub.PathPrefix("/admin/v1").Subrouter())
	sub.NotFoundHandler, sub.MethodNotAllowedHandler = notFound, methodNotAllowed
	return sub
}

var notFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	writeError(w, errorf(http.StatusNotFound, "no such endpoint: "+r.URL.Path))
})

var methodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	writeError(w, errorf(http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path))
})

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when the database answers and the schema is current,
// else 503 with the reason; the driver's details stay in the log.
func readyz(ready *cachedReadiness, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := ready.Ready(r.Context()); err != nil {
			logger.Warn("not ready", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": outbox.ErrorMessage(err)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// readinessTTL is how long a readiness result is reused: a flood of
// probes costs at most one database round trip per second.
const readinessTTL = time.Second

// cachedReadiness runs a Readiness check at most once per readinessTTL.
// Probes that arrive while a check runs wait for it and share its result.
type cachedReadiness struct {
	ready Readiness
	now   func() time.Time

	mu  sync.Mutex // held while a check runs
	at  time.Time
	err error
}

func newCachedReadiness(ready Readiness) *cachedReadiness {
	return &cachedReadiness{ready: ready, now: time.Now}
}

// Ready returns the last result if it is fresh, else checks again. The
// check is not cut short by the probe that started it going away, since
// others share its result; it has two seconds.
func (c *cachedReadiness) Ready(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && c.now().Sub(c.at) < readinessTTL {
		return c.err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	c.err = c.ready.Ready(ctx)
	c.at = c.now()
	return c.err
}

// recoverer turns a panic in a handler into a logged 503 instead of a dropped
// connection: the event was not stored, and the sender should retry.
func recoverer(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("handler panicked", "panic", v, "path", r.URL.Path, "request_id", RequestID(r.Context()))
				writeError(w, &Error{Status: http.StatusServiceUnavailable, Message: "internal error; the request was not processed, retry later", RetryAfter: retryLater})
			}
		}()
		next.ServeHTTP(w, r)
	})
}
