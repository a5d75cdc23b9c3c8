package adaptive

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"time"
)

// This file is a deterministic discrete-event simulation of webhook-outbox's
// delivery workers against model targets, on a virtual clock: no goroutine
// sleeps, so every machine computes the same figures. It models what the
// delivery worker does once the limiter is wired in (phase two of issue 12):
//
//   - River: each replica runs 4 workers per place of the ceiling, fetching
//     due jobs every 20 ms (the configured fetch cooldown). A fetch uses an
//     attempt; a snooze gives it back. A failed attempt is retried after
//     initial_backoff × 2^(n-1), ±10%; after max_attempts it is a dead
//     letter.
//   - The limiter: a worker waits for a place, first come first served, at
//     most 5 s (today's slot wait), then snoozes the job 1-2 s.
//   - The fleet: a route's ceiling caps the requests in flight across
//     replicas (the leases of store/fleet.go, modelled as exact).
//   - The circuit breaker, one for the fleet, as jobs/breaker.go: it opens
//     after 5 failures in a row, holds new requests while failures plus
//     requests in flight reach 5, sends one probe after a 30 s cooldown that
//     doubles after each failed probe, and every limiter restarts slow start
//     when it closes.
//   - Loading the event takes 1 ms before the request, recording the outcome
//     2 ms after it; neither holds a place.

// des is the event loop: events run in time order, ties in the order they
// were scheduled.
type des struct {
	now time.Time
	q   eventQueue
	seq uint64
}

type event struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

func (d *des) at(t time.Time, fn func()) {
	d.seq++
	heap.Push(&d.q, &event{at: t, seq: d.seq, fn: fn})
}

func (d *des) after(dt time.Duration, fn func()) { d.at(d.now.Add(dt), fn) }

// run runs events until none is left, the horizon passes, or stop says so.
func (d *des) run(horizon time.Time, stop func() bool) {
	for d.q.Len() > 0 && !stop() {
		e := heap.Pop(&d.q).(*event)
		if e.at.After(horizon) {
			return
		}
		d.now = e.at
		e.fn()
	}
}

// simStart is the virtual clock's start: a multiple of every probe
// interval, like a real clock at a round second.
var simStart = time.Unix(1_800_000_000, 0)

// target is a model of the service deliveries go to. serve is called when
// a request arrives, with the requests in flight at the target counting
// this one; it returns how long the answer takes and whether it is a
// refusal or failure (a 503, a connection refused).
type target struct {
	name  string
	serve func(at time.Duration, inflight int, rng *rand.Rand) (time.Duration, bool)
}

// capacityTarget answers in base + per × in-flight, and refuses past
// capacity in flight at once with a fast 503: a service with a small
// database pool.
func capacityTarget(base, per time.Duration, capacity int) target {
	return target{
		name: fmt.Sprintf("%v + %v × in-flight, 503 past %d", base, per, capacity),
		serve: func(_ time.Duration, n int, _ *rand.Rand) (time.Duration, bool) {
			if n > capacity {
				return time.Millisecond, true
			}
			return base + per*time.Duration(n), false
		},
	}
}

// jumpTarget answers in base + per × in-flight, times factor for length
// every period (from offset on), and never refuses.
func jumpTarget(base, per time.Duration, factor float64, period, length, offset time.Duration) target {
	return target{
		name: fmt.Sprintf("%v + %v × in-flight, ×%g for %v every %v", base, per, factor, length, period),
		serve: func(at time.Duration, n int, rng *rand.Rand) (time.Duration, bool) {
			d := base + per*time.Duration(n)
			if inJump(at, period, length, offset) {
				d = time.Duration(float64(d) * factor)
			}
			return d, false
		},
	}
}

func inJump(at, period, length, offset time.Duration) bool {
	return at >= offset && (at-offset)%period < length
}

// noisy multiplies next's latency by a random factor in [1-spread, 1+spread].
func noisy(spread float64, next target) target {
	return target{
		name: fmt.Sprintf("%s, latency ±%.0f%%", next.name, spread*100),
		serve: func(at time.Duration, n int, rng *rand.Rand) (time.Duration, bool) {
			d, failed := next.serve(at, n, rng)
			if !failed {
				d = time.Duration(float64(d) * (1 - spread + 2*spread*rng.Float64()))
			}
			return d, failed
		},
	}
}

