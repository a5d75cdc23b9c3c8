package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/jobs/adaptive"
	"github.com/webhook-outbox/webhook-outbox/jobs/fleet"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// WorkersPerSlot is how many River workers a route runs for each unit of
// its `concurrency`. Extra workers load their events and wait for a place
// under the route's limit while others send, so the places stay busy.
//
// A place (an adaptive.Token) is held from the request until its outcome
// is recorded (or the job gives up recording it). The fleet's places on a
// route never pass its `concurrency` (Limits), so the target never sees
// more than that many requests at once from all replicas together, and no
// more than that many deliveries are ever acknowledged by the target but
// not yet recorded: the most a crash can repeat.
const WorkersPerSlot = 4

// maxSlotWait bounds how long a delivery waits in its worker for a place
// under the route's limit before it snoozes instead (which uses no
// attempt).
const maxSlotWait = 5 * time.Second

// placeWait is how long a delivery of a route with this target timeout
// waits for a place: about one request's worth, at most maxSlotWait.
func placeWait(targetTimeout time.Duration) time.Duration {
	return min(targetTimeout, maxSlotWait)
}

// probeMargin is added to a route's target timeout to make its probe's
// lifetime: a replica killed while it sends the fleet's probe blocks the
// others for no longer than that.
const probeMargin = 5 * time.Second

// breakerRefresh is how often a replica reads the fleet's circuit
// breakers, so that it learns within about that long that another replica
// opened or closed one.
const breakerRefresh = time.Second

// Limits is this replica's part in protecting every route's target for the
// whole fleet (issue 12). For each route it keeps an adaptive limiter
// (jobs/adaptive), whose limit is capped by the replica's lease on the
// route's fleet-wide `concurrency` and `rate_limit` (fleet.Lease), and it
// shares each route's circuit breaker with every replica (fleet.Breaker).
// All of it lives in Postgres, renewed in the background: a delivery costs
// no round trip while its route is healthy.
//
// Serve makes one, starts it before River and stops it after River, so
// that the last deliveries still hold their places while they record.
type Limits struct {
	st      *store.Store
	holder  string
	breaker *fleet.Breaker
	routes  map[string]*routeLimits
	logger  *slog.Logger

	mu   sync.Mutex
	stop context.CancelFunc
	done sync.WaitGroup
}

// routeLimits is one route's limiter and lease on this replica.
type routeLimits struct {
	limiter *adaptive.Limiter
	lease   *fleet.Lease
}

// NewLimits returns the limits of cfg's routes for this replica, under a
// fresh holder name (store.NewHolderID). Until Start, every route's limit
// is 0: nothing is sent before the replica holds a lease.
func NewLimits(st *store.Store, cfg *config.Config, logger *slog.Logger) *Limits {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Limits{st: st, holder: store.NewHolderID(), routes: make(map[string]*routeLimits, len(cfg.Routes)), logger: logger}
	settings := make(map[string]fleet.Settings, len(cfg.Routes))
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		ac := adaptive.Config{Ceiling: rc.Concurrency}
		if rc.Adaptive() {
			ac.Algorithm = adaptive.NewGradient()
		}
		lim := adaptive.New(ac)
		l.routes[rc.Name] = &routeLimits{limiter: lim, lease: fleet.NewLease(fleet.LeaseConfig{
			Store: st, Route: rc.Name, Holder: l.holder, Ceiling: rc.Concurrency, RateLimit: rc.RateLimit,
			Limiter: lim, Logger: logger,
		})}
		cb := rc.CircuitBreaker
		settings[rc.Name] = fleet.Settings{
			BreakerSettings: store.BreakerSettings{Failures: cb.Failures, Cooldown: cb.Cooldown.D(), MaxCooldown: cb.MaxCooldown.D()},
			ProbeTTL:        rc.Target.Timeout.D() + probeMargin,
		}
	}
	// A target that was down gets the backlog at slow start's pace, from
	// one request at a time, not at the limit it had before the outage.
	l.breaker = fleet.NewBreaker(st, l.holder, settings, func(route string) {
		if r := l.routes[route]; r != nil {
			r.limiter.Restart()
		}
	}, logger)
	return l
}

// Holder is this replica's name in fleet_leases and route_circuits.
func (l *Limits) Holder() string { return l.holder }

// Start renews the routes' leases and follows the fleet's circuit
// breakers in the background until Stop. It reads the circuits once
// before it returns, so that a replica starting while a circuit is open
// sends nothing to that target.
func (l *Limits) Start(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop != nil {
		return
	}
	ctx, l.stop = context.WithCancel(context.WithoutCancel(ctx))
	if err := l.breaker.Refresh(ctx); err != nil {
		l.logger.Warn("cannot read the fleet's circuit breakers at start; taking them as closed until the next read", "error", err)
	}
	l.done.Add(1 + len(l.routes))
	go func() {
		defer l.done.Done()
		l.breaker.Run(ctx, breakerRefresh)
	}()
	for _, r := range l.routes {
		go func() {
			defer l.done.Done()
			r.lease.Run(ctx)
		}()
	}
}

// Stop stops the renewals and gives this replica's shares back, so that
// the other replicas need not wait for its leases to expire. Call it after
// River has stopped: a delivery still recording holds its place.
func (l *Limits) Stop(ctx context.Context) error {
	l.mu.Lock()
	stop := l.stop
	l.stop = nil
	l.mu.Unlock()
	if stop == nil {
		return nil
	}
	stop()
	l.done.Wait()
	for _, r := range l.routes {
		r.limiter.SetCap(0)
	}
	return l.st.ReleaseFleetLeases(ctx, l.holder)
}

// Limit is the route's concurrency limit on this replica now: the smaller
// of its adaptive limit and its share of the fleet's (for
// outbox_delivery_concurrency_limit). It answers false for an unknown
// route.
func (l *Limits) Limit(route string) (int, bool) {
	r := l.routes[route]
	if r == nil {
		return 0, false
	}
	return r.limiter.Limit(), true
}

// Stats is the route's limiter on this replica, for tests and logs.
func (l *Limits) Stats(route string) (adaptive.Stats, bool) {
	r := l.routes[route]
	if r == nil {
		return adaptive.Stats{}, false
	}
	return r.limiter.Stats(), true
}

// Circuit is the route's fleet-wide circuit breaker as this replica last
// read it. It answers false for an unknown route.
func (l *Limits) Circuit(route string) (store.Circuit, bool) {
	if l.routes[route] == nil {
		return store.Circuit{}, false
	}
	return l.breaker.State(route), true
}

// CircuitState is the state of the route's fleet-wide circuit breaker as
// this replica last read it (for outbox_circuit_state).
func (l *Limits) CircuitState(route string) (outbox.CircuitState, bool) {
	c, ok := l.Circuit(route)
	return c.State, ok
}

// outcomeForLimiter is what an attempt's outcome tells the adaptive
// limiter about the target's load.
func outcomeForLimiter(out Outcome) adaptive.Outcome {
	switch {
	case out.CutOff:
		return adaptive.Unsent
	case out.Verdict == Delivered || out.Verdict == Permanent:
		return adaptive.Answered
	}
	// Retry (5xx, 408, 429, timeout, connection failure) and Snooze
	// (Retry-After): the target is past its capacity or down.
	return adaptive.Overloaded
}
