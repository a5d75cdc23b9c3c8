package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs/adaptive"
	"github.com/webhook-outbox/webhook-outbox/jobs/fleet"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// replicas returns n Stores on one fresh database, each with a pool of its
// own, as n replicas of outbox serve have.
func replicas(t *testing.T, n int) []*store.Store {
	t.Helper()
	out := make([]*store.Store, n)
	for i, pool := range testdb.Pools(t, n) {
		out[i] = store.New(pool)
	}
	return out
}

// target counts the requests it has in flight, and the most it ever had.
type target struct {
	*httptest.Server
	inflight, most, requests atomic.Int64
}

func newTarget(t *testing.T, latency time.Duration) *target {
	tg := &target{}
	tg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := tg.inflight.Add(1)
		defer tg.inflight.Add(-1)
		tg.requests.Add(1)
		for m := tg.most.Load(); n > m && !tg.most.CompareAndSwap(m, n); m = tg.most.Load() {
		}
		time.Sleep(latency)
	}))
	t.Cleanup(tg.Close)
	return tg
}

// TestLeaseCapsTheTargetAcrossReplicas is the first target at the
// level of the primitives: three replicas, a route with concurrency 4 and
// adaptive_concurrency off, each replica with more workers than that; the
// target never sees more than 4 requests in flight, and every event is
// delivered.
func TestLeaseCapsTheTargetAcrossReplicas(t *testing.T) {
	t.Parallel()
	const concurrency, events = 4, 120
	sts := replicas(t, 3)
	tg := newTarget(t, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	queue := make(chan int, events)
	for i := range events {
		queue <- i
	}
	var delivered atomic.Int64
	var perReplica [3]atomic.Int64
	var wg sync.WaitGroup
	for i, st := range sts {
		lim := adaptive.New(adaptive.Config{Ceiling: concurrency})
		lease := fleet.NewLease(fleet.LeaseConfig{
			Store: st, Route: "r", Holder: fmt.Sprintf("replica-%d", i), Ceiling: concurrency, Limiter: lim,
			RenewEvery: 200 * time.Millisecond,
		})
		go lease.Run(ctx)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-queue:
					default:
						return
					}
					tok, ok := lim.Acquire(ctx, 30*time.Second)
					if !ok {
						t.Error("a worker got no place in 30 s")
						return
					}
					resp, err := http.Post(tg.URL, "application/json", nil)
					if err != nil {
						t.Error(err)
						lim.Release(tok, 0, adaptive.Unsent)
						return
					}
					resp.Body.Close()
					lim.Release(tok, 20*time.Millisecond, adaptive.Answered)
					delivered.Add(1)
					perReplica[i].Add(1)
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("%d events delivered by three replicas (%d, %d, %d); at most %d in flight at the target",
		delivered.Load(), perReplica[0].Load(), perReplica[1].Load(), perReplica[2].Load(), tg.most.Load())
	if delivered.Load() != events {
		t.Fatalf("%d of %d events delivered", delivered.Load(), events)
	}
	if most := tg.most.Load(); most > concurrency {
		t.Fatalf("the target saw %d requests in flight from three replicas, more than the route's concurrency %d", most, concurrency)
	}
}

// TestKilledReplicaShareComesBack: a replica killed while holding the whole
// route (its requests never finish, it never renews nor releases) keeps it
// only until its lease expires; then another replica gets it.
func TestKilledReplicaShareComesBack(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	sts := replicas(t, 2)
	ctx := context.Background()

	doomedLim := adaptive.New(adaptive.Config{Ceiling: 4})
	doomedCtx, kill := context.WithCancel(ctx)
	doomed := fleet.NewLease(fleet.LeaseConfig{Store: sts[0], Route: "r", Holder: "doomed", Ceiling: 4, Limiter: doomedLim, TTL: ttl, RenewEvery: 100 * time.Millisecond})
	go doomed.Run(doomedCtx)
	for range 4 {
		if _, ok := doomedLim.Acquire(ctx, 30*time.Second); !ok {
			t.Fatal("the first replica got no place in 30 s")
		}
	}
	kill()
	killed := time.Now()
	sts[0].Pool().Close()

	lim := adaptive.New(adaptive.Config{Ceiling: 4})
	survivor := fleet.NewLease(fleet.LeaseConfig{Store: sts[1], Route: "r", Holder: "survivor", Ceiling: 4, Limiter: lim, TTL: ttl, RenewEvery: 100 * time.Millisecond})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go survivor.Run(runCtx)
	if _, ok := lim.TryAcquire(); ok && time.Since(killed) < ttl {
		t.Fatal("the survivor got a place while the killed replica's lease was live")
	}
	for range 4 {
		if _, ok := lim.Acquire(ctx, 30*time.Second); !ok {
			t.Fatalf("30 s after the kill the survivor still has only %d places; the lease lasts %v", lim.Stats().InFlight, ttl)
		}
	}
	t.Logf("the killed replica's 4 places came back after %v (lease %v)", time.Since(killed).Round(10*time.Millisecond), ttl)
}

// TestFleetBreakerAcrossReplicas: three replicas send to a target that is
// down. The failures they see add up to one circuit, which opens for all;
// only one probe is ever out at a time; when the target recovers, one probe
// closes the circuit and every replica sees it closed.
func TestFleetBreakerAcrossReplicas(t *testing.T) {
	t.Parallel()
	const threshold = 3
	sts := replicas(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	settings := map[string]fleet.Settings{"r": {
		BreakerSettings: store.BreakerSettings{Failures: threshold, Cooldown: time.Second, MaxCooldown: 2 * time.Second},
		ProbeTTL:        10 * time.Second,
	}}
	var down atomic.Bool
	down.Store(true)
	var sent, probesOut, mostProbes, closedSeen atomic.Int64
	breakers := make([]*fleet.Breaker, len(sts))
	for i, st := range sts {
		breakers[i] = fleet.NewBreaker(st, fmt.Sprintf("replica-%d", i), settings, func(string) { closedSeen.Add(1) }, nil)
		go breakers[i].Run(ctx, 100*time.Millisecond)
	}
	var wg sync.WaitGroup
	for _, b := range breakers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				p := b.Allow(ctx, "r")
				if !p.OK {
					time.Sleep(min(p.Wait, 20*time.Millisecond)) // a snooze, shortened for the test
					continue
				}
				if p.Probe {
					n := probesOut.Add(1)
					for m := mostProbes.Load(); n > m && !mostProbes.CompareAndSwap(m, n); m = mostProbes.Load() {
					}
				}
				sent.Add(1)
				time.Sleep(5 * time.Millisecond) // the request
				failed := down.Load()
				if p.Probe {
					probesOut.Add(-1)
				}
				b.Record(ctx, p, failed, "connection refused")
			}
		}()
	}
	// During 2.5 s of outage: the threshold's failures, the requests in
	// flight when the circuit opened (one per replica here), and the probe
	// after the first 1 s cooldown (the next comes 2 s later).
	time.Sleep(2500 * time.Millisecond)
	if n := sent.Load(); n > threshold+3+2 {
		t.Errorf("%d requests reached the dead target in 2.5 s; want at most %d (failures to open, in flight, probes)", n, threshold+3+2)
	}
	for i, b := range breakers {
		if c := b.State("r"); c.State == outbox.CircuitClosed {
			t.Errorf("replica %d sees the circuit closed during the outage: %+v", i, c)
		}
	}
	down.Store(false)
	waitUntil(t, "every replica to see the circuit closed", func() bool {
		for _, b := range breakers {
			if b.State("r").State != outbox.CircuitClosed {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()
	if m := mostProbes.Load(); m != 1 {
		t.Errorf("at most %d probes were out at once, want exactly 1", m)
	}
	if closedSeen.Load() == 0 {
		t.Error("no replica was told that the circuit closed (the hook that restarts slow start)")
	}
	cs, err := sts[0].Circuits(context.Background())
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if c := cs["r"]; c.State != outbox.CircuitClosed || c.Opened < 1 {
		t.Errorf("the stored circuit is %+v, want closed after opening at least once", c)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 30 s waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