// outageTarget refuses every connection until recovery, then is next.
func outageTarget(recovery time.Duration, next target) target {
	return target{
		name: fmt.Sprintf("down for %v, then %s", recovery, next.name),
		serve: func(at time.Duration, n int, rng *rand.Rand) (time.Duration, bool) {
			if at < recovery {
				return time.Millisecond, true
			}
			return next.serve(at, n, rng)
		},
	}
}

// simConfig is one simulated run.
type simConfig struct {
	target   target
	alg      func() Algorithm // nil: a fixed limit at the ceiling, as today
	replicas int
	ceiling  int
	events   int
	horizon  time.Duration
	seed     uint64
}

// simResult is what a run measured.
type simResult struct {
	delivered, dead, requests, refused int
	drained                            time.Duration // when the last event was delivered or dead; 0 if not all were
	end                                time.Duration // when the run ended: drained, or the horizon
	maxInFlight                        int           // at the target
	timeToCeiling                      time.Duration // replica 0's limit first at the ceiling; 0 if never
	breakerOpened                      int
	// inflight is the target's in-flight count over time, as steps.
	inflight []step
	// limits is replica 0's limit over time, as steps.
	limits []step
	// sent records when each request was sent.
	sent []time.Duration
	// refusedAt records when each refused request was answered.
	refusedAt   []time.Duration
	finalLimits []int
}

type step struct {
	at time.Duration
	v  int
}

// average is the time-weighted mean of steps over [from, to).
func average(steps []step, from, to time.Duration) float64 {
	var area float64
	v := 0
	last := from
	for _, s := range steps {
		if s.at >= to {
			break
		}
		if s.at > last {
			area += float64(v) * float64(s.at-last)
			last = s.at
		}
		v = s.v
	}
	area += float64(v) * float64(to-last)
	return area / float64(to-from)
}

// maxIn is the highest step value within [from, to).
func maxIn(steps []step, from, to time.Duration) int {
	m, v := 0, 0
	for _, s := range steps {
		if s.at >= to {
			break
		}
		if s.at >= from {
			m = max(m, v)
		}
		v = s.v
	}
	return max(m, v)
}

// timeAbove is the share of [from, to) during which steps exceed v.
func timeAbove(steps []step, v int, from, to time.Duration) float64 {
	above := make([]step, len(steps))
	for i, s := range steps {
		above[i] = s
		above[i].v = 0
		if s.v > v {
			above[i].v = 1
		}
	}
	return average(above, from, to)
}

func countIn(ts []time.Duration, from, to time.Duration) int {
	n := 0
	for _, t := range ts {
		if t >= from && t < to {
			n++
		}
	}
	return n
}

// Delivery settings: the route defaults, as the targets assume.
const (
	simMaxAttempts    = 10
	simInitialBackoff = 2 * time.Second
	simMaxBackoff     = time.Hour
	simTimeout        = 10 * time.Second
	simSlotWait       = 5 * time.Second
	simFetchCooldown  = 20 * time.Millisecond
	simLoad           = time.Millisecond
	simRecord         = 2 * time.Millisecond
	simWorkersPerSlot = 4
	simBreakerFails   = 5
	simBreakerCool    = 30 * time.Second
	simBreakerMaxCool = 5 * time.Minute
)

type simJob struct {
	id          int
	attempt     int
	availableAt time.Time
}

type jobQueue []*simJob

func (q jobQueue) Len() int { return len(q) }
func (q jobQueue) Less(i, j int) bool {
	if !q[i].availableAt.Equal(q[j].availableAt) {
		return q[i].availableAt.Before(q[j].availableAt)
	}
	return q[i].id < q[j].id
}
func (q jobQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *jobQueue) Push(x any)   { *q = append(*q, x.(*simJob)) }
func (q *jobQueue) Pop() any {
	old := *q
	j := old[len(old)-1]
	*q = old[:len(old)-1]
	return j
}

type simReplica struct {
	lim     *Limiter
	idle    int
	waiting []*simWaiter
}

