// Package adaptive limits how many requests a route has in flight to its
// target, to a limit that follows the target's latency and errors, below
// the route's `concurrency` (the ceiling).
//
// The design borrows from TCP congestion control, as Netflix's
// concurrency-limits and Envoy's adaptive concurrency filter do:
//
//   - Slow start. After a restart (start-up, an idle spell, a circuit
//     breaker closing, a route resuming) the limit is 1 for a few answers,
//     which measure the target's unloaded latency, then doubles every round
//     trip while latency stays near it (HyStart's delay test) and nothing is
//     refused.
//   - Congestion avoidance. After slow start an Algorithm moves the limit
//     once per round trip. The candidates (AIMD, Vegas, Gradient2 and an
//     Envoy-like gradient) are compared by a deterministic simulation in this
//     package's tests; Gradient won and is the default.
//   - One decrease per congestion event. Errors from requests sent before the
//     last decrease do not decrease the limit again (TCP NewReno's recovery),
//     so a burst of refusals from one overshoot halves the limit once.
//
// A Limiter is safe for concurrent use. It never sleeps on its own clock:
// every decision uses the Clock it is given, so the simulation runs on
// virtual time.
package adaptive

import (
	"container/list"
	"context"
	"slices"
	"sync"
	"time"
)

// Outcome is what a finished request says about the target's load.
type Outcome int

const (
	// Answered is an answer that says nothing about overload: a 2xx, or a
	// 4xx other than 408 and 429. Its latency is a sample.
	Answered Outcome = iota
	// Overloaded is a sign that the target is past its capacity or down: a
	// 5xx, 408, 429 (with or without Retry-After), a timeout, or a
	// connection that failed. Its latency is not a sample.
	Overloaded
	// Unsent is a request that was never sent or was cut off by a
	// shutdown: it frees its place and says nothing.
	Unsent
)

// Defaults for Config's zero values.
const (
	// DefaultIdleRestart is how long a limiter with nothing in flight
	// keeps what it learnt. After that, the next request starts slow start
	// again: the target may have changed, and a backlog that built up
	// meanwhile must not arrive at the old limit at once.
	DefaultIdleRestart = 10 * time.Second
	// slowStartExit ends slow start when a round's latency passes the
	// unloaded latency by this factor (HyStart's delay test).
	slowStartExit = 1.25
	// Noise is the rise of latency that says nothing about the target's
	// load, whatever its unloaded latency: the sender's own machine and
	// the network add that much when many requests are in flight (a
	// scheduler, a busy CPU, a garbage collection). Slow start and the
	// chosen algorithm take latency as risen only when it passes both
	// their factor and the unloaded latency plus Noise, so a fast target
	// a millisecond away is not held at a handful of requests by the
	// sender's own jitter.
	Noise = 10 * time.Millisecond
	// minRoundAnswers is how many answers a round needs before it ends,
	// unless an overload ends it: the median of several keeps one lucky or
	// unlucky answer of a noisy target from moving the limit. Slow start
	// begins with one such round at a limit of 1: its median is the
	// unloaded latency the delay test compares with.
	minRoundAnswers = 5
	// congestedShare: a round counts as congested when more than this
	// share of its answers were overload signals. A lone 500 among many
	// answers (a bad payload, a bug) is not congestion; one refusal among
	// a handful of requests is.
	congestedShare = 0.1
)

// Config configures a Limiter.
type Config struct {
	// Ceiling is the most requests in flight the limiter ever allows: the
	// route's `concurrency`. At least 1.
	Ceiling int
	// Algorithm moves the limit after slow start. Nil means a fixed limit
	// at Ceiling (`adaptive_concurrency: false`).
	Algorithm Algorithm
	// IdleRestart is how long nothing may be in flight before the next
	// request restarts slow start. Zero means DefaultIdleRestart.
	IdleRestart time.Duration
	// Clock returns the current time. Nil means time.Now.
	Clock func() time.Time
}

