package jobs

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/webhook-outbox/webhook-outbox/config"
)

func newTestBreaker(failures int, cooldown, maxCooldown time.Duration) *breaker {
	cfg := &config.Config{Routes: []config.Route{{Name: "r", CircuitBreaker: config.CircuitBreaker{
		Failures: failures, Cooldown: config.NewDuration(cooldown), MaxCooldown: config.NewDuration(maxCooldown),
	}}}}
	return NewBreakers(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))).get("r")
}

func (b *breaker) mustState(t *testing.T, want BreakerState) {
	t.Helper()
	if got := b.status().State; got != want {
		t.Fatalf("breaker is %s, want %s", got, want)
	}
}

// TestBreakerOpensAfterConsecutiveFailures: failures in a row open the
// circuit; a success in between starts the count again.
func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	t.Parallel()
	b := newTestBreaker(3, 30*time.Second, 5*time.Minute)
	now := time.Now()
	for range 2 {
		b.allow(now).record(Retry, "500", now)
	}
	b.allow(now).record(Delivered, "", now)
	b.allow(now).record(Permanent, "410", now) // the target answers: it is up
	b.allow(now).record(Snooze, "503 Retry-After", now)
	for range 2 {
		b.allow(now).record(Retry, "500", now)
	}
	b.mustState(t, BreakerClosed)
	b.allow(now).record(Retry, "target answered 500", now)
	b.mustState(t, BreakerOpen)
	st := b.status()
	if st.Opened != 1 || st.Cooldown != 30*time.Second || !st.OpenUntil.Equal(now.Add(30*time.Second)) || st.LastError != "target answered 500" {
		t.Errorf("status = %+v", st)
	}
}

// TestBreakerOneProbePerCooldown: while open nothing is sent and deliveries
// wait until the cooldown ends; then exactly one probe goes; a failed probe
// doubles the cooldown up to max_cooldown; a successful one closes.
func TestBreakerOneProbePerCooldown(t *testing.T) {
	t.Parallel()
	b := newTestBreaker(1, 10*time.Second, 25*time.Second)
	now := time.Now()
	b.allow(now).record(Retry, "500", now)
	b.mustState(t, BreakerOpen)

	for _, cooldown := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		p := b.allow(now.Add(cooldown - time.Millisecond))
		if p.ok {
			t.Fatalf("a delivery was let through %s into a %s cooldown", cooldown-time.Millisecond, cooldown)
		}
		if p.wait < time.Millisecond || p.wait > time.Millisecond+cooldown/10 {
			t.Errorf("snooze %s, want the rest of the cooldown (1ms) plus at most a tenth of it", p.wait)
		}
		now = now.Add(cooldown)
		probe := b.allow(now)
		if !probe.ok || !probe.probe {
			t.Fatalf("no probe after the %s cooldown", cooldown)
		}
		b.mustState(t, BreakerHalfOpen)
		for range 5 {
			if p := b.allow(now); p.ok || p.wait < time.Second || p.wait > 2*time.Second {
				t.Fatalf("while a probe is out, another delivery got ok=%v wait=%s", p.ok, p.wait)
			}
		}
		probe.record(Retry, "still 500", now)
		b.mustState(t, BreakerOpen)
	}
	if got := b.status().Opened; got != 5 {
		t.Errorf("opened %d times, want 5", got)
	}
	now = now.Add(25 * time.Second)
	probe := b.allow(now)
	probe.record(Delivered, "", now)
	b.mustState(t, BreakerClosed)
	if st := b.status(); st.Cooldown != 10*time.Second {
		t.Errorf("cooldown after closing = %s, want it back at 10s", st.Cooldown)
	}
	for range 20 {
		if !b.allow(now).ok {
			t.Fatal("a closed breaker refused a delivery")
		}
	}
}

// TestBreakerBoundsRequestsWhenFailuresStart: with failures known, no more
// than the threshold are out at once, so a backlog cannot storm a target
// that has just started failing.
func TestBreakerBoundsRequestsWhenFailuresStart(t *testing.T) {
	t.Parallel()
	b := newTestBreaker(5, 30*time.Second, 5*time.Minute)
	now := time.Now()
	var out []*permit
	for range 3 { // a healthy target: no limit on requests in flight
		out = append(out, b.allow(now))
	}
	out[0].record(Retry, "500", now)
	sent := 3
	for range 100 {
		if p := b.allow(now); p.ok {
			out = append(out, p)
			sent++
		}
	}
	if sent != 5 {
		t.Fatalf("%d requests sent with one failure known, want 5 (the threshold)", sent)
	}
	for _, p := range out[1:] {
		p.record(Retry, "500", now)
	}
	b.mustState(t, BreakerOpen)
	if b.allow(now).ok {
		t.Fatal("an open breaker let a delivery through")
	}
}

// TestBreakerReleasedProbe: a probe that was never sent (the event could not
// be loaded) frees the slot for the next delivery, and a permit from before
// the circuit opened does not count afterwards.
func TestBreakerReleasedProbe(t *testing.T) {
	t.Parallel()
	b := newTestBreaker(2, time.Second, time.Second)
	now := time.Now()
	first, second, early := b.allow(now), b.allow(now), b.allow(now)
	first.record(Retry, "500", now)
	second.record(Retry, "500", now)
	b.mustState(t, BreakerOpen)
	early.record(Delivered, "", now) // sent before the circuit opened: ignored
	b.mustState(t, BreakerOpen)

	now = now.Add(time.Second)
	probe := b.allow(now)
	probe.release()
	probe.record(Retry, "ignored: already settled", now)
	next := b.allow(now)
	if !next.ok || !next.probe {
		t.Fatal("a released probe did not free the probe slot")
	}
	next.record(Delivered, "", now)
	b.mustState(t, BreakerClosed)
}

// TestBreakerObserverSeesEveryChange: the circuit state metric hears the
// start state and every change.
func TestBreakerObserverSeesEveryChange(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{Routes: []config.Route{{Name: "r", CircuitBreaker: config.CircuitBreaker{
		Failures: 1, Cooldown: config.NewDuration(10 * time.Second), MaxCooldown: config.NewDuration(time.Minute),
	}}}}
	bs := NewBreakers(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var seen []BreakerState
	bs.Observe(func(route string, s BreakerState) {
		if route == "r" {
			seen = append(seen, s)
		}
	})
	b, now := bs.get("r"), time.Now()
	b.allow(now).record(Retry, "500", now)
	later := now.Add(11 * time.Second)
	b.allow(later).record(Delivered, "", later)
	want := []BreakerState{BreakerClosed, BreakerOpen, BreakerHalfOpen, BreakerClosed}
	if len(seen) != len(want) {
		t.Fatalf("observer saw %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("observer saw %v, want %v", seen, want)
		}
	}
}
