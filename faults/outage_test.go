package faults

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestTargetOutageWithBacklog: the target answers 500 for 30 s while 500
// events wait. The circuit breaker must keep it from being hammered: it sees
// the failure threshold, then one probe per cooldown. Afterwards every event
// is delivered, none is a dead letter, and the events did not burn their
// attempts.
//
// The cooldown is 3 s doubling to 12 s instead of 30 s to 5 min, so that a
// 30 s outage spans several probes, as a long outage does with the defaults.
// The route's concurrency (4) is below the threshold (5): the breaker lets
// at most max(threshold, concurrency) requests out before it opens.
func TestTargetOutageWithBacklog(t *testing.T) {
	suite(t)
	const (
		threshold   = 5
		cooldown    = 3 * time.Second
		maxCooldown = 12 * time.Second
		outage      = 30 * time.Second
		backlog     = 500
	)
	dbURL := shared(t).database(t, "outage")
	var failing atomic.Bool
	failing.Store(true)
	tg := newTarget(t, func(*http.Request) (int, <-chan struct{}) {
		if failing.Load() {
			return http.StatusInternalServerError, nil
		}
		return http.StatusOK, nil
	})
	port := freePort(t)
	cfg := config{dbURL: dbURL, port: port, replica: "a", routes: route("hooks", "/hooks", "2s", `    retry: {initial_backoff: 1s, max_backoff: 30s, max_attempts: 10}
    concurrency: 4
    circuit_breaker: {failures: 5, cooldown: 3s, max_cooldown: 12s}`)}
	cfgPath := cfg.write(t, tg.srv.URL)
	migrate(t, cfgPath)

	outageStart := time.Now()
	srv := startServe(t, "serve", cfgPath, port)
	l := newLedger()
	wg := senders(context.Background(), l, 20, backlog/20, "outage", 0, func(int, int) string { return srv.base })
	wg.Wait()
	if n := l.count(); n != backlog {
		t.Fatalf("%d of %d events acknowledged", n, backlog)
	}
	time.Sleep(time.Until(outageStart.Add(outage)))
	failing.Store(false)
	outageEnd := time.Now()

	keys := l.keys()
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	got, drainedAt := waitSettled(t, p, "hooks", keys, 120*time.Second)

	var during, failed int
	for _, r := range tg.log() {
		if r.at.Before(outageEnd) {
			during++
		}
		if r.status == http.StatusInternalServerError {
			failed++
		}
	}
	// Probes come at the end of each cooldown, counted from when the
	// circuit opened; counting from the outage's start, which is earlier,
	// gives at least as many.
	probes := 0
	for at, c := cooldown, cooldown; at <= outage; at, c = at+min(2*c, maxCooldown), min(2*c, maxCooldown) {
		probes++
	}
	if during > threshold+probes {
		t.Errorf("the target got %d requests during the %s outage, want at most %d (threshold %d + %d probes)", during, outage, threshold+probes, threshold, probes)
	}
	var dead, worst, attempts int
	for _, k := range keys {
		s := got[k]
		if s.dead {
			dead++
		}
		worst = max(worst, s.attempts)
		attempts += s.attempts
	}
	if dead > 0 {
		t.Errorf("%d events became dead letters; an outage shorter than give_up_after must not cost any", dead)
	}
	// Every failed request costs its event one attempt; a delivery held
	// back by the open circuit is snoozed and costs none.
	if attempts-backlog != failed {
		t.Errorf("events used %d attempts beyond their delivery, but only %d requests failed: held-back deliveries must not use attempts", attempts-backlog, failed)
	}
	if worst > 2+probes {
		t.Errorf("an event used %d attempts, want at most %d", worst, 2+probes)
	}
	if extra, _, dupKeys := tg.duplicatesBeyond(t, p, "hooks"); extra > 0 {
		t.Errorf("%d duplicate deliveries without any crash (keys %v); %s", extra, dupKeys, crashBound(4, 0))
	}
	logs := srv.log()
	for _, want := range []string{"circuit breaker opened", "circuit breaker probe failed", "circuit breaker closed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("serve's log does not say %q", want)
		}
	}
	figure(t, "target requests during the %s outage: %d (bound %d = threshold %d + %d probes); %d failed requests in all",
		outage, during, threshold+probes, threshold, probes, failed)
	figure(t, "attempts per event: max %d, %d beyond delivery in all, for %d events; dead letters: %d", worst, attempts-backlog, backlog, dead)
	figure(t, "target recovered to drained: %s", round(drainedAt.Sub(outageEnd)))
}
