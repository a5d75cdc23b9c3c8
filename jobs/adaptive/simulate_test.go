package adaptive

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// candidates are the algorithms the simulation compares; nil is today's
// fixed limit at the ceiling.
var candidates = []struct {
	name string
	alg  func() Algorithm
}{
	{"fixed (today)", nil},
	{"aimd", func() Algorithm { return NewAIMD() }},
	{"vegas", func() Algorithm { return NewVegas() }},
	{"gradient2", func() Algorithm { return NewGradient2() }},
	{"envoy-gradient", func() Algorithm { return NewEnvoyGradient() }},
	{"gradient, tolerance 1.25", func() Algorithm { g := NewGradient(); g.Tolerance = 1.25; return g }},
	{"gradient, tolerance 2", func() Algorithm { g := NewGradient(); g.Tolerance = 2; return g }},
	{chosen, func() Algorithm { return NewGradient() }},
}

// chosen names the algorithm New uses by default.
const chosen = "gradient (chosen)"

// The capacity target: 20 ms + 10 ms × in-flight, 503 past 6 in
// flight. Its best throughput without refusals is 6 in flight at 80 ms:
// 75 deliveries/s, so 400 events take about 5.3 s.
var (
	capTarget  = capacityTarget(20*time.Millisecond, 10*time.Millisecond, 6)
	capIdeal   = 400 * time.Second / 75
	jumpPeriod = 20 * time.Second
	jumpLength = 5 * time.Second
	jumpOffset = 15 * time.Second
)

type scenario struct {
	name, about string
	cfg         simConfig
	header      []string
	row         func(r simResult) []string
}

func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func ratio(d, ideal time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", d.Seconds()/ideal.Seconds())
}

