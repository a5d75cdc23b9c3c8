package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
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

func renew(t *testing.T, st *store.Store, holder string, want, inflight, ceiling int) store.LeaseGrant {
	t.Helper()
	g, err := st.RenewFleetLease(context.Background(), store.LeaseRequest{
		Route: "r", Holder: holder, Want: want, InFlight: inflight, Ceiling: ceiling, RateLimit: 10, TTL: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestFleetLeaseSharesConverge: the first replica takes what it wants; a
// newcomer gets what is free at once and its fair share once the first
// renews; a replica that wants little gets it in full; the rate limit is
// split between the replicas that want slots.
func TestFleetLeaseSharesConverge(t *testing.T) {
	t.Parallel()
	r := replicas(t, 3)
	steps := []struct {
		replica        int
		want, inflight int
		slots          int
		rate           float64
	}{
		{0, 8, 0, 8, 10}, // alone: everything it wants
		{1, 8, 0, 0, 0},  // all 8 held by replica 0: nothing free yet
		{0, 8, 8, 4, 5},  // fair share 4; it still holds its 8 in flight
		{1, 8, 0, 0, 0},  // replica 0's 8 in flight still count
		{0, 8, 4, 4, 5},  // half of them finished: it holds 4
		{1, 8, 0, 4, 5},  // the freed 4
		{2, 2, 0, 0, 0},  // wants 2, fair share 2, nothing free yet
		{0, 8, 0, 3, 0},  // max-min: 2 for replica 2, 3 each for the others
		{1, 8, 0, 3, 0},
		{2, 2, 0, 2, 10.0 / 3},
		{0, 0, 0, 0, 0}, // replica 0 has no more work: gives its share up
		{1, 8, 0, 6, 5}, // 8 - 2 for replica 2
	}
	names := []string{"replica-a", "replica-b", "replica-c"}
	for i, s := range steps {
		g := renew(t, r[s.replica], names[s.replica], s.want, s.inflight, 8)
		if g.Slots != s.slots || (s.rate != 0 && fmt.Sprintf("%.3f", g.Rate) != fmt.Sprintf("%.3f", s.rate)) {
			t.Errorf("step %d: %s wants %d with %d in flight: granted %d slots at %.3f/s, want %d at %.3f/s",
				i, names[s.replica], s.want, s.inflight, g.Slots, g.Rate, s.slots, s.rate)
		}
	}
	leases, err := r[0].FleetLeases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 {
		t.Errorf("leases after replica-a gave up: %+v, want replica-b's and replica-c's", leases)
	}
}

// TestFleetLeaseCapHoldsUnderContention: three replicas renew at once, over
// and over, with wants and requests in flight that change at random, each
// never sending more than it was granted. At no moment do the slots held
// on the route, nor the rate shares, add up to more than the route's
// concurrency and rate limit.
func TestFleetLeaseCapHoldsUnderContention(t *testing.T) {
	t.Parallel()
	const ceiling, rateLimit = 5, 20.0
	r := replicas(t, 4)
	ctx := context.Background()
	var over atomic.Int64
	var sumErr error
	stop := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var slots int
			var rate float64
			err := r[3].Pool().QueryRow(ctx, `SELECT coalesce(sum(slots), 0), coalesce(sum(rate), 0) FROM fleet_leases WHERE route = 'r' AND expires_at > now()`).Scan(&slots, &rate)
			if err != nil {
				sumErr = err
				return
			}
			if slots > ceiling || rate > rateLimit+1e-9 {
				over.Add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	var granted [3]atomic.Int64
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			holder := fmt.Sprintf("replica-%d", i)
			inflight := 0
			for range 150 {
				want := rng.IntN(ceiling + 1)
				g, err := r[i].RenewFleetLease(ctx, store.LeaseRequest{
					Route: "r", Holder: holder, Want: want, InFlight: inflight, Ceiling: ceiling, RateLimit: rateLimit, TTL: time.Minute,
				})
				if err != nil {
					t.Error(err)
					return
				}
				granted[i].Add(int64(g.Slots))
				// Some requests finish; new ones go out only under the grant.
				inflight = rng.IntN(inflight + 1)
				if inflight < g.Slots {
					inflight += rng.IntN(g.Slots - inflight + 1)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	if sumErr != nil {
		t.Fatal(sumErr)
	}
	if n := over.Load(); n > 0 {
		t.Fatalf("%d times the replicas held more than the route's concurrency %d or rate limit %v", n, ceiling, rateLimit)
	}
	for i := range granted {
		if granted[i].Load() == 0 {
			t.Errorf("replica %d was never granted a slot in 150 renewals", i)
		}
	}
}

// TestKilledReplicaLeaseExpires: a replica that dies without giving its
// share back (its process killed, its connections gone) holds it only until
// its lease expires; then another replica gets it.
func TestKilledReplicaLeaseExpires(t *testing.T) {
	t.Parallel()
	r := replicas(t, 2)
	ctx := context.Background()
	const ttl = 2 * time.Second
	req := func(holder string) store.LeaseRequest {
		return store.LeaseRequest{Route: "r", Holder: holder, Want: 4, Ceiling: 4, TTL: ttl}
	}
	taken := time.Now()
	if g, err := r[0].RenewFleetLease(ctx, req("doomed")); err != nil || g.Slots != 4 {
		t.Fatalf("the first replica got %+v, %v; want all 4 slots", g, err)
	}
	r[0].Pool().Close() // killed: no release, no renewal

	g, err := r[1].RenewFleetLease(ctx, req("survivor"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(taken) < ttl && g.Slots != 0 {
		t.Fatalf("the survivor got %d slots while the killed replica's lease was live", g.Slots)
	}
	deadline := time.Now().Add(30 * time.Second)
	for g.Slots != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the kill the survivor still gets %d of 4 slots; the lease lasts %v", g.Slots, ttl)
		}
		time.Sleep(100 * time.Millisecond)
		if g, err = r[1].RenewFleetLease(ctx, req("survivor")); err != nil {
			t.Fatal(err)
		}
	}
	if waited := time.Since(taken); waited < ttl {
		t.Fatalf("the survivor got the killed replica's slots after %v, before its lease of %v expired", waited, ttl)
	}
}

// TestReleaseFleetLeasesFreesAtOnce: a replica shutting down gives its
// shares back without waiting for them to expire.
func TestReleaseFleetLeasesFreesAtOnce(t *testing.T) {
	t.Parallel()
	r := replicas(t, 2)
	renew(t, r[0], "leaving", 8, 0, 8)
	if err := r[0].ReleaseFleetLeases(context.Background(), "leaving"); err != nil {
		t.Fatal(err)
	}
	if g := renew(t, r[1], "staying", 8, 0, 8); g.Slots != 8 {
		t.Fatalf("after the other replica released its lease this one got %d of 8 slots", g.Slots)
	}
}

var breaker = store.BreakerSettings{Failures: 3, Cooldown: time.Second, MaxCooldown: 4 * time.Second}

// TestFleetBreakerOpensForEveryReplica: failures counted on different
// replicas add up; the circuit that opens is seen by every replica; a
// failure of a request sent before it opened changes nothing; a success
// ends a run of failures.
func TestFleetBreakerOpensForEveryReplica(t *testing.T) {
	t.Parallel()
	r := replicas(t, 3)
	ctx := context.Background()
	if _, counted, err := r[0].RecordCircuitFailure(ctx, "r", breaker, "503 from a"); err != nil || !counted {
		t.Fatalf("first failure: counted %v, %v", counted, err)
	}
	if err := r[1].RecordCircuitSuccess(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c, counted, err := r[i].RecordCircuitFailure(ctx, "r", breaker, fmt.Sprintf("503 from replica %d", i))
		if err != nil || !counted {
			t.Fatalf("failure %d: counted %v, %v", i, counted, err)
		}
		if want := map[bool]outbox.CircuitState{true: outbox.CircuitOpen, false: outbox.CircuitClosed}[i == 2]; c.State != want || c.ConsecutiveFailures != i+1 {
			t.Fatalf("after failure %d (the run restarted after the success): %+v, want %s with %d in a row", i+1, c, want, i+1)
		}
	}
	for i, st := range r {
		cs, err := st.Circuits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := cs["r"]
		if c.State != outbox.CircuitOpen || c.OpenUntil.IsZero() || c.LastError != "503 from replica 2" || c.Opened != 1 {
			t.Errorf("replica %d sees %+v, want the circuit open with the last failure", i, c)
		}
	}
	if _, counted, err := r[0].RecordCircuitFailure(ctx, "r", breaker, "late"); err != nil || counted {
		t.Fatalf("a failure while open was counted (%v, %v): it came from a request sent before the circuit opened", counted, err)
	}
}

// TestFleetBreakerOneProbeAtATime: once the cooldown is over, of many
// attempts from three replicas at once exactly one gets the probe; a failed
// probe opens the circuit for twice as long; a successful one closes it for
// every replica; a prober that dies lets another take over once its probe
// time runs out.
func TestFleetBreakerOneProbeAtATime(t *testing.T) {
	t.Parallel()
	r := replicas(t, 3)
	ctx := context.Background()
	for range breaker.Failures {
		if _, _, err := r[0].RecordCircuitFailure(ctx, "r", breaker, "down"); err != nil {
			t.Fatal(err)
		}
	}
	probeRace := func() []string {
		t.Helper()
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, st := range r {
			for j := range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					holder := fmt.Sprintf("replica-%d/%d", i, j)
					if _, ok, err := st.TryCircuitProbe(ctx, "r", holder, time.Minute); err != nil {
						t.Error(err)
					} else if ok {
						mu.Lock()
						winners = append(winners, holder)
						mu.Unlock()
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		return winners
	}
	if w := probeRace(); len(w) != 0 {
		t.Fatalf("probes taken during the cooldown: %v", w)
	}
	var winners []string
	waitUntil(t, "the cooldown to end", func() bool { winners = probeRace(); return len(winners) > 0 })
	if len(winners) != 1 {
		t.Fatalf("%d probes taken at once (%v), want exactly 1", len(winners), winners)
	}
	if w := probeRace(); len(w) != 0 {
		t.Fatalf("more probes taken while %s's was out: %v", winners[0], w)
	}
	c, ok, err := r[1].CircuitProbeDone(ctx, "r", winners[0], false, breaker, "still down")
	if err != nil || !ok || c.State != outbox.CircuitOpen || c.Cooldown != 2*breaker.Cooldown || c.Opened != 2 {
		t.Fatalf("after a failed probe: %+v, %v, %v; want open for %v, opened twice", c, ok, err, 2*breaker.Cooldown)
	}

	// A prober that dies: its probe time runs out, another takes over.
	waitUntil(t, "the second cooldown to end", func() bool {
		_, ok, err := r[0].TryCircuitProbe(ctx, "r", "doomed", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if _, ok, _ := r[1].TryCircuitProbe(ctx, "r", "survivor", time.Minute); ok {
		t.Fatal("a second replica took the probe while the first one's was out")
	}
	waitUntil(t, "the dead prober's probe time to run out", func() bool {
		_, ok, err := r[1].TryCircuitProbe(ctx, "r", "survivor", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if _, ok, _ := r[0].CircuitProbeDone(ctx, "r", "doomed", true, breaker, ""); ok {
		t.Fatal("the dead prober's late answer settled a probe it no longer held")
	}
	if _, ok, err := r[1].CircuitProbeDone(ctx, "r", "survivor", true, breaker, ""); err != nil || !ok {
		t.Fatalf("the probe's success was not recorded: %v, %v", ok, err)
	}
	for i, st := range r {
		cs, err := st.Circuits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c := cs["r"]; c.State != outbox.CircuitClosed || c.ConsecutiveFailures != 0 || c.ProbeHolder != "" {
			t.Errorf("replica %d sees %+v after the probe succeeded, want closed", i, c)
		}
	}
}

// TestReleaseCircuitProbe: a probe that was not sent goes to the next
// replica at once.
func TestReleaseCircuitProbe(t *testing.T) {
	t.Parallel()
	r := replicas(t, 2)
	ctx := context.Background()
	b := store.BreakerSettings{Failures: 1, Cooldown: time.Second, MaxCooldown: time.Second}
	if c, _, err := r[0].RecordCircuitFailure(ctx, "r", b, "down"); err != nil || c.State != outbox.CircuitOpen {
		t.Fatalf("one failure with failures: 1 gave %+v, %v; want open", c, err)
	}
	waitUntil(t, "the cooldown to end", func() bool {
		_, ok, err := r[0].TryCircuitProbe(ctx, "r", "a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if err := r[0].ReleaseCircuitProbe(ctx, "r", "a"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := r[1].TryCircuitProbe(ctx, "r", "b", time.Hour); err != nil || !ok {
		t.Fatalf("after a release the other replica could not take the probe: %v, %v", ok, err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 30 s waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