type simWaiter struct {
	job  *simJob
	done bool
}

// simBreaker is jobs/breaker.go's logic, shared by the fleet.
type simBreaker struct {
	state       string
	consecutive int
	inflight    int
	generation  uint64
	cooldown    time.Duration
	openUntil   time.Time
	probing     bool
	opened      int
	onClose     func()
}

type simPermit struct {
	ok, probe  bool
	generation uint64
	wait       time.Duration
}

func (b *simBreaker) allow(now time.Time, rng *rand.Rand) simPermit {
	if b.state == "open" {
		if now.Before(b.openUntil) {
			spread := min(b.cooldown/10, 5*time.Second)
			return simPermit{wait: b.openUntil.Sub(now) + randDur(rng, spread+1)}
		}
		b.set("half-open")
	}
	if b.state == "half-open" {
		if b.probing {
			return simPermit{wait: time.Second + randDur(rng, time.Second)}
		}
		b.probing = true
		return simPermit{ok: true, probe: true, generation: b.generation}
	}
	if b.consecutive > 0 && b.consecutive+b.inflight >= simBreakerFails {
		return simPermit{wait: time.Second + randDur(rng, time.Second)}
	}
	b.inflight++
	return simPermit{ok: true, generation: b.generation}
}

func (b *simBreaker) record(p simPermit, failed bool, now time.Time) {
	if p.generation != b.generation {
		return
	}
	if p.probe {
		b.probing = false
		if !failed {
			b.cooldown = simBreakerCool
			b.set("closed")
			b.onClose()
			return
		}
		b.cooldown = min(2*b.cooldown, simBreakerMaxCool)
		b.open(now)
		return
	}
	b.inflight--
	if !failed {
		b.consecutive = 0
		return
	}
	b.consecutive++
	if b.consecutive >= simBreakerFails {
		b.cooldown = simBreakerCool
		b.open(now)
	}
}

func (b *simBreaker) open(now time.Time) {
	b.openUntil = now.Add(b.cooldown)
	b.opened++
	b.set("open")
}

func (b *simBreaker) set(s string) {
	b.state = s
	b.generation++
	b.consecutive, b.inflight, b.probing = 0, 0, false
}

