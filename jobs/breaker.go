package jobs

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/webhook-outbox/webhook-outbox/config"
)

// BreakerState is where a route's circuit breaker stands.
type BreakerState string

// The states of a circuit breaker.
const (
	// BreakerClosed: deliveries are sent.
	BreakerClosed BreakerState = "closed"
	// BreakerOpen: the target failed too often in a row; nothing is sent
	// until the cooldown ends, and deliveries are snoozed without using an
	// attempt.
	BreakerOpen BreakerState = "open"
	// BreakerHalfOpen: the cooldown ended; one probe delivery is sent, and
	// its outcome closes the circuit or opens it again for longer.
	BreakerHalfOpen BreakerState = "half-open"
)

// BreakerStatus is a snapshot of one route's circuit breaker on this
// replica, for the routes listing and for metrics.
type BreakerStatus struct {
	Route string
	State BreakerState
	// Since is when the breaker entered State.
	Since time.Time
	// ConsecutiveFailures is the current run of retryable failures.
	ConsecutiveFailures int
	// Cooldown is how long the circuit stays open: the current open
	// period's length, or the next one's while half-open.
	Cooldown time.Duration
	// OpenUntil is when the next probe may be sent; zero unless open.
	OpenUntil time.Time
	// Opened counts how many times the circuit opened since the process
	// started, re-openings after a failed probe included. It only grows, so
	// it can back a Prometheus counter.
	Opened uint64
	// LastError is the failure that last opened the circuit.
	LastError string
}

// Breakers holds the circuit breaker of every route on this replica.
//
// Breakers are per replica on purpose: they need no coordination through
// the database, and with N replicas a sick target still sees at most N
// probes per cooldown.
type Breakers struct {
	order   []string
	byRoute map[string]*breaker
}

// NewBreakers returns a closed breaker for each of cfg's routes, with the
// route's circuit_breaker settings. State changes are logged on logger with
// the route field.
func NewBreakers(cfg *config.Config, logger *slog.Logger) *Breakers {
	bs := &Breakers{byRoute: make(map[string]*breaker, len(cfg.Routes))}
	for _, r := range cfg.Routes {
		cb := r.CircuitBreaker
		bs.order = append(bs.order, r.Name)
		bs.byRoute[r.Name] = &breaker{
			route:        r.Name,
			threshold:    max(cb.Failures, 1),
			baseCooldown: cb.Cooldown.D(),
			maxCooldown:  max(cb.MaxCooldown.D(), cb.Cooldown.D()),
			logger:       logger,
			state:        BreakerClosed,
			cooldown:     cb.Cooldown.D(),
			since:        time.Now(),
		}
	}
	return bs
}

// States returns every route's breaker, in config order.
func (bs *Breakers) States() []BreakerStatus {
	out := make([]BreakerStatus, 0, len(bs.order))
	for _, name := range bs.order {
		out = append(out, bs.byRoute[name].status())
	}
	return out
}

// State returns one route's breaker, and false for an unknown route.
func (bs *Breakers) State(route string) (BreakerStatus, bool) {
	b := bs.byRoute[route]
	if b == nil {
		return BreakerStatus{}, false
	}
	return b.status(), true
}

func (bs *Breakers) get(route string) *breaker { return bs.byRoute[route] }

// Observe calls fn with every route's current state, then on every state
// change, for the circuit state metric. fn runs under the breaker's lock, so
// it must be quick (setting a gauge is).
func (bs *Breakers) Observe(fn func(route string, state BreakerState)) {
	for _, name := range bs.order {
		b := bs.byRoute[name]
		b.mu.Lock()
		b.observer = fn
		fn(b.route, b.state)
		b.mu.Unlock()
	}
}

// waitForProbe is how long a delivery that may not be sent while a probe,
// or a run of failures, is being settled is snoozed: short, because the
// answer usually comes within milliseconds, and jittered so that waiting
// deliveries do not return together.
func waitForProbe() time.Duration {
	return time.Second + rand.N(time.Second)
}

// breaker is one route's circuit breaker.
//
// While closed, it counts consecutive retryable failures. Once one failure
// is known, it also counts deliveries in flight, and lets a new one go only
// while failures plus those in flight stay under the threshold: a target
// that has just started failing sees at most max(threshold, concurrency)
// requests before the circuit opens, not one per queued event.
type breaker struct {
	route        string
	threshold    int
	baseCooldown time.Duration
	maxCooldown  time.Duration
	logger       *slog.Logger

	mu          sync.Mutex
	state       BreakerState
	since       time.Time
	consecutive int
	inflight    int // permits out in the current generation, while closed
	generation  uint64
	cooldown    time.Duration
	openUntil   time.Time
	probing     bool
	opened      uint64
	lastError   string
	observer    func(route string, state BreakerState)
}