// Round sums up one round trip's answers: from the moment a round starts
// until the first request sent after that moment is answered, which takes
// about one latency, and at least 5 answers are in (or an overload). Algorithms
// move the limit once per round, as TCP moves its window once per round
// trip.
type Round struct {
	// End is when the round ended.
	End time.Time
	// Answers counts Answered outcomes; Overloads counts Overloaded ones
	// that are news (not from requests sent before the last decrease).
	Answers, Overloads int
	// RTT is the median latency of the round's answers, MinRTT the lowest;
	// both are zero when nothing was answered.
	RTT, MinRTT time.Duration
	// MaxInFlight is the most requests in flight when any of the round's
	// requests was sent, that request included. A limit well above it was
	// not put to the test (the route had less work than the limit).
	MaxInFlight int
	// Congested is true when more than a tenth of the round's outcomes
	// were overload signals: the limit must come down.
	Congested bool
	// Samples are the latencies of the round's answers, in increasing
	// order. They are valid only during the call to Update.
	Samples []time.Duration
	// SlowStart is true while the limiter is in slow start.
	SlowStart bool
}

// Algorithm moves a limit once per round trip. Implementations are not
// safe for concurrent use; the Limiter serialises calls.
type Algorithm interface {
	// Name names the algorithm in tables and logs.
	Name() string
	// Update returns the new limit after round r, given the current one.
	// The Limiter clamps it to [1, ceiling]. In slow start Update is still
	// called, so that the algorithm sees the target's latency at low
	// concurrency, but its answer is used only when slow start ends.
	Update(limit float64, r Round) float64
	// Reset forgets what the algorithm learnt about the target, at a
	// restart.
	Reset()
}

// Token is one request's place under the limit. Release it exactly once.
type Token struct {
	seq      uint64
	inflight int
	ok       bool
}

// Stats is a snapshot of a Limiter, for the routes listing and metrics.
type Stats struct {
	// Limit is how many requests may be in flight now: the smaller of Own
	// and Cap.
	Limit int
	// Own is the limiter's own limit, what it would allow without Cap.
	Own int
	// Cap is the cap set from outside (the replica's share of the route's
	// fleet-wide concurrency); the ceiling until SetCap is called.
	Cap int
	// Ceiling is the route's `concurrency`.
	Ceiling int
	// InFlight is how many requests are in flight now; Waiting how many
	// callers of Acquire wait for a place.
	InFlight, Waiting int
	// Adaptive is false for a fixed limit.
	Adaptive bool
	// SlowStart is true while the limit is still doubling every round trip.
	SlowStart bool
	// Restarts counts restarts of slow start since the limiter was made.
	Restarts uint64
}

// Limiter caps the requests in flight to one target.
type Limiter struct {
	alg         Algorithm
	ceiling     float64
	idleRestart time.Duration
	now         func() time.Time

	mu          sync.Mutex
	limit       float64
	capped      int // SetCap's cap
	lastAttempt time.Time
	inflight    int
	next        uint64 // sequence number of the next request sent
	lastActive  time.Time
	slowStart   bool
	warmup      []time.Duration // answers to requests sent alone, in slow start
	ssBase      time.Duration   // their median: the unloaded latency
	recoverSeq  uint64          // overloads of requests sent before it are old news
	restarts    uint64
	round       round
	waiters     list.List // of *waiter, first come first served
}

type round struct {
	startSeq    uint64
	rtts        []time.Duration
	overloads   int
	maxInFlight int
}

type waiter struct {
	ready chan struct{} // closed once tok is granted
	tok   Token
}

// New returns a Limiter. With an Algorithm it starts in slow start at 1;
// without one it is a fixed limit at the ceiling.
func New(cfg Config) *Limiter {
	l := &Limiter{
		alg:         cfg.Algorithm,
		ceiling:     float64(max(cfg.Ceiling, 1)),
		idleRestart: cfg.IdleRestart,
		now:         cfg.Clock,
	}
	if l.idleRestart <= 0 {
		l.idleRestart = DefaultIdleRestart
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.limit = l.ceiling
	l.capped = int(l.ceiling)
	if l.alg != nil {
		l.restartLocked()
		l.restarts = 0
	}
	return l
}

// Restart starts slow start again from a limit of 1. Call it when what the
// limiter learnt no longer holds: the route's circuit breaker closed after
// an outage, or the route was resumed. It does nothing to a fixed limit.
func (l *Limiter) Restart() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.alg != nil {
		l.restartLocked()
	}
}

