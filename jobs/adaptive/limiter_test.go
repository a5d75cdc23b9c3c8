package adaptive

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fill takes every free place, and returns the tokens.
func fill(l *Limiter) []Token {
	var toks []Token
	for {
		t, ok := l.TryAcquire()
		if !ok {
			return toks
		}
		toks = append(toks, t)
	}
}

// serve answers every token after rtt with outcome o, one at a time.
func serve(c *fakeClock, l *Limiter, toks []Token, rtt time.Duration, o Outcome) {
	c.Add(rtt)
	for _, t := range toks {
		l.Release(t, rtt, o)
	}
}

func TestFixedLimitIsTheCeiling(t *testing.T) {
	t.Parallel()
	l := New(Config{Ceiling: 4})
	toks := fill(l)
	if len(toks) != 4 {
		t.Fatalf("a fixed limit of 4 let %d requests in flight", len(toks))
	}
	for _, tok := range toks {
		l.Release(tok, time.Second, Overloaded)
	}
	if got := len(fill(l)); got != 4 {
		t.Fatalf("after failures a fixed limit let %d in flight, want still 4", got)
	}
	if s := l.Stats(); s.Adaptive || s.Limit != 4 || s.Ceiling != 4 {
		t.Fatalf("stats %+v, want a fixed limit of 4", s)
	}
}

func TestSlowStartDoublesToTheCeilingOnAHealthyTarget(t *testing.T) {
	t.Parallel()
	c := &fakeClock{now: simStart}
	l := New(Config{Ceiling: 32, Algorithm: NewGradient(), Clock: c.Now})
	var limits []int
	for range 40 {
		limits = append(limits, l.Limit())
		serve(c, l, fill(l), 5*time.Millisecond, Answered)
	}
	if limits[0] != 1 {
		t.Fatalf("a new limiter starts at %d, want 1 (slow start)", limits[0])
	}
	if got := l.Limit(); got != 32 {
		t.Fatalf("limits over 40 rounds of flat latency: %v; want the ceiling, 32", limits)
	}
	// Doubling: it took far fewer rounds than one more per round would.
	rounds := 0
	for _, v := range limits {
		if v < 32 {
			rounds++
		}
	}
	if rounds > 15 {
		t.Fatalf("took %d batches to reach the ceiling (%v); slow start should double", rounds, limits)
	}
}

func TestOneOvershootHalvesTheLimitOnce(t *testing.T) {
	t.Parallel()
	c := &fakeClock{now: simStart}
	l := New(Config{Ceiling: 32, Algorithm: NewGradient(), Clock: c.Now})
	for l.Limit() < 32 {
		serve(c, l, fill(l), 5*time.Millisecond, Answered)
	}
	// All 32 in flight are refused: one congestion event.
	toks := fill(l)
	c.Add(time.Millisecond)
	for _, tok := range toks {
		l.Release(tok, time.Millisecond, Overloaded)
	}
	if got := l.Limit(); got != 16 {
		t.Fatalf("after one burst of refusals the limit is %d, want 16 (halved once, not once per refusal)", got)
	}
}

func TestLatencyRiseLowersTheLimit(t *testing.T) {
	t.Parallel()
	c := &fakeClock{now: simStart}
	l := New(Config{Ceiling: 32, Algorithm: NewGradient(), Clock: c.Now})
	for l.Limit() < 32 {
		serve(c, l, fill(l), 10*time.Millisecond, Answered)
	}
	for range 10 {
		serve(c, l, fill(l), 100*time.Millisecond, Answered)
	}
	if got := l.Limit(); got > 4 {
		t.Fatalf("after latency rose tenfold the limit is %d, want it down to a few", got)
	}
}