func secs(d time.Duration) string {
	if d == 0 {
		return "not done in 10 min"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// jumps returns the target's mean in-flight in the 5 s before each jump
// and during it, for the jumps that fit in horizon.
func jumps(r simResult, horizon time.Duration) (before, during []float64) {
	for s := jumpOffset; s+jumpLength <= horizon; s += jumpPeriod {
		before = append(before, average(r.inflight, s-jumpLength, s))
		during = append(during, average(r.inflight, s, s+jumpLength))
	}
	return before, during
}

// outage scenario: the target refuses connections for 40 s, then is the
// capacity target.
const outageEnd = 40 * time.Second

func firstAnswerAfter(r simResult, t time.Duration) time.Duration {
	for _, s := range r.sent {
		if s >= t && countIn(r.refusedAt, s, s+time.Millisecond+time.Millisecond/2) == 0 {
			return s
		}
	}
	return 0
}

var scenarios = []scenario{
	{
		name:  "capacity",
		about: "1 replica, concurrency 32, 400 queued events; target " + capTarget.name + "; ideal drain ≈ " + secs(capIdeal),
		cfg:   simConfig{target: capTarget, replicas: 1, ceiling: 32, events: 400, horizon: 10 * time.Minute},
		header: []string{
			"delivered", "dead", "drain", "× ideal", "deliveries/s", "requests", "refused", "max in flight", "breaker opened",
		},
		row: func(r simResult) []string {
			return []string{
				fmt.Sprint(r.delivered), fmt.Sprint(r.dead), secs(r.drained),
				ratio(r.drained, capIdeal),
				fmt.Sprintf("%.0f", float64(r.delivered)/r.drained.Seconds()),
				fmt.Sprint(r.requests), pct(r.refused, r.requests), fmt.Sprint(r.maxInFlight), fmt.Sprint(r.breakerOpened),
			}
		},
	},
	{
		name:  "capacity, noisy",
		about: "the same with each answer's latency multiplied by a random factor in [0.5, 1.5]",
		cfg:   simConfig{target: noisy(0.5, capTarget), replicas: 1, ceiling: 32, events: 400, horizon: 10 * time.Minute},
		header: []string{
			"delivered", "dead", "drain", "× ideal", "requests", "refused", "max in flight", "mean in flight", "breaker opened",
		},
		row: func(r simResult) []string {
			return []string{
				fmt.Sprint(r.delivered), fmt.Sprint(r.dead), secs(r.drained),
				ratio(r.drained, capIdeal),
				fmt.Sprint(r.requests), pct(r.refused, r.requests), fmt.Sprint(r.maxInFlight),
				fmt.Sprintf("%.1f", average(r.inflight, 0, r.end)), fmt.Sprint(r.breakerOpened),
			}
		},
	},
	{
		name:  "flat, refusing",
		about: "1 replica, concurrency 32, 400 queued events; target 20 ms flat, 503 past 6 in flight (no latency signal at all)",
		cfg:   simConfig{target: capacityTarget(20*time.Millisecond, 0, 6), replicas: 1, ceiling: 32, events: 400, horizon: 10 * time.Minute},
		header: []string{
			"delivered", "dead", "drain", "requests", "refused", "max in flight", "mean in flight", "breaker opened",
		},
		row: func(r simResult) []string {
			return []string{
				fmt.Sprint(r.delivered), fmt.Sprint(r.dead), secs(r.drained),
				fmt.Sprint(r.requests), pct(r.refused, r.requests), fmt.Sprint(r.maxInFlight),
				fmt.Sprintf("%.1f", average(r.inflight, 0, r.end)), fmt.Sprint(r.breakerOpened),
			}
		},
	},
	{
		name:  "replicas, long",
		about: "3 replicas, fleet concurrency 32, 3,000 queued events, noisy capacity target (±50%)",
		cfg:   simConfig{target: noisy(0.5, capTarget), replicas: 3, ceiling: 32, events: 3000, horizon: 10 * time.Minute},
		header: []string{
			"delivered", "dead", "drain", "× ideal", "requests", "refused", "max in flight", "mean in flight", "time over 6", "breaker opened",
		},
		row: func(r simResult) []string {
			return []string{
				fmt.Sprint(r.delivered), fmt.Sprint(r.dead), secs(r.drained),
				ratio(r.drained, capIdeal*3000/400),
				fmt.Sprint(r.requests), pct(r.refused, r.requests), fmt.Sprint(r.maxInFlight),
				fmt.Sprintf("%.1f", average(r.inflight, 0, r.end)),
				fmt.Sprintf("%.0f%%", 100*timeAbove(r.inflight, 6, 0, r.end)), fmt.Sprint(r.breakerOpened),
			}
		},
	},
	{
		name:  "replicas",
		about: "3 replicas, fleet concurrency 32, 400 queued events, same target",
		cfg:   simConfig{target: capTarget, replicas: 3, ceiling: 32, events: 400, horizon: 10 * time.Minute},
		header: []string{
			"delivered", "dead", "drain", "× ideal", "requests", "refused", "max in flight", "mean in flight", "time over 6", "breaker opened",
		},
		row: func(r simResult) []string {
			return []string{
				fmt.Sprint(r.delivered), fmt.Sprint(r.dead), secs(r.drained),
				ratio(r.drained, capIdeal),
				fmt.Sprint(r.requests), pct(r.refused, r.requests), fmt.Sprint(r.maxInFlight),
				fmt.Sprintf("%.1f", average(r.inflight, 0, r.end)),
				fmt.Sprintf("%.0f%%", 100*timeAbove(r.inflight, 6, 0, r.end)), fmt.Sprint(r.breakerOpened),
			}
		},
	},
	{
		name:  "jumps",
		about: "1 replica, concurrency 32, a backlog; target latency ×10 for 5 s every 20 s (from 15 s); mean in-flight 5 s before each jump → during it",
		cfg: simConfig{
			target:   jumpTarget(50*time.Millisecond, 500*time.Microsecond, 10, jumpPeriod, jumpLength, jumpOffset),
			replicas: 1, ceiling: 32, events: 100_000, horizon: 61 * time.Second,
		},
		header: []string{"jump 1", "jump 2", "jump 3", "delivered in 61 s", "requests"},
		row: func(r simResult) []string {
			before, during := jumps(r, 61*time.Second)
			out := []string{}
			for i := range before {
				out = append(out, fmt.Sprintf("%.1f → %.1f", before[i], during[i]))
			}
			return append(out, fmt.Sprint(r.delivered), fmt.Sprint(r.requests))
		},
	},
	{
		name:  "healthy",
		about: "1 replica, concurrency 32, 10,000 queued events; target 5 ms flat, no capacity limit",
		cfg: simConfig{
			target:   capacityTarget(5*time.Millisecond, 0, 1000),
			replicas: 1, ceiling: 32, events: 10_000, horizon: 10 * time.Minute,
		},
		header: []string{"time to ceiling", "drain", "deliveries/s"},
		row: func(r simResult) []string {
			ttc := "-"
			if r.timeToCeiling > 0 {
				ttc = fmt.Sprintf("%.0f ms", float64(r.timeToCeiling)/float64(time.Millisecond))
			}
			return []string{ttc, secs(r.drained), fmt.Sprintf("%.0f", float64(r.delivered)/r.drained.Seconds())}
		},
	},
	{
		name:  "healthy, noisy",
		about: "the same with each answer's latency multiplied by a random factor in [0.5, 1.5]",
		cfg: simConfig{
			target:   noisy(0.5, capacityTarget(5*time.Millisecond, 0, 1000)),
			replicas: 1, ceiling: 32, events: 10_000, horizon: 10 * time.Minute,
		},
		header: []string{"time to ceiling", "drain", "deliveries/s", "mean limit"},
		row: func(r simResult) []string {
			ttc := "-"
			if r.timeToCeiling > 0 {
				ttc = fmt.Sprintf("%.0f ms", float64(r.timeToCeiling)/float64(time.Millisecond))
			}
			return []string{ttc, secs(r.drained), fmt.Sprintf("%.0f", float64(r.delivered)/r.drained.Seconds()),
				fmt.Sprintf("%.1f", average(r.limits, 0, r.drained))}
		},
	},
	{
		name:  "outage",
		about: "1 replica, concurrency 32, 400 queued events; target refuses connections for 40 s, then is the capacity target; with the breaker",
		cfg: simConfig{
			target:   outageTarget(outageEnd, capTarget),
			replicas: 1, ceiling: 32, events: 400, horizon: 20 * time.Minute,
		},
		header: []string{
			"requests in outage", "first answer", "refused after", "max in flight after", "breaker opened", "drain after first answer", "dead",
		},
		row: func(r simResult) []string {
			first := firstAnswerAfter(r, outageEnd)
			return []string{
				fmt.Sprint(countIn(r.sent, 0, outageEnd)), secs(first),
				pct(countIn(r.refusedAt, outageEnd, time.Hour), countIn(r.sent, outageEnd, time.Hour)),
				fmt.Sprint(maxIn(r.inflight, outageEnd, time.Hour)), fmt.Sprint(r.breakerOpened),
				secs(r.drained - first), fmt.Sprint(r.dead),
			}
		},
	},
}

// runAll simulates every scenario with every candidate.
func runAll() map[string]map[string]simResult {
	out := map[string]map[string]simResult{}
	for _, sc := range scenarios {
		out[sc.name] = map[string]simResult{}
		for _, c := range candidates {
			cfg := sc.cfg
			cfg.alg = c.alg
			cfg.seed = 1
			out[sc.name][c.name] = simulate(cfg)
		}
	}
	return out
}

// table renders the comparison as Markdown.
func table(results map[string]map[string]simResult) string {
	var b strings.Builder
	for _, sc := range scenarios {
		fmt.Fprintf(&b, "\n**%s**: %s\n\n", sc.name, sc.about)
		fmt.Fprintf(&b, "| algorithm | %s |\n|---|%s\n", strings.Join(sc.header, " | "), strings.Repeat("---|", len(sc.header)))
		for _, c := range candidates {
			fmt.Fprintf(&b, "| %s | %s |\n", c.name, strings.Join(sc.row(results[sc.name][c.name]), " | "))
		}
	}
	return b.String()
}

// TestSimulate checks the targets for the chosen algorithm with
// three seeds (the seed moves backoff jitter, snoozes and noise). With -v
// it first prints the comparison of every candidate in every scenario:
//
//	go test ./jobs/adaptive -run TestSimulate -v
func TestSimulate(t *testing.T) {
	if testing.Verbose() {
		t.Log("\n" + table(runAll()))
	}
	for seed := uint64(1); seed <= 3; seed++ {
		run := func(scenario string) simResult {
			for _, sc := range scenarios {
				if sc.name == scenario {
					cfg := sc.cfg
					cfg.alg, cfg.seed = func() Algorithm { return NewGradient() }, seed
					return simulate(cfg)
				}
			}
			t.Fatalf("no scenario %s", scenario)
			return simResult{}
		}
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			for _, name := range []string{"capacity", "capacity, noisy", "replicas", "replicas, long"} {
				r := run(name)
				n := run(name).delivered + r.dead
				if r.dead != 0 || r.delivered != n {
					t.Errorf("%s: %d delivered, %d dead letters; want all delivered", name, r.delivered, r.dead)
				}
				if r.refused*10 > r.requests {
					t.Errorf("%s: %d of %d requests refused, want at most 10%%", name, r.refused, r.requests)
				}
				if ideal := capIdeal * time.Duration(n) / 400; r.drained == 0 || r.drained > 3*ideal {
					t.Errorf("%s: drained in %v, want within 3 × the ideal %v", name, r.drained, ideal)
				}
			}
			if r := run("flat, refusing"); r.refused*10 > r.requests || r.dead != 0 {
				t.Errorf("flat, refusing: %d of %d requests refused and %d dead letters, want at most 10%% and none", r.refused, r.requests, r.dead)
			}
			before, during := jumps(run("jumps"), 61*time.Second)
			for i := range before {
				if during[i] >= before[i] {
					t.Errorf("jump %d: %.1f in flight during the jump, %.1f before it; want fewer during", i+1, during[i], before[i])
				}
			}
			// A healthy target loses no throughput worth the name: the
			// limit reaches the ceiling within a second, and the drain
			// takes at most 10% longer than at a fixed limit (25% when
			// the latency is noisy, where a lucky first measurement can
			// hold the limit low for a few hundred milliseconds of the
			// two-second drain).
			for name, slack := range map[string]time.Duration{"healthy": 10, "healthy, noisy": 25} {
				r := run(name)
				cfg := scenarios[0].cfg
				for _, sc := range scenarios {
					if sc.name == name {
						cfg = sc.cfg
					}
				}
				cfg.seed = seed
				fixed := simulate(cfg)
				if r.timeToCeiling == 0 || r.timeToCeiling > time.Second {
					t.Errorf("%s: the limit reached the ceiling after %v, want within a second", name, r.timeToCeiling)
				}
				if r.drained == 0 || r.drained > fixed.drained*(100+slack)/100 {
					t.Errorf("%s: drained in %v, want within %d%% of a fixed limit's %v", name, r.drained, slack, fixed.drained)
				}
			}
			r := run("outage")
			if r.delivered != 400 || r.dead != 0 {
				t.Errorf("outage: delivered %d and dead %d of 400, want all delivered, none dead", r.delivered, r.dead)
			}
			if n := countIn(r.sent, 0, outageEnd); n > 8 {
				t.Errorf("outage: %d requests during the outage, want at most 8 (5 to open the breaker, then probes)", n)
			}
			after, refused := countIn(r.sent, outageEnd, time.Hour), countIn(r.refusedAt, outageEnd, time.Hour)
			if refused*10 > after {
				t.Errorf("outage: %d of %d requests refused after recovery, want at most 10%%", refused, after)
			}
		})
	}
}

