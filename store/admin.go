package store

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/webhook-outbox/webhook-outbox/config"
)

// Admin carries out operators' requests: list, show, retry and replay
// events, and pause and resume routes. The admin API and the CLI both use
// it, so they behave the same.
type Admin struct {
	store  *Store
	jobs   *river.Client[pgx.Tx]
	cfg    *config.Config
	routes map[string]*config.Route
	now    func() time.Time
	// circuits reports this replica's circuit breakers, when it runs
	// deliveries.
	circuits func(route string) (CircuitInfo, bool)
}

// NewAdmin returns an Admin for cfg's routes. jobs may be an insert-only
// River client.
func NewAdmin(st *Store, jobs *river.Client[pgx.Tx], cfg *config.Config) *Admin {
	routes := make(map[string]*config.Route, len(cfg.Routes))
	for i := range cfg.Routes {
		routes[cfg.Routes[i].Name] = &cfg.Routes[i]
	}
	return &Admin{store: st, jobs: jobs, cfg: cfg, routes: routes, now: time.Now}
}

// Store returns the underlying store.
func (a *Admin) Store() *Store { return a.store }

// ErrInvalid marks a request an operator must correct; its message says how.
var ErrInvalid = errors.New("invalid request")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// checkRoute returns the route, or an ErrInvalid naming the configured ones.
func (a *Admin) checkRoute(name string) (*config.Route, error) {
	if r := a.routes[name]; r != nil {
		return r, nil
	}
	names := make([]string, 0, len(a.cfg.Routes))
	for _, r := range a.cfg.Routes {
		names = append(names, r.Name)
	}
	return nil, fmt.Errorf("%w: no route named %q (configured: %s)", ErrNotFound, name, strings.Join(names, ", "))
}

// ParseTime reads a time an operator typed: an RFC 3339 time
// (2026-11-28T09:00:00Z), a date (2026-11-28, midnight UTC), or a duration
// meaning that long ago (90m, 2h, 72h).
func ParseTime(s string, now time.Time) (time.Time, error) {
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
	return time.Time{}, invalidf("%q is not a time: use RFC 3339 (2026-11-28T09:00:00Z), a date (2026-11-28), or a duration ago (90m, 2h)", s)
}

// likePattern turns a substring into an ILIKE pattern that matches it
// literally.
func likePattern(sub string) *string {
	if sub == "" {
		return nil
	}
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	p := "%" + r.Replace(sub) + "%"
	return &p
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
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
		return Identifier{}, invalidf("%q is neither a job id (as dlq list prints it) nor ROUTE/KEY", s)
	}
	return Identifier{Route: route, Key: key}, nil
}

func (id Identifier) String() string {
	if id.JobID != 0 {
		return strconv.FormatInt(id.JobID, 10)
	}
	return id.Route + "/" + id.Key
}