// simulate runs one configuration to its end.
func simulate(cfg simConfig) simResult {
	d := &des{now: simStart}
	rng := rand.New(rand.NewPCG(cfg.seed, 42))
	var res simResult
	since := func() time.Duration { return d.now.Sub(simStart) }

	replicas := make([]*simReplica, cfg.replicas)
	for i := range replicas {
		var alg Algorithm
		if cfg.alg != nil {
			alg = cfg.alg()
		}
		replicas[i] = &simReplica{
			lim:  New(Config{Ceiling: cfg.ceiling, Algorithm: alg, Clock: func() time.Time { return d.now }}),
			idle: simWorkersPerSlot * cfg.ceiling,
		}
	}
	br := &simBreaker{state: "closed", cooldown: simBreakerCool}
	br.onClose = func() {
		for _, r := range replicas {
			r.lim.Restart()
		}
	}

	queue := &jobQueue{}
	for i := range cfg.events {
		heap.Push(queue, &simJob{id: i, availableAt: simStart})
	}
	finished := 0
	fleetInFlight := 0 // places held across replicas: the fleet lease
	targetInFlight := 0
	lastLimit := -1
	trackLimit := func() {
		if l := replicas[0].lim.Limit(); l != lastLimit {
			lastLimit = l
			res.limits = append(res.limits, step{since(), l})
			if l == cfg.ceiling && res.timeToCeiling == 0 && cfg.alg != nil {
				res.timeToCeiling = since()
			}
		}
	}
	trackLimit()
	setTarget := func(delta int) {
		targetInFlight += delta
		res.maxInFlight = max(res.maxInFlight, targetInFlight)
		res.inflight = append(res.inflight, step{since(), targetInFlight})
	}
	finish := func(r *simReplica, dead bool) {
		finished++
		if dead {
			res.dead++
		} else {
			res.delivered++
		}
		if finished == cfg.events {
			res.drained = since()
		}
		r.idle++
	}
	snooze := func(r *simReplica, j *simJob, wait time.Duration) {
		j.attempt-- // a snooze gives the attempt back
		j.availableAt = d.now.Add(wait)
		heap.Push(queue, j)
		r.idle++
	}

	var tryGrant func()
	var send func(r *simReplica, j *simJob, tok Token)

	acquire := func(r *simReplica) (Token, bool) {
		if fleetInFlight >= cfg.ceiling {
			return Token{}, false
		}
		tok, ok := r.lim.TryAcquire()
		if ok {
			fleetInFlight++
		}
		return tok, ok
	}
	release := func(r *simReplica, tok Token, rtt time.Duration, o Outcome) {
		r.lim.Release(tok, rtt, o)
		fleetInFlight--
		trackLimit()
		tryGrant()
	}
	// tryGrant hands free places to waiting workers, first come first
	// served on each replica.
	tryGrant = func() {
		for _, r := range replicas {
			for len(r.waiting) > 0 {
				w := r.waiting[0]
				if w.done {
					r.waiting = r.waiting[1:]
					continue
				}
				tok, ok := acquire(r)
				if !ok {
					break
				}
				r.waiting = r.waiting[1:]
				w.done = true
				send(r, w.job, tok)
			}
		}
	}

	send = func(r *simReplica, j *simJob, tok Token) {
		p := br.allow(d.now, rng)
		if !p.ok {
			release(r, tok, 0, Unsent)
			snooze(r, j, p.wait)
			return
		}
		d.after(simLoad, func() {
			setTarget(+1)
			res.requests++
			res.sent = append(res.sent, since())
			latency, failed := cfg.target.serve(since(), targetInFlight, rng)
			if latency > simTimeout {
				latency, failed = simTimeout, true
			}
			d.after(latency, func() {
				setTarget(-1)
				o := Answered
				if failed {
					o = Overloaded
					res.refused++
					res.refusedAt = append(res.refusedAt, since())
				}
				release(r, tok, latency, o)
				br.record(p, failed, d.now)
				if !failed {
					d.after(simRecord, func() { finish(r, false) })
					return
				}
				d.after(simRecord, func() {
					if j.attempt >= simMaxAttempts {
						finish(r, true)
						return
					}
					backoff := min(simInitialBackoff<<(j.attempt-1), simMaxBackoff)
					jitter := time.Duration((rng.Float64()*0.2 - 0.1) * float64(backoff))
					j.availableAt = d.now.Add(backoff + jitter)
					heap.Push(queue, j)
					r.idle++
				})
			})
		})
	}

	start := func(r *simReplica, j *simJob) {
		j.attempt++
		for len(r.waiting) > 0 && r.waiting[0].done {
			r.waiting = r.waiting[1:]
		}
		if len(r.waiting) == 0 {
			if tok, ok := acquire(r); ok {
				send(r, j, tok)
				return
			}
		}
		w := &simWaiter{job: j}
		r.waiting = append(r.waiting, w)
		d.after(simSlotWait, func() {
			if w.done {
				return
			}
			w.done = true
			snooze(r, j, time.Second+randDur(rng, time.Second))
		})
	}

	// River's producers: each replica fetches due jobs for its idle
	// workers every fetch cooldown, offset so they do not fetch in
	// lockstep.
	var fetch func(r *simReplica)
	fetch = func(r *simReplica) {
		for r.idle > 0 && queue.Len() > 0 && !(*queue)[0].availableAt.After(d.now) {
			j := heap.Pop(queue).(*simJob)
			r.idle--
			start(r, j)
		}
		trackLimit()
		if finished < cfg.events {
			d.after(simFetchCooldown, func() { fetch(r) })
		}
	}
	for i, r := range replicas {
		d.after(time.Duration(i)*7*time.Millisecond, func() { fetch(r) })
	}

	d.run(simStart.Add(cfg.horizon), func() bool { return finished == cfg.events })
	res.breakerOpened = br.opened
	res.end = min(since(), cfg.horizon)
	for _, r := range replicas {
		res.finalLimits = append(res.finalLimits, r.lim.Limit())
	}
	return res
}

// randDur is a uniform duration in [0, d).
func randDur(rng *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rng.Int64N(int64(d)))
}