// TestSimulateFleetJumps is TestFleetLatencyJumps's setting in the
// simulation, with the fleet leases modelled: 2 replicas sharing
// concurrency 8, a target answering in 100 ms + 2 ms × in-flight, ten
// times slower for 5 s every 20 s from 15 s on. Each replica's lease
// grants what its limiter asks for, its limit rounded down; a jump drives
// both limits down to 1. Each jump must find fewer requests in flight
// than the 5 s before it, wherever the run starts between two baseline
// probes (every 10 s on the wall clock): the limits must grow back from 1
// between jumps.
func TestSimulateFleetJumps(t *testing.T) {
	t.Parallel()
	const horizon = 41 * time.Second
	for phase := time.Duration(0); phase < 10*time.Second; phase += 500 * time.Millisecond {
		r := simulate(simConfig{
			target:   jumpTarget(100*time.Millisecond, 2*time.Millisecond, 10, jumpPeriod, jumpLength, jumpOffset),
			alg:      func() Algorithm { return NewGradient() },
			replicas: 2, ceiling: 8, events: 100_000, horizon: horizon, seed: 1, phase: phase, leases: true,
		})
		before, during := jumps(r, horizon)
		for i := range before {
			if !(during[i] < before[i]) || before[i] < 4 {
				t.Errorf("start %v past a probe: jump %d: %.1f in flight before → %.1f during; want fewer during, and at least half the concurrency before",
					phase, i+1, before[i], during[i])
			}
		}
	}
}

