// Package handler is webhook-outbox's HTTP surface: webhook intake, health,
// and metrics, on a gorilla/mux router.
package handler

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
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
	// /console/ behind AdminToken; nil turns it off.
	Console http.Handler
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
	r.HandleFunc("/healthz", healthz).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", readyz(opts.Readiness, opts.Logger)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", metricsHandler(reg, opts.Logger)).Methods(http.MethodGet)
	guard := newAdminGuard(opts)
	if opts.Admin != nil {
		api := &adminAPI{admin: opts.Admin, logger: opts.Logger, now: time.Now}
		r.PathPrefix("/admin/").Handler(guard.wrap(adminRouter(api)))
	}
	if opts.RiverUI != nil {
		r.Handle(RiverUIPrefix, http.RedirectHandler(RiverUIPrefix+"/", http.StatusMovedPermanently))
		r.PathPrefix(RiverUIPrefix + "/").Handler(guard.wrap(opts.RiverUI))
	}
	if opts.Console != nil {
		r.Handle(ConsolePrefix, http.RedirectHandler(ConsolePrefix+"/", http.StatusMovedPermanently))
		r.PathPrefix(ConsolePrefix + "/").Handler(guard.wrap(opts.Console))
	}
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, methodNotAllowed
	return withRequestID(recoverer(opts.Logger, r))
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
func readyz(ready Readiness, logger *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready.Ready(ctx); err != nil {
			logger.Warn("not ready", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": outbox.ErrorMessage(err)})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
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