func TestIdleAndRestartBeginSlowStartAgain(t *testing.T) {
	t.Parallel()
	c := &fakeClock{now: simStart}
	l := New(Config{Ceiling: 16, Algorithm: NewGradient(), Clock: c.Now})
	for l.Limit() < 16 {
		serve(c, l, fill(l), 5*time.Millisecond, Answered)
	}
	c.Add(DefaultIdleRestart - time.Millisecond)
	if got := len(fill(l)); got != 16 {
		t.Fatalf("after a short pause %d places were free, want all 16", got)
	}
	l2 := New(Config{Ceiling: 16, Algorithm: NewGradient(), Clock: c.Now})
	for l2.Limit() < 16 {
		serve(c, l2, fill(l2), 5*time.Millisecond, Answered)
	}
	c.Add(DefaultIdleRestart)
	if got := len(fill(l2)); got != 1 {
		t.Fatalf("after %v idle %d places were free, want 1: a backlog that built up meanwhile starts slowly", DefaultIdleRestart, got)
	}

	l3 := New(Config{Ceiling: 16, Algorithm: NewGradient(), Clock: c.Now})
	for l3.Limit() < 16 {
		serve(c, l3, fill(l3), 5*time.Millisecond, Answered)
	}
	l3.Restart()
	if s := l3.Stats(); s.Limit != 1 || !s.SlowStart || s.Restarts != 1 {
		t.Fatalf("after Restart: %+v, want limit 1, slow start, 1 restart", s)
	}
}

func TestAcquireWaitsInOrderAndTimesOut(t *testing.T) {
	t.Parallel()
	l := New(Config{Ceiling: 1})
	held, ok := l.Acquire(context.Background(), time.Second)
	if !ok {
		t.Fatal("the first Acquire found no free place")
	}
	if _, ok := l.Acquire(context.Background(), time.Millisecond); ok {
		t.Fatal("a second Acquire got a place while the only one was held")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := l.Acquire(ctx, time.Hour); ok {
		t.Fatal("Acquire with a cancelled context got a place")
	}
	// Three waiters get the place in the order they came.
	var order []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, ok := l.Acquire(context.Background(), time.Minute)
			if !ok {
				t.Error("a waiter got no place within a minute")
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			l.Release(tok, time.Millisecond, Answered)
		}()
		// Wait until it is queued before starting the next one.
		waitFor(t, func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.waiters.Len() == i+1
		})
	}
	l.Release(held, time.Millisecond, Answered)
	wg.Wait()
	if len(order) != 3 || order[0] != 0 || order[1] != 1 || order[2] != 2 {
		t.Fatalf("waiters were served in the order %v, want [0 1 2]", order)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// capacityServer is the target on a real socket: it answers in 20 ms
// + 10 ms × in-flight and refuses past 6 in flight with a 503.
type capacityServer struct {
	*httptest.Server
	inflight, maxInFlight, requests, refused atomic.Int64
}

func newCapacityServer(t *testing.T) *capacityServer {
	s := &capacityServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.inflight.Add(1)
		defer s.inflight.Add(-1)
		s.requests.Add(1)
		for {
			m := s.maxInFlight.Load()
			if n <= m || s.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		if n > 6 {
			s.refused.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		time.Sleep(20*time.Millisecond + 10*time.Millisecond*time.Duration(n))
	}))
	t.Cleanup(s.Close)
	return s
}

// drain delivers events through limiters (one per replica) with workers
// per replica, as the delivery worker will: a place under the limit, then
// the request; a refusal puts the event back.
func drain(t *testing.T, url string, events, workers int, limiters ...*Limiter) {
	t.Helper()
	queue := make(chan int, events)
	for i := range events {
		queue <- i
	}
	var left sync.WaitGroup
	left.Add(events)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	var wg sync.WaitGroup
	for _, l := range limiters {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					var ev int
					select {
					case ev = <-queue:
					case <-ctx.Done():
						return
					}
					tok, ok := l.Acquire(ctx, 5*time.Second)
					if !ok {
						queue <- ev // no place in time: the job would snooze
						continue
					}
					start := time.Now()
					resp, err := client.Post(url, "application/json", nil)
					rtt := time.Since(start)
					if err != nil {
						l.Release(tok, rtt, Overloaded)
						queue <- ev
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						l.Release(tok, rtt, Overloaded)
						queue <- ev
						continue
					}
					l.Release(tok, rtt, Answered)
					left.Done()
				}
			}()
		}
	}
	left.Wait()
	cancel()
	wg.Wait()
}

