// Package admin carries out operators' requests: list, show, retry and
// replay events, and pause and resume routes. The admin API, the console
// and the CLI all use it, so they behave the same. It is a service over
// store (Postgres), config (the routes) and River (pausing queues).
package admin

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// Service carries out operators' requests.
type Service struct {
	store  *store.Store
	jobs   *river.Client[pgx.Tx]
	cfg    *config.Config
	routes map[string]*config.Route
	now    func() time.Time
	// replayBatch and retryBatch bound the events or dead letters each
	// transaction of a replay or bulk retry handles (tests lower them).
	replayBatch, retryBatch int
	// localWorkers says jobs works the routes' queues in this process, so
	// a pause waits for its workers to take it (WithLocalWorkers).
	localWorkers bool
}

// New returns a Service for cfg's routes. jobs may be an insert-only River
// client.
func New(st *store.Store, jobs *river.Client[pgx.Tx], cfg *config.Config) *Service {
	routes := make(map[string]*config.Route, len(cfg.Routes))
	for i := range cfg.Routes {
		routes[cfg.Routes[i].Name] = &cfg.Routes[i]
	}
	return &Service{store: st, jobs: jobs, cfg: cfg, routes: routes, now: time.Now, replayBatch: replayBatchSize, retryBatch: retryBatchSize}
}

// WithLocalWorkers says that s's River client works the routes' queues in
// this process (serve), so that Pause returns once those workers have
// stopped fetching. The CLI's insert-only client works none.
func (s *Service) WithLocalWorkers() *Service {
	s.localWorkers = true
	return s
}

// checkRoute returns the route, or an ENOTFOUND error naming the configured
// ones.
func (s *Service) checkRoute(name string) (*config.Route, error) {
	if r := s.routes[name]; r != nil {
		return r, nil
	}
	return nil, outbox.Errorf(outbox.ENOTFOUND, "no route named %q (configured: %s)", name, strings.Join(s.routeNames(), ", "))
}

func (s *Service) routeNames() []string {
	names := make([]string, len(s.cfg.Routes))
	for i, r := range s.cfg.Routes {
		names[i] = r.Name
	}
	return names
}

// budgets are the routes' retry budgets, which a retried dead letter gets
// back in full.
func (s *Service) budgets() []store.RetryBudget {
	b := make([]store.RetryBudget, len(s.cfg.Routes))
	for i, r := range s.cfg.Routes {
		b[i] = store.RetryBudget{Route: r.Name, MaxAttempts: r.Retry.MaxAttempts, GiveUpAfter: r.Retry.GiveUpAfter.D()}
	}
	return b
}

// Stats reports table and partition sizes, the oldest event and the
// dead-letter age; with exact, event rows are counted.
func (s *Service) Stats(ctx context.Context, exact bool) (*store.Stats, error) {
	return s.store.Stats(ctx, exact)
}

// Event returns everything known about the event stored for (route, key).
func (s *Service) Event(ctx context.Context, route, key string) (*outbox.EventDetail, error) {
	return s.store.EventByKey(ctx, route, key)
}

// ParseTime reads a time an operator typed: an RFC 3339 time
// (2026-11-28T09:00:00Z), a date (2026-11-28, midnight UTC), or a duration
// meaning that long ago (90m, 2h, 72h). field names it in the error.
func ParseTime(field, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, outbox.Errorf(outbox.EINVALID, "%s: %q is not a time: use RFC 3339 (2026-11-28T09:00:00Z), a date (2026-11-28), or a duration ago (90m, 2h)", field, s)
}

// ParseFilter builds a dead-letter filter from what an operator typed, as
// the CLI flags and the API parameters name it: a route, since and until
// (see ParseTime), and text the last error contains.
func ParseFilter(route, since, until, errorContains string, now time.Time) (outbox.DeadLetterFilter, error) {
	f := outbox.DeadLetterFilter{Route: route, ErrorContains: errorContains}
	var err error
	if f.Since, err = ParseTime("since", since, now); err != nil {
		return f, err
	}
	if f.Until, err = ParseTime("until", until, now); err != nil {
		return f, err
	}
	return f, nil
}

// Identifier is how an operator names a dead letter: a job id as `dlq list`
// prints it, or ROUTE/KEY.
type Identifier struct {
	JobID int64
	Route string
	Key   string
}

// ParseIdentifier reads a job id or ROUTE/KEY. Route names cannot hold "/",
// so the key is everything after the first one.
func ParseIdentifier(s string) (Identifier, error) {
	if id, err := strconv.ParseInt(s, 10, 64); err == nil && id > 0 {
		return Identifier{JobID: id}, nil
	}
	route, key, ok := strings.Cut(s, "/")
	if !ok || route == "" || key == "" {
		return Identifier{}, outbox.Errorf(outbox.EINVALID, "%q is neither a job id (as dlq list prints it) nor ROUTE/KEY", s)
	}
	return Identifier{Route: route, Key: key}, nil
}

func (id Identifier) String() string {
	if id.JobID != 0 {
		return strconv.FormatInt(id.JobID, 10)
	}
	return id.Route + "/" + id.Key
}
