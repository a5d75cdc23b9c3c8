package jobs_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCircuitBreakerStopsSendingAndSnoozes: a failing target gets the
// threshold of requests and then nothing for the cooldown, while the queued
// events are snoozed without using attempts; once it recovers, one probe
// closes the circuit and everything is delivered.
func TestCircuitBreakerStopsSendingAndSnoozes(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) {
		if !healthy.Load() {
			http.Error(w, "database is down", http.StatusInternalServerError)
		}
	})
	b := setup(t, tg.URL, `    retry: {initial_backoff: 200ms, max_backoff: 500ms, max_attempts: 10}
    concurrency: 2
    circuit_breaker: {failures: 3, cooldown: 3s, max_cooldown: 3s}`)
	const events = 10
	ids := make([]int64, events)
	for i := range events {
		ids[i] = b.accept(t, fmt.Sprintf(`{"id":"cb-%d"}`, i), 10).JobID
	}
	waitFor(t, 15*time.Second, "the circuit to open", func() bool {
		st, _ := b.limits.Circuit("r")
		return st.State == outbox.CircuitOpen
	})
	if n := len(tg.requests()); n != 3 {
		t.Fatalf("the target got %d requests before the circuit opened, want 3 (failures: 3, concurrency 2)", n)
	}
	time.Sleep(time.Second) // well inside the 3s cooldown
	if n := len(tg.requests()); n != 3 {
		t.Fatalf("the target got %d requests while the circuit was open, want still 3", n)
	}
	healthy.Store(true)

	for _, id := range ids {
		b.waitJob(t, id, 30*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCompleted })
	}
	st, _ := b.limits.Circuit("r")
	if st.State != outbox.CircuitClosed {
		t.Errorf("breaker is %s after recovery, want closed", st.State)
	}
	// A probe that failed because it came before recovery reopens the
	// circuit once more, and costs its event one attempt.
	maxAttempts := 2 + int(st.Opened-1)
	var worst, snoozed int
	if err := b.pool.QueryRow(context.Background(), `SELECT max(delivery_attempts) FROM events`).Scan(&worst); err != nil {
		t.Fatal(err)
	}
	if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE (metadata->>'snoozes')::int > 0`).Scan(&snoozed); err != nil {
		t.Fatal(err)
	}
	if worst > maxAttempts {
		t.Errorf("an event used %d attempts, want at most %d: held-back deliveries must be snoozed, not attempted", worst, maxAttempts)
	}
	if snoozed == 0 {
		t.Error("no job was snoozed while the circuit was open")
	}
	if want := events + 3 + int(st.Opened-1); len(tg.requests()) > want {
		t.Errorf("the target got %d requests in all, want at most %d (events, failures, failed probes)", len(tg.requests()), want)
	}
}

// TestCircuitOpenAtDeadlineIsDeadLetter: an event whose give_up_after passes
// while the circuit is open becomes a dead letter that says so, without
// another request to the target.
func TestCircuitOpenAtDeadlineIsDeadLetter(t *testing.T) {
	t.Parallel()
	tg := newTarget(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	})
	b := setup(t, tg.URL, `    retry: {initial_backoff: 1s, max_backoff: 1s, give_up_after: 1500ms}
    circuit_breaker: {failures: 1, cooldown: 1m}`)
	res := b.accept(t, `{"id":"late"}`, 5)
	job := b.waitJob(t, res.JobID, 15*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCancelled })
	last := job.Errors[len(job.Errors)-1].Error
	for _, want := range []string{"gave up: not delivered within give_up_after (1.5s)", "circuit breaker for route r is open", "502 Bad Gateway"} {
		if !strings.Contains(last, want) {
			t.Errorf("last error %q does not say %q", last, want)
		}
	}
	if n := len(tg.requests()); n != 1 {
		t.Errorf("the target got %d requests, want 1 (the circuit opened after it)", n)
	}
}

// arrivals is a target that records when each request arrived.
type arrivals struct {
	mu    sync.Mutex
	times []time.Time
}

func (a *arrivals) handle(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	a.times = append(a.times, time.Now())
	a.mu.Unlock()
}

func (a *arrivals) span() (int, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.times) == 0 {
		return 0, 0
	}
	return len(a.times), a.times[len(a.times)-1].Sub(a.times[0])
}

// TestRateLimit: rate_limit spaces deliveries out, waiting briefly in the
// worker, and snoozing, without using an attempt, when the wait is long.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		route       string
		events      int
		perSecond   float64
		wantSnoozes bool
	}{
		{"short waits", "    rate_limit: 4\n    concurrency: 4", 12, 4, false},
		{"long waits snooze", "    rate_limit: 0.5\n    concurrency: 3", 3, 0.5, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := &arrivals{}
			tg := newTarget(t, a.handle)
			b := setup(t, tg.URL, c.route)
			var ids []int64
			for i := range c.events {
				ids = append(ids, b.accept(t, fmt.Sprintf(`{"id":"rl-%d"}`, i), 5).JobID)
			}
			for _, id := range ids {
				b.waitJob(t, id, 60*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCompleted })
			}
			n, span := a.span()
			// Evenly spaced starts take (n-1)/rate; the slack covers
			// requests that arrive later than they started.
			if want := time.Duration(float64(n-1)/c.perSecond*float64(time.Second)) - 500*time.Millisecond; n != c.events || span < want {
				t.Errorf("%d requests over %s, want %d over at least %s", n, span, c.events, want)
			}
			var worst, snoozed int
			if err := b.pool.QueryRow(context.Background(), `SELECT max(delivery_attempts) FROM events`).Scan(&worst); err != nil {
				t.Fatal(err)
			}
			if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE (metadata->>'snoozes')::int > 0`).Scan(&snoozed); err != nil {
				t.Fatal(err)
			}
			if worst != 1 {
				t.Errorf("an event used %d attempts; waiting for the rate limit must not use attempts", worst)
			}
			if c.wantSnoozes && snoozed == 0 {
				t.Error("no delivery was snoozed, though each waited about 2s for the rate limit")
			}
		})
	}
}