// TestSimulateWithLeases runs the capacity and healthy scenarios with the
// fleet leases modelled (each limiter capped at its share, renewed every
// 250 ms): the capacity targets still hold, and a healthy target's
// drain is not held back by the share following the limit (the lease asks
// for room to grow).
func TestSimulateWithLeases(t *testing.T) {
	t.Parallel()
	run := func(name string, seed uint64, alg func() Algorithm) simResult {
		for _, sc := range scenarios {
			if sc.name == name {
				cfg := sc.cfg
				cfg.alg, cfg.seed, cfg.leases = alg, seed, true
				return simulate(cfg)
			}
		}
		t.Fatalf("no scenario %s", name)
		return simResult{}
	}
	gradient := func() Algorithm { return NewGradient() }
	for seed := uint64(1); seed <= 3; seed++ {
		for _, name := range []string{"capacity", "capacity, noisy", "replicas", "replicas, long", "flat, refusing"} {
			r := run(name, seed, gradient)
			n := r.delivered + r.dead
			if r.dead != 0 || r.refused*10 > r.requests {
				t.Errorf("seed %d, %s: %d dead letters, %d of %d requests refused; want none and at most 10%%", seed, name, r.dead, r.refused, r.requests)
			}
			if ideal := capIdeal * time.Duration(n) / 400; name != "flat, refusing" && (r.drained == 0 || r.drained > 3*ideal) {
				t.Errorf("seed %d, %s: drained in %v, want within 3 × the ideal %v", seed, name, r.drained, ideal)
			}
		}
		for _, name := range []string{"healthy", "healthy, noisy"} {
			r, fixed := run(name, seed, gradient), run(name, seed, nil)
			if r.drained == 0 || r.drained > fixed.drained*125/100 {
				t.Errorf("seed %d, %s: drained in %v, want within 25%% of a fixed limit's %v", seed, name, r.drained, fixed.drained)
			}
		}
	}
}
