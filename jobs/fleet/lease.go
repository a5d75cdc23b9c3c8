// Package fleet keeps one replica's view of each route's fleet-wide limits
// in step with Postgres (store/fleet.go): its share of the route's
// `concurrency` and `rate_limit` (Lease), and the route's circuit breaker,
// one for all replicas (Breaker).
//
// Nothing here costs a database round trip per delivery. A Lease renews
// every few seconds while the route has work, and at once when the replica
// wants more; a Breaker writes only on failures, on the first success after
// failures, and for probes, and reads the fleet's state once a second.
package fleet

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/webhook-outbox/webhook-outbox/jobs/adaptive"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// Defaults for LeaseConfig's zero values.
const (
	// DefaultLeaseTTL is how long a lease lasts without renewal: how long
	// a killed replica's share stays taken. It is well under River's
	// rescue of the killed replica's deliveries (30 s plus the target
	// timeout), so its capacity is back before its work is.
	DefaultLeaseTTL = 15 * time.Second
	// DefaultRenewEvery is how often a lease is renewed while the route
	// has work, and so how fast shares move between replicas.
	DefaultRenewEvery = 2 * time.Second
	// minRenewGap bounds the renewals made at once because the replica
	// wants more than it holds.
	minRenewGap = 250 * time.Millisecond
	// checkEvery is how often Run looks, in memory, for a reason to renew
	// early.
	checkEvery = 50 * time.Millisecond
)

// LeaseConfig configures a Lease.
type LeaseConfig struct {
	Store         *store.Store
	Route, Holder string
	// Ceiling is the route's concurrency; RateLimit its rate_limit (0:
	// none).
	Ceiling   int
	RateLimit float64
	// Limiter is the route's limiter on this replica: the lease caps it
	// (SetCap) and asks for what it demands.
	Limiter *adaptive.Limiter
	// TTL and RenewEvery default to DefaultLeaseTTL and DefaultRenewEvery.
	TTL, RenewEvery time.Duration
	Logger          *slog.Logger
}

// Lease is one replica's share of a route's fleet-wide concurrency and rate
// limit. Until its first renewal it allows nothing.
type Lease struct {
	cfg  LeaseConfig
	rate *rate.Limiter // nil without a rate_limit

	mu         sync.Mutex
	grant      store.LeaseGrant
	validUntil time.Time // local clock: the lease is surely live until then
	lastRenew  time.Time
	lastWant   int
	renewing   sync.Mutex
}

// NewLease returns a Lease for cfg's route, and caps the limiter at 0
// until the first renewal.
func NewLease(cfg LeaseConfig) *Lease {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultLeaseTTL
	}
	if cfg.RenewEvery <= 0 {
		cfg.RenewEvery = DefaultRenewEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Lease{cfg: cfg}
	if cfg.RateLimit > 0 {
		l.rate = rate.NewLimiter(0, 1)
	}
	cfg.Limiter.SetCap(0)
	return l
}

// RateLimiter is the replica's token bucket at its share of the route's
// rate_limit (nil when the route has none). Deliveries reserve from it
// before they send.
func (l *Lease) RateLimiter() *rate.Limiter { return l.rate }

// Grant returns the replica's current share.
func (l *Lease) Grant() store.LeaseGrant {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.grant
}

// Renew renews the lease now, in one round trip, and applies the grant to
// the limiter and the rate limiter. On an error the current share stays
// until the lease could have expired in Postgres; then the replica sends
// nothing until a renewal succeeds, so the fleet-wide caps hold while the
// database is unreachable.
func (l *Lease) Renew(ctx context.Context) error {
	l.renewing.Lock()
	defer l.renewing.Unlock()
	want := l.cfg.Limiter.Demand(2 * l.cfg.RenewEvery)
	st := l.cfg.Limiter.Stats()
	sent := time.Now()
	g, err := l.cfg.Store.RenewFleetLease(ctx, store.LeaseRequest{
		Route: l.cfg.Route, Holder: l.cfg.Holder, Want: want, InFlight: st.InFlight,
		Ceiling: l.cfg.Ceiling, RateLimit: l.cfg.RateLimit, TTL: l.cfg.TTL,
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastRenew = sent
	if err != nil {
		if !sent.Before(l.validUntil) {
			l.grant = store.LeaseGrant{}
			l.apply()
		}
		return err
	}
	l.lastWant = want
	l.grant = g
	// Postgres counts the TTL from its own clock, after the request left:
	// counting from before it left keeps the local view on the safe side.
	l.validUntil = sent.Add(l.cfg.TTL)
	l.apply()
	return nil
}

func (l *Lease) apply() {
	l.cfg.Limiter.SetCap(l.grant.Slots)
	if l.rate != nil {
		l.rate.SetLimit(rate.Limit(l.grant.Rate))
	}
}

// due reports whether Run should renew now: the regular renewal is due, the
// lease is about to lapse, or the replica wants a different share than it
// last asked for (work arrived after an idle spell, the adaptive limit
// moved).
func (l *Lease) due(now time.Time) bool {
	l.mu.Lock()
	last, lastWant, granted := l.lastRenew, l.lastWant, l.grant.Slots
	l.mu.Unlock()
	if now.Sub(last) >= l.cfg.RenewEvery {
		// Nothing to keep and nothing wanted: no statement at all.
		return granted > 0 || lastWant > 0 || l.cfg.Limiter.Demand(2*l.cfg.RenewEvery) > 0 || l.cfg.Limiter.Stats().InFlight > 0
	}
	if now.Sub(last) < minRenewGap {
		return false
	}
	return l.cfg.Limiter.Demand(2*l.cfg.RenewEvery) != lastWant
}

// Run renews the lease until ctx ends. It does not give the lease up:
// call Release at shutdown (a killed replica's lease expires on its own).
func (l *Lease) Run(ctx context.Context) {
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		if l.due(time.Now()) {
			if err := l.Renew(ctx); err != nil && ctx.Err() == nil {
				l.cfg.Logger.Warn("cannot renew the route's fleet lease; keeping the current share until it could have expired",
					"route", l.cfg.Route, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Release gives the share back at shutdown, so the other replicas need not
// wait for it to expire, and caps the limiter at 0.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.grant = store.LeaseGrant{}
	l.apply()
	l.mu.Unlock()
	_, err := l.cfg.Store.RenewFleetLease(ctx, store.LeaseRequest{
		Route: l.cfg.Route, Holder: l.cfg.Holder, Ceiling: l.cfg.Ceiling, RateLimit: l.cfg.RateLimit, TTL: l.cfg.TTL,
	})
	return err
}
