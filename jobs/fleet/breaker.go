package fleet

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// Breaker is this replica's handle on every route's circuit breaker, one
// for the fleet (route_circuits). It keeps a copy of the fleet's state,
// refreshed by Run once a second and by every write, and decides from it
// without a round trip while a circuit is closed and healthy.
//
// Its protocol: Allow before sending, then Record with the outcome, or
// Release when nothing was sent. While the fleet has a run of failures on
// a route, this replica also counts its own requests in flight and sends a
// new one only while failures plus those in flight stay under the
// threshold: a target that starts failing sees about threshold requests
// per replica before the circuit opens, not one per queued event.
//
// When Postgres cannot be reached, failures and successes still move the
// local copy, so each replica keeps protecting the target on its own.
type Breaker struct {
	st       *store.Store
	holder   string
	settings map[string]Settings
	logger   *slog.Logger
	onClose  func(route string)

	mu       sync.Mutex
	circuits map[string]store.Circuit
	inflight map[string]int
}

// Settings are one route's breaker settings.
type Settings struct {
	store.BreakerSettings
	// ProbeTTL is how long a probe may take before another replica may
	// send one: the route's target timeout plus a margin.
	ProbeTTL time.Duration
}

// NewBreaker returns a Breaker for the routes in settings. onClose, when
// set, is called (outside any lock) when this replica sees a route's
// circuit close after its probe succeeded: the place to restart the
// route's adaptive limiter, so the backlog ramps up from 1.
func NewBreaker(st *store.Store, holder string, settings map[string]Settings, onClose func(route string), logger *slog.Logger) *Breaker {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b := &Breaker{
		st: st, holder: holder, settings: settings, logger: logger, onClose: onClose,
		circuits: map[string]store.Circuit{}, inflight: map[string]int{},
	}
	for route := range settings {
		b.circuits[route] = store.Circuit{Route: route, State: outbox.CircuitClosed}
	}
	return b
}

// Permit is the Breaker's answer to "may this delivery be sent now?".
type Permit struct {
	route string
	// OK says the request may be sent; Probe that it is the fleet's one
	// probe.
	OK, Probe bool
	// Wait is how long to snooze the delivery when OK is false.
	Wait time.Duration
}

// ShortWait is how long a delivery held back for a moment is snoozed: while
// another replica's probe or a run of failures is being settled, or while
// every place under the route's limit is busy. The answer usually comes
// within milliseconds, so it is short, and it is jittered so that waiting
// deliveries do not come back together.
func ShortWait() time.Duration { return time.Second + rand.N(time.Second) }

// State returns this replica's copy of route's circuit.
func (b *Breaker) State(route string) store.Circuit {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.circuits[route]
}

// Allow decides whether a delivery of route may be sent now. It reaches
// Postgres only to take a probe.
func (b *Breaker) Allow(ctx context.Context, route string) Permit {
	now := time.Now()
	b.mu.Lock()
	c := b.circuits[route]
	s := b.settings[route]
	switch {
	case c.State == outbox.CircuitOpen && now.Before(c.OpenUntil):
		b.mu.Unlock()
		spread := min(c.Cooldown/10, 5*time.Second)
		return Permit{route: route, Wait: c.OpenUntil.Sub(now) + rand.N(spread+1)}
	case c.State == outbox.CircuitHalfOpen && now.Before(c.ProbeUntil):
		b.mu.Unlock()
		return Permit{route: route, Wait: ShortWait()}
	case c.State == outbox.CircuitOpen || c.State == outbox.CircuitHalfOpen:
		b.mu.Unlock()
		got, ok, err := b.st.TryCircuitProbe(ctx, route, b.holder, s.ProbeTTL)
		if err != nil {
			b.logger.Warn("cannot take the circuit breaker's probe; waiting", "route", route, "error", err)
			return Permit{route: route, Wait: ShortWait()}
		}
		if !ok {
			b.refreshOne(ctx, route)
			return Permit{route: route, Wait: ShortWait()}
		}
		b.set(got)
		b.logger.Info("circuit breaker half-open: this replica sends the fleet's probe", "route", route)
		return Permit{route: route, OK: true, Probe: true}
	}
	defer b.mu.Unlock()
	if c.ConsecutiveFailures > 0 && c.ConsecutiveFailures+b.inflight[route] >= max(s.Failures, 1) {
		return Permit{route: route, Wait: ShortWait()}
	}
	b.inflight[route]++
	return Permit{route: route, OK: true}
}

