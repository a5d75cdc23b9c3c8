package adaptive

import (
	"math"
	"slices"
	"time"
)

// appLimited reports whether a round did not put the limit to the test:
// fewer than half of the limit's places were ever in use. Netflix's
// algorithms refuse to grow then, or the limit would drift to the ceiling
// on a trickle of work and mean nothing when a backlog arrives.
func appLimited(limit float64, r Round) bool {
	return float64(2*r.MaxInFlight) < limit
}

// AIMD is additive increase, multiplicative decrease, as TCP Reno and
// Netflix's AIMDLimit: one more place per round trip while nothing is
// refused, Backoff times the limit on a congested round. It ignores
// latency, so it finds a target's capacity only by going past it.
type AIMD struct {
	// Backoff multiplies the limit on a congested round; Netflix's default
	// is 0.9.
	Backoff float64
}

// NewAIMD returns AIMD with Netflix's default backoff.
func NewAIMD() *AIMD { return &AIMD{Backoff: 0.9} }

// Name implements Algorithm.
func (a *AIMD) Name() string { return "aimd" }

// Reset implements Algorithm.
func (a *AIMD) Reset() {}

// Update implements Algorithm.
func (a *AIMD) Update(limit float64, r Round) float64 {
	switch {
	case r.Congested:
		return min(limit-1, limit*a.Backoff) // Netflix: at least one less
	case appLimited(limit, r):
		return limit
	}
	return limit + 1
}

// Vegas is TCP Vegas (Brakmo and Peterson), as Netflix's VegasLimit
// applies it to concurrency: it estimates how many requests wait in the
// target's queue, limit × (1 − baseRTT/RTT), and keeps that between Alpha
// and Beta, moving by one place per round trip. baseRTT is the lowest
// latency seen; like Netflix's, it is reset to the current latency now and
// then (every 30 × limit answers or so), so that it can follow a target
// that became slower for good.
type Vegas struct {
	// Alpha and Beta bound the estimated queue (TCP Vegas: 2 and 4).
	Alpha, Beta float64
	// Backoff multiplies the limit on a congested round (TCP Vegas falls
	// back to Reno's loss response; 0.75 here).
	Backoff float64
	// ProbeMultiplier sets how often baseRTT is reset: after about
	// ProbeMultiplier × limit answers (Netflix's default is 30).
	ProbeMultiplier float64

	base    time.Duration
	answers int
	probeAt float64
	n       uint64 // deterministic jitter source
}

// NewVegas returns Vegas with TCP Vegas's thresholds.
func NewVegas() *Vegas { return &Vegas{Alpha: 2, Beta: 4, Backoff: 0.75, ProbeMultiplier: 30} }

// Name implements Algorithm.
func (v *Vegas) Name() string { return "vegas" }

// Reset implements Algorithm.
func (v *Vegas) Reset() { v.base, v.answers, v.probeAt = 0, 0, 0 }

// Update implements Algorithm.
func (v *Vegas) Update(limit float64, r Round) float64 {
	if r.Congested {
		return limit * v.Backoff
	}
	if r.RTT == 0 {
		return limit
	}
	v.answers += r.Answers
	if v.probeAt == 0 {
		// Netflix draws the jitter at random in [0.5, 1); a fixed sequence
		// keeps the simulation reproducible.
		v.n++
		v.probeAt = (0.5 + 0.5*frac(float64(v.n)*0.618034)) * v.ProbeMultiplier * limit
	}
	if float64(v.answers) >= v.probeAt {
		v.base, v.answers, v.probeAt = r.RTT, 0, 0
		return limit
	}
	if v.base == 0 || r.MinRTT < v.base {
		v.base = r.MinRTT
	}
	if appLimited(limit, r) {
		return limit
	}
	queue := limit * (1 - float64(v.base)/float64(r.RTT))
	switch {
	case queue < v.Alpha:
		return limit + 1
	case queue > v.Beta:
		return limit - 1
	}
	return limit
}

func frac(x float64) float64 { return x - math.Floor(x) }