func (l *Limiter) restartLocked() {
	l.limit = 1
	l.slowStart = true
	l.warmup, l.ssBase = l.warmup[:0], 0
	l.restarts++
	l.round = round{startSeq: l.next}
	l.recoverSeq = l.next
	l.alg.Reset()
}

// TryAcquire takes a place under the limit if one is free now.
func (l *Limiter) TryAcquire() (Token, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiters.Len() > 0 {
		return Token{}, false // first come, first served
	}
	return l.tryAcquireLocked(l.now())
}

func (l *Limiter) tryAcquireLocked(now time.Time) (Token, bool) {
	l.lastAttempt = now
	if l.alg != nil && l.inflight == 0 && !l.lastActive.IsZero() && now.Sub(l.lastActive) >= l.idleRestart {
		l.restartLocked()
	}
	if l.inflight >= l.allowedLocked() {
		return Token{}, false
	}
	l.inflight++
	l.lastActive = now
	t := Token{seq: l.next, inflight: l.inflight, ok: true}
	l.next++
	return t, true
}

// Acquire takes a place under the limit, waiting at most wait for one, in
// the order callers arrived. It reports false when none came in time or ctx
// ended.
func (l *Limiter) Acquire(ctx context.Context, wait time.Duration) (Token, bool) {
	l.mu.Lock()
	if l.waiters.Len() == 0 {
		if t, ok := l.tryAcquireLocked(l.now()); ok {
			l.mu.Unlock()
			return t, true
		}
	}
	w := &waiter{ready: make(chan struct{})}
	e := l.waiters.PushBack(w)
	l.mu.Unlock()

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.ready:
		return w.tok, true
	case <-timer.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while timing out: the caller gets it after all.
		return w.tok, true
	default:
	}
	l.waiters.Remove(e)
	return Token{}, false
}

// grantLocked hands free places to waiters, first come first served.
func (l *Limiter) grantLocked(now time.Time) {
	for e := l.waiters.Front(); e != nil; e = l.waiters.Front() {
		t, ok := l.tryAcquireLocked(now)
		if !ok {
			return
		}
		w := l.waiters.Remove(e).(*waiter)
		w.tok = t
		close(w.ready)
	}
}

// Release gives the place back with the request's outcome. rtt is how long
// the target took to answer (the request alone, not the wait for a place).
func (l *Limiter) Release(t Token, rtt time.Duration, o Outcome) {
	if !t.ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.inflight--
	l.lastActive = now
	if l.alg != nil && o != Unsent {
		l.sampleLocked(t, rtt, o, now)
	}
	l.grantLocked(now)
}

func (l *Limiter) sampleLocked(t Token, rtt time.Duration, o Outcome, now time.Time) {
	r := &l.round
	r.maxInFlight = max(r.maxInFlight, t.inflight)
	switch {
	case o == Answered:
		r.rtts = append(r.rtts, rtt)
	case t.seq >= l.recoverSeq:
		r.overloads++
	}
	// A round ends with the first answer to a request sent in it (one
	// round trip), once it holds minRoundAnswers answers: at low limits a
	// round spans several round trips, so that one lucky or unlucky answer
	// does not move the limit. Congestion ends it at once, as a loss makes
	// TCP halve its window at once rather than a round trip later.
	if !(o == Overloaded && r.congested()) && (t.seq < r.startSeq || len(r.rtts) < minRoundAnswers) {
		return
	}
	l.endRoundLocked(now)
}

// congested reports whether more than congestedShare of the round's
// outcomes so far were overload signals.
func (r *round) congested() bool {
	return r.overloads > 0 && float64(r.overloads) > congestedShare*float64(r.overloads+len(r.rtts))
}