// Record settles a granted permit with the delivery's outcome: failed is a
// retryable failure (5xx, 408, 429, timeout, connection error); anything
// else shows the target is up.
func (b *Breaker) Record(ctx context.Context, p Permit, failed bool, message string) {
	if !p.OK {
		return
	}
	s := b.settings[p.route]
	if p.Probe {
		c, ok, err := b.st.CircuitProbeDone(ctx, p.route, b.holder, !failed, s.BreakerSettings, message)
		switch {
		case err != nil:
			b.logger.Warn("cannot record the probe's outcome; the probe will expire and be sent again", "route", p.route, "error", err)
		case ok:
			b.set(c)
			if c.State == outbox.CircuitClosed {
				b.logger.Info("circuit breaker closed for the fleet: the probe delivery succeeded", "route", p.route)
				if b.onClose != nil {
					b.onClose(p.route)
				}
			} else {
				b.logger.Warn("circuit breaker probe failed; circuit open again", "route", p.route, "cooldown", c.Cooldown.String(), "error", message)
			}
		}
		return
	}
	b.mu.Lock()
	b.inflight[p.route]--
	known := b.circuits[p.route].ConsecutiveFailures
	b.mu.Unlock()
	if !failed {
		if known == 0 {
			return // a healthy route writes nothing
		}
		if err := b.st.RecordCircuitSuccess(ctx, p.route); err != nil {
			b.logger.Warn("cannot record a success on the fleet's circuit breaker", "route", p.route, "error", err)
		}
		b.mu.Lock()
		c := b.circuits[p.route]
		if c.State == outbox.CircuitClosed {
			c.ConsecutiveFailures = 0
			b.circuits[p.route] = c
		}
		b.mu.Unlock()
		return
	}
	c, counted, err := b.st.RecordCircuitFailure(ctx, p.route, s.BreakerSettings, message)
	switch {
	case err != nil:
		b.logger.Warn("cannot record a failure on the fleet's circuit breaker; counting it on this replica", "route", p.route, "error", err)
		b.failLocally(p.route, s, message)
	case counted:
		b.set(c)
		if c.State == outbox.CircuitOpen { // the failure that opened it: later ones are not counted
			b.logger.Warn("circuit breaker opened for the fleet: no replica sends to the target until the cooldown ends",
				"route", p.route, "failures", c.ConsecutiveFailures, "cooldown", c.Cooldown.String(), "error", message)
		}
	default:
		b.refreshOne(ctx, p.route)
	}
}

// Release settles a granted permit whose delivery was not sent.
func (b *Breaker) Release(ctx context.Context, p Permit) {
	if !p.OK {
		return
	}
	if p.Probe {
		if err := b.st.ReleaseCircuitProbe(ctx, p.route, b.holder); err != nil {
			b.logger.Warn("cannot release the probe; it will expire", "route", p.route, "error", err)
		}
		return
	}
	b.mu.Lock()
	b.inflight[p.route]--
	b.mu.Unlock()
}

// failLocally applies a failure to the local copy when Postgres is out of
// reach.
func (b *Breaker) failLocally(route string, s Settings, message string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.circuits[route]
	if c.State != outbox.CircuitClosed {
		return
	}
	c.ConsecutiveFailures++
	if c.ConsecutiveFailures >= max(s.Failures, 1) {
		now := time.Now()
		c.State, c.Since, c.Cooldown, c.OpenUntil, c.LastError = outbox.CircuitOpen, now, s.Cooldown, now.Add(s.Cooldown), message
		c.Opened++
	}
	b.circuits[route] = c
}

// set stores a circuit read from Postgres.
func (b *Breaker) set(c store.Circuit) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.settings[c.Route]; !ok {
		return
	}
	prev := b.circuits[c.Route]
	if prev.State != outbox.CircuitClosed && c.State == outbox.CircuitClosed {
		b.inflight[c.Route] = 0
	}
	b.circuits[c.Route] = c
}

func (b *Breaker) refreshOne(ctx context.Context, route string) {
	cs, err := b.st.Circuits(ctx)
	if err != nil {
		return
	}
	if c, ok := cs[route]; ok {
		b.set(c)
	}
}

// Refresh reads every route's circuit from Postgres. A route without a row
// is closed (the table is emptied by a Postgres crash).
func (b *Breaker) Refresh(ctx context.Context) error {
	cs, err := b.st.Circuits(ctx)
	if err != nil {
		return err
	}
	var closed []string
	b.mu.Lock()
	for route := range b.settings {
		c, ok := cs[route]
		if !ok {
			c = store.Circuit{Route: route, State: outbox.CircuitClosed}
		}
		if prev := b.circuits[route]; prev.State != outbox.CircuitClosed && c.State == outbox.CircuitClosed {
			closed = append(closed, route)
			b.inflight[route] = 0
		}
		b.circuits[route] = c
	}
	b.mu.Unlock()
	for _, route := range closed {
		if b.onClose != nil {
			b.onClose(route)
		}
	}
	return nil
}

// Run refreshes the copy every interval until ctx ends, so that a replica
// learns within about a second that another opened or closed a circuit.
func (b *Breaker) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := b.Refresh(ctx); err != nil && ctx.Err() == nil {
			b.logger.Warn("cannot read the fleet's circuit breakers; deciding from the last known state", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