// Gradient2 is Netflix's Gradient2Limit: it compares the round's latency
// with a long-term average of latency (an exponential average over
// LongWindow answers), and grows by QueueSize per round while the two
// agree: gradient = clamp(longRTT/RTT, 0.5, 1); limit = limit × gradient +
// QueueSize, smoothed. Netflix's version ignores errors; this one also
// backs off on a congested round, as the issue requires. Because the long
// average follows the latency up, it reacts to changes of latency, not to
// their level.
type Gradient2 struct {
	// QueueSize is how much the limit may grow per round while latency is
	// steady (Netflix's default is 4).
	QueueSize float64
	// Smoothing weighs a new estimate against the current limit (0.2).
	Smoothing float64
	// LongWindow is the number of answers the long-term average spans
	// (600).
	LongWindow int
	// Backoff multiplies the limit on a congested round (0.9).
	Backoff float64

	long    float64
	samples int
}

// NewGradient2 returns Gradient2 with Netflix's defaults.
func NewGradient2() *Gradient2 {
	return &Gradient2{QueueSize: 4, Smoothing: 0.2, LongWindow: 600, Backoff: 0.9}
}

// Name implements Algorithm.
func (g *Gradient2) Name() string { return "gradient2" }

// Reset implements Algorithm.
func (g *Gradient2) Reset() { g.long, g.samples = 0, 0 }

// Update implements Algorithm.
func (g *Gradient2) Update(limit float64, r Round) float64 {
	if r.Congested {
		return limit * g.Backoff
	}
	if r.RTT == 0 {
		return limit
	}
	short := float64(r.RTT)
	// Netflix's ExpAvgMeasurement: a plain average over the first ten
	// answers, then an exponential one.
	for range r.Answers {
		g.samples++
		if g.samples <= 10 {
			g.long += (short - g.long) / float64(g.samples)
		} else {
			g.long += (short - g.long) * 2 / float64(g.LongWindow+1)
		}
	}
	if g.long/short > 2 {
		g.long *= 0.9 // latency came back down after a long spell of load
	}
	if appLimited(limit, r) {
		return limit
	}
	gradient := max(0.5, min(1, g.long/short))
	next := limit*gradient + g.QueueSize
	return limit*(1-g.Smoothing) + next*g.Smoothing
}

// Gradient is the chosen algorithm: a latency gradient against a
// periodically measured unloaded latency, as Envoy's adaptive concurrency
// filter, with TCP's additive increase and multiplicative decrease around
// it, and BBR's way of keeping the baseline.
//
//   - Gradient. Each round compares its median latency with the baseline,
//     the latency the target shows when it is not loaded: gradient =
//     clamp(max(Tolerance × baseline, baseline + Noise) / RTT, 0.5, 2).
//     Above 1 the limit grows, by at most one place per round (TCP's
//     congestion avoidance: slow start did the fast part); below 1 it
//     shrinks in proportion, so it settles where the target answers in
//     Tolerance × its unloaded latency (or that plus Noise, for a target
//     so fast that the sender's own jitter is larger).
//   - Errors. A congested round multiplies the limit by Backoff (0.5, TCP
//     Reno's halving); the Limiter takes care that one overshoot halves it
//     only once.
//   - Baseline. The baseline is the lower median of the records of the
//     last BaselineWindow; a record is the median of BaselineAnswers answers
//     to requests sent alone. Slow start begins with one. Every
//     ProbeInterval the limit drops to 1 until BaselineAnswers answers have
//     measured the unloaded latency again (Envoy's minRTT window, BBR's
//     ProbeRTT), then returns where it was; a limit stuck at 1 for 5 rounds
//     makes a record too (Envoy measures again after 5 windows at its
//     minimum), so a baseline measured too low on a noisy target is
//     outvoted in a few rounds. Probes start on wall-clock multiples of
//     ProbeInterval, so that several replicas limiting the same target probe
//     it together and see it as unloaded as they can make it. A rise of
//     latency shorter than about half of BaselineWindow stays a rise to back
//     off from; one that lasts longer becomes the target's new normal, whose
//     capacity the limit then looks for.
//
// With Envoy set, the law is Envoy's own instead: limit × gradient plus a
// headroom of its square root, with no cap on growth.
type Gradient struct {
	// Tolerance is how far above the baseline latency may rise before the
	// limit shrinks (1.5).
	Tolerance float64
	// Backoff multiplies the limit on a congested round (0.5).
	Backoff float64
	// ProbeInterval is how often the unloaded latency is measured (10 s).
	ProbeInterval time.Duration
	// BaselineWindow is how long a record counts (30 s). It must be more
	// than twice ProbeInterval, so that it always holds a probe.
	BaselineWindow time.Duration
	// BaselineAnswers is how many answers a record takes the median of (5).
	BaselineAnswers int
	// Envoy selects Envoy's law: square-root headroom, uncapped growth.
	Envoy bool

	records    []record
	alone      []time.Duration // answers to requests sent alone, towards a record
	probing    bool
	probeFrom  float64
	lastRecord time.Time
}