// permit is the breaker's answer to "may this delivery be sent now?". A
// granted permit must be settled exactly once, by record or release.
type permit struct {
	b          *breaker
	ok         bool
	probe      bool
	generation uint64
	// wait, when the permit is refused, is how long to snooze the delivery.
	wait    time.Duration
	settled bool
}

func (b *breaker) allow(now time.Time) *permit {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen {
		if now.Before(b.openUntil) {
			// Spread the snoozed deliveries over a tenth of the cooldown
			// after it ends, so they do not all come back at once.
			spread := min(b.cooldown/10, 5*time.Second)
			return &permit{b: b, wait: b.openUntil.Sub(now) + rand.N(spread+1)}
		}
		b.setState(BreakerHalfOpen, now)
		b.logger.Info("circuit breaker half-open: sending one probe delivery", "route", b.route, "cooldown", b.cooldown.String())
	}
	if b.state == BreakerHalfOpen {
		if b.probing {
			return &permit{b: b, wait: waitForProbe()}
		}
		b.probing = true
		return &permit{b: b, ok: true, probe: true, generation: b.generation}
	}
	if b.consecutive > 0 && b.consecutive+b.inflight >= b.threshold {
		return &permit{b: b, wait: waitForProbe()}
	}
	b.inflight++
	return &permit{b: b, ok: true, generation: b.generation}
}

// record settles a granted permit with the delivery's outcome. A Retry
// verdict (5xx, 408, 429 without Retry-After, timeout, connection error) is
// a failure; a 2xx or a permanent 4xx shows the target is up; a Snooze
// (Retry-After) counts as neither while closed, and as a failed probe.
func (p *permit) record(v Verdict, message string, now time.Time) {
	if !p.ok || p.settled {
		return
	}
	p.settled = true
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.generation != b.generation {
		return // sent before the circuit last changed state
	}
	if p.probe {
		b.probing = false
		if v == Delivered || v == Permanent {
			b.close(now)
			return
		}
		b.lastError = message
		b.cooldown = min(b.cooldown*2, b.maxCooldown)
		b.open(now)
		b.logger.Warn("circuit breaker probe failed; circuit open again", "route", b.route, "cooldown", b.cooldown.String(), "error", message)
		return
	}
	b.inflight--
	switch v {
	case Delivered, Permanent:
		b.consecutive = 0
	case Retry:
		b.consecutive++
		if b.consecutive >= b.threshold {
			b.lastError = message
			b.cooldown = b.baseCooldown
			failures := b.consecutive
			b.open(now)
			b.logger.Warn("circuit breaker opened: not sending to the target until the cooldown ends", "route", b.route,
				"failures", failures, "cooldown", b.cooldown.String(), "error", message)
		}
	}
}

// release settles a granted permit whose delivery was not sent, for example
// because the event could not be loaded; a probe slot is freed for the next
// delivery.
func (p *permit) release() {
	if !p.ok || p.settled {
		return
	}
	p.settled = true
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.generation != b.generation {
		return
	}
	if p.probe {
		b.probing = false
	} else {
		b.inflight--
	}
}

func (b *breaker) open(now time.Time) {
	b.openUntil = now.Add(b.cooldown)
	b.opened++
	b.setState(BreakerOpen, now)
}

func (b *breaker) close(now time.Time) {
	b.cooldown = b.baseCooldown
	b.openUntil = time.Time{}
	b.setState(BreakerClosed, now)
	b.logger.Info("circuit breaker closed: the probe delivery succeeded", "route", b.route)
}

// setState moves to state and starts a new generation, so that permits
// granted before the change cannot skew the counts after it.
func (b *breaker) setState(state BreakerState, now time.Time) {
	if b.observer != nil && b.state != state {
		b.observer(b.route, state)
	}
	b.state = state
	b.since = now
	b.generation++
	b.consecutive = 0
	b.inflight = 0
	b.probing = false
}

func (b *breaker) status() BreakerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BreakerStatus{
		Route: b.route, State: b.state, Since: b.since, ConsecutiveFailures: b.consecutive,
		Cooldown: b.cooldown, Opened: b.opened, LastError: b.lastError,
	}
	if b.state == BreakerOpen {
		s.OpenUntil = b.openUntil
	}
	return s
}