// TestRealTargetWithCapacity6 runs the limiter against a real HTTP target
// with real goroutines. Timings differ from machine to machine; what is
// asserted holds on any: every event is delivered, the target never sees
// more than the ceiling in flight, and refusals stay a small share of the
// requests (a fixed limit at 32 would have most of them refused).
func TestRealTargetWithCapacity6(t *testing.T) {
	t.Parallel()
	srv := newCapacityServer(t)
	l := New(Config{Ceiling: 32, Algorithm: NewGradient()})
	drain(t, srv.URL, 200, 64, l)
	req, ref, most := srv.requests.Load(), srv.refused.Load(), srv.maxInFlight.Load()
	t.Logf("200 events: %d requests, %d refused, at most %d in flight at the target; final limit %d", req, ref, most, l.Limit())
	if most > 32 {
		t.Errorf("the target saw %d requests in flight, more than the ceiling 32", most)
	}
	if ref*10 > req {
		t.Errorf("%d of %d requests were refused, want at most 10%%", ref, req)
	}
}

// TestRealTargetThreeReplicas shares the same target between three
// independent limiters, as three replicas would, each under its own
// ceiling of 32 (the fleet lease is not modelled here).
func TestRealTargetThreeReplicas(t *testing.T) {
	t.Parallel()
	srv := newCapacityServer(t)
	ls := []*Limiter{
		New(Config{Ceiling: 32, Algorithm: NewGradient()}),
		New(Config{Ceiling: 32, Algorithm: NewGradient()}),
		New(Config{Ceiling: 32, Algorithm: NewGradient()}),
	}
	drain(t, srv.URL, 300, 32, ls...)
	req, ref, most := srv.requests.Load(), srv.refused.Load(), srv.maxInFlight.Load()
	t.Logf("300 events, 3 limiters: %d requests, %d refused, at most %d in flight at the target; final limits %d %d %d",
		req, ref, most, ls[0].Limit(), ls[1].Limit(), ls[2].Limit())
	if ref*5 > req {
		t.Errorf("%d of %d requests were refused, want at most 20%%", ref, req)
	}
}

// TestCapFromOutside: a fleet lease caps the limit; a cap of 0 lets nothing
// through, and raising it hands places to the callers already waiting.
func TestCapFromOutside(t *testing.T) {
	t.Parallel()
	l := New(Config{Ceiling: 8})
	l.SetCap(0)
	if _, ok := l.TryAcquire(); ok {
		t.Fatal("a place was free under a cap of 0")
	}
	if d := l.Demand(time.Minute); d != 8 {
		t.Fatalf("demand after a refused attempt is %d, want the limiter's own limit 8", d)
	}
	got := make(chan bool)
	go func() {
		_, ok := l.Acquire(context.Background(), time.Minute)
		got <- ok
	}()
	waitFor(t, func() bool { return l.Stats().Waiting == 1 })
	l.SetCap(2)
	if !<-got {
		t.Fatal("the waiting caller got no place when the cap rose")
	}
	if _, ok := l.TryAcquire(); !ok {
		t.Fatal("the second place under a cap of 2 was not free")
	}
	if _, ok := l.TryAcquire(); ok {
		t.Fatal("a third place was free under a cap of 2")
	}
	if s := l.Stats(); s.Limit != 2 || s.Own != 8 || s.Cap != 2 || s.InFlight != 2 {
		t.Fatalf("stats %+v, want limit 2 (own 8, cap 2), 2 in flight", s)
	}
	if d := New(Config{Ceiling: 8}).Demand(time.Minute); d != 0 {
		t.Fatalf("an unused limiter's demand is %d, want 0", d)
	}
}

// TestCappedLimitBacksOffFromTheCap: a replica whose own limit grew past
// its share of the fleet's concurrency backs off from the share when the
// target slows, at the first congested round, not from its unused
// headroom.
func TestCappedLimitBacksOffFromTheCap(t *testing.T) {
	t.Parallel()
	c := &fakeClock{now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	l := New(Config{Ceiling: 32, Algorithm: NewGradient(), Clock: c.Now})
	l.mu.Lock()
	l.limit, l.slowStart = 16, false
	l.mu.Unlock()
	l.SetCap(4)
	var toks []Token
	for range 4 {
		tok, ok := l.TryAcquire()
		if !ok {
			t.Fatal("no place under the cap")
		}
		toks = append(toks, tok)
	}
	c.Add(100 * time.Millisecond)
	for _, tok := range toks {
		l.Release(tok, 100*time.Millisecond, Overloaded)
	}
	if s := l.Stats(); s.Own > 2 {
		t.Fatalf("after a congested round under a cap of 4 the own limit is %d, want at most 2 (half the cap, not half of 16)", s.Own)
	}
}