type record struct {
	at  time.Time
	rtt time.Duration
}

// NewGradient returns the chosen algorithm with its defaults.
func NewGradient() *Gradient {
	return &Gradient{
		Tolerance: 1.5, Backoff: 0.5, ProbeInterval: 10 * time.Second, BaselineWindow: 30 * time.Second,
		BaselineAnswers: minRoundAnswers,
	}
}

// NewEnvoyGradient returns Envoy's gradient law (tolerance 1.25, its
// default buffer of a quarter; square-root headroom) with the same
// baseline and error handling, for comparison.
func NewEnvoyGradient() *Gradient {
	g := NewGradient()
	g.Tolerance, g.Envoy = 1.25, true
	return g
}

// Name implements Algorithm.
func (g *Gradient) Name() string {
	if g.Envoy {
		return "envoy-gradient"
	}
	return "gradient"
}

// Reset implements Algorithm.
func (g *Gradient) Reset() {
	g.records, g.alone, g.probing, g.probeFrom, g.lastRecord = g.records[:0], g.alone[:0], false, 0, time.Time{}
}

// Baseline returns the latency the limit is measured against: the lower
// median of the records, so that neither one lucky measurement nor one
// taken during a brief latency spike decides it; zero until the first
// record.
func (g *Gradient) Baseline() time.Duration {
	if len(g.records) == 0 {
		return 0
	}
	rtts := make([]time.Duration, len(g.records))
	for i, rec := range g.records {
		rtts[i] = rec.rtt
	}
	slices.Sort(rtts)
	return rtts[(len(rtts)-1)/2]
}

func (g *Gradient) addRecord(at time.Time, rtt time.Duration) {
	keep := g.records[:0]
	for _, rec := range g.records {
		if at.Sub(rec.at) < g.BaselineWindow {
			keep = append(keep, rec)
		}
	}
	g.records = append(keep, record{at: at, rtt: rtt})
	g.lastRecord = at
}

// probeDue reports whether the baseline is stale at now: no record for
// ProbeInterval, and now is past the next wall-clock multiple of it.
func (g *Gradient) probeDue(now time.Time) bool {
	if g.lastRecord.IsZero() {
		return false
	}
	due := g.lastRecord.Add(g.ProbeInterval)
	aligned := due.Truncate(g.ProbeInterval)
	if aligned.Before(due) {
		aligned = aligned.Add(g.ProbeInterval)
	}
	return !now.Before(aligned)
}

// stuckRounds is how many rounds in a row of requests sent alone make a
// record outside a probe. At a limit of 1 the limiter cannot tell a
// baseline measured too low from a target that became slower; Envoy then
// measures again after 5 windows at its minimum, and so does Gradient.
const stuckRounds = 2

// Update implements Algorithm.
func (g *Gradient) Update(limit float64, r Round) float64 {
	if r.MaxInFlight > 1 || len(r.Samples) == 0 {
		g.alone = g.alone[:0]
	} else {
		g.alone = append(g.alone, r.Samples...)
		need := stuckRounds * g.BaselineAnswers
		if g.probing || len(g.records) == 0 {
			need = g.BaselineAnswers
		}
		if len(g.alone) >= need {
			slices.Sort(g.alone)
			g.addRecord(r.End, median(g.alone))
			g.alone = g.alone[:0]
			if g.probing {
				g.probing = false
				return g.probeFrom
			}
		}
	}
	if g.probing {
		if r.Congested {
			g.probing = false
			return g.probeFrom * g.Backoff
		}
		return 1
	}
	if r.Congested {
		return limit * g.Backoff
	}
	base := g.Baseline()
	if r.RTT == 0 || base == 0 {
		return limit
	}
	if !r.SlowStart && g.probeDue(r.End) {
		g.probing, g.probeFrom, g.alone = true, limit, g.alone[:0]
		return 1
	}
	allowed := float64(base) * g.Tolerance
	if !g.Envoy {
		allowed = max(allowed, float64(base+Noise))
	}
	gradient := max(0.5, min(2, allowed/float64(r.RTT)))
	next := limit * gradient
	if g.Envoy {
		next += math.Sqrt(next)
	} else {
		next = min(next, limit+1)
	}
	if next > limit && appLimited(limit, r) {
		return limit
	}
	return next
}