func (l *Limiter) endRoundLocked(now time.Time) {
	r := &l.round
	slices.Sort(r.rtts)
	out := Round{
		End: now, Answers: len(r.rtts), Overloads: r.overloads, MaxInFlight: r.maxInFlight,
		SlowStart: l.slowStart, Samples: r.rtts,
	}
	if len(r.rtts) > 0 {
		out.RTT, out.MinRTT = median(r.rtts), r.rtts[0]
	}
	out.Congested = r.congested()

	old := l.limit
	if l.capped >= 1 && old > float64(l.capped) {
		// The round ran under the cap (the replica's share of the fleet's
		// concurrency), not under the limiter's own limit: move from what
		// was in force, or a drop of latency must first halve away
		// headroom that was never used before it slows anything. A cap of
		// 0 (a lease lapsing) says nothing about the target.
		old = float64(l.capped)
	}
	limit := l.alg.Update(old, out)
	if l.slowStart {
		limit = l.slowStartLocked(old, limit, out)
	}
	l.limit = min(max(limit, 1), l.ceiling)
	if out.Congested && l.limit < old {
		l.recoverSeq = l.next
	}
	*r = round{startSeq: l.next, rtts: r.rtts[:0]}
}

// slowStartLocked is slow start's answer to round out: alg is the
// algorithm's. It first sends one request at a time until it knows the
// unloaded latency, then doubles the limit every round until a round is
// congested, its latency passes the unloaded one by slowStartExit, or the
// ceiling is reached; from then on the algorithm's answers count.
func (l *Limiter) slowStartLocked(old, alg float64, out Round) float64 {
	switch {
	case out.Congested:
		l.slowStart = false
		return alg
	case l.ssBase == 0:
		if out.MaxInFlight <= 1 {
			l.warmup = append(l.warmup, out.Samples...)
		}
		if len(l.warmup) >= minRoundAnswers {
			slices.Sort(l.warmup)
			l.ssBase = median(l.warmup)
			return 2
		}
		return 1
	case out.RTT > 0 && out.RTT > max(time.Duration(slowStartExit*float64(l.ssBase)), l.ssBase+Noise):
		l.slowStart = false
		return alg
	case 2*out.MaxInFlight < int(old):
		return old // not enough work to show that more would be fine
	case 2*old >= l.ceiling:
		l.slowStart = false
	}
	return 2 * old
}

// median returns the middle of sorted, which is not empty.
func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func (l *Limiter) ownLocked() int {
	return max(int(l.limit), 1)
}

func (l *Limiter) allowedLocked() int {
	return min(l.ownLocked(), l.capped)
}

// SetCap caps the limit from outside: with fleet-wide limits, the
// replica's share of the route's concurrency (its lease). The limit in
// force is the smaller of the limiter's own and the cap; a cap of 0 lets
// nothing be sent. Requests already in flight are not affected. A raised
// cap hands places to waiting callers at once.
func (l *Limiter) SetCap(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.capped = max(n, 0)
	l.grantLocked(l.now())
}

// Demand is what the limiter would use now: its own limit while it has
// requests in flight, callers waiting, or was asked for a place within
// recent; 0 when it has been idle that long. A fleet lease asks for this
// much of the route's concurrency.
func (l *Limiter) Demand(recent time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if l.inflight > 0 || l.waiters.Len() > 0 || (!l.lastAttempt.IsZero() && now.Sub(l.lastAttempt) < recent) {
		if l.alg != nil && l.inflight == 0 && !l.lastActive.IsZero() && now.Sub(l.lastActive) >= l.idleRestart {
			return 1 // the next request restarts slow start
		}
		return l.ownLocked()
	}
	return 0
}

// Limit returns how many requests may be in flight now.
func (l *Limiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allowedLocked()
}

// Stats returns a snapshot of the limiter.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{
		Limit: l.allowedLocked(), Own: l.ownLocked(), Cap: l.capped, Ceiling: int(l.ceiling),
		InFlight: l.inflight, Waiting: l.waiters.Len(),
		Adaptive: l.alg != nil, SlowStart: l.slowStart, Restarts: l.restarts,
	}
}
