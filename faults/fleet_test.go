package faults

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os/exec"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The cases of issue 12: a route's concurrency, rate limit and circuit
// breaker hold for the whole fleet, and its concurrency adapts to the
// target's real capacity. Each starts several real replicas on one
// database.

// fleet starts n replicas of outbox serve on dbURL with routes (see
// route), named a, b, c…, the first migrating the database, and returns
// them and the config path of the first (for CLI commands).
func fleet(t *testing.T, n int, dbURL, routes string, tg *target) ([]*serve, string) {
	t.Helper()
	var out []*serve
	var first string
	for i := range n {
		name := string(rune('a' + i))
		port := freePort(t)
		cfgPath := config{dbURL: dbURL, port: port, replica: name, routes: routes}.write(t, tg.srv.URL)
		if i == 0 {
			migrate(t, cfgPath)
			first = cfgPath
		}
		out = append(out, startServe(t, "replica-"+name, cfgPath, port))
	}
	return out, first
}

// routesCmd runs `outbox routes <args…>` with the config.
func routesCmd(t *testing.T, cfgPath string, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append(append([]string{"routes"}, args...), "--config", cfgPath)...).CombinedOutput()
	if err != nil {
		t.Fatalf("outbox routes %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// queue posts n events spread over the replicas and returns their keys.
func queue(t *testing.T, replicas []*serve, n int, prefix string) []string {
	t.Helper()
	l := newLedger()
	clients := 10
	senders(context.Background(), l, clients, n/clients, prefix, 0, func(c, i int) string { return replicas[(c+i)%len(replicas)].base }).Wait()
	if got := l.count(); got != n {
		t.Fatalf("%d of %d events acknowledged", got, n)
	}
	l.checkContract(t)
	return l.keys()
}

// TestFleetFixedConcurrency: three replicas, a route with concurrency 4 and
// adaptive_concurrency off. The target never sees more than 4 requests in
// flight, though each replica alone would send 4.
func TestFleetFixedConcurrency(t *testing.T) {
	suite(t)
	const concurrency, events = 4, 150
	dbURL := shared(t).database(t, "fleet_fixed")
	tg := newTarget(t, func(*http.Request) (int, <-chan struct{}) {
		time.Sleep(30 * time.Millisecond)
		return http.StatusOK, nil
	})
	replicas, _ := fleet(t, 3, dbURL, route("hooks", "/hooks", "5s", fmt.Sprintf(`    concurrency: %d
    adaptive_concurrency: false`, concurrency)), tg)
	began := time.Now()
	keys := queue(t, replicas, events, "fixed")
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	got, settledAt := waitSettled(t, p, "hooks", keys, 120*time.Second)
	for _, k := range keys {
		if got[k].dead {
			t.Errorf("%s became a dead letter", k)
		}
	}
	byReplica := map[string]int{}
	for _, r := range tg.log() {
		byReplica[r.replica]++
	}
	if peak := tg.peak.Load(); peak > concurrency {
		t.Errorf("the target saw %d requests in flight from 3 replicas, want at most the route's concurrency %d", peak, concurrency)
	}
	figure(t, "3 replicas, concurrency %d fixed: the target's peak in flight %d; %d events in %s, by replica %v",
		concurrency, tg.peak.Load(), events, round(settledAt.Sub(began)), byReplica)
}

// TestFleetOutage: three replicas, a 30 s outage of the target with 150
// events queued, the route's defaults otherwise (adaptive concurrency,
// circuit_breaker failures 5 and cooldown 30 s). The fleet's one breaker
// lets the target see at most 12 requests during the outage, where three
// per-replica breakers sent 18; no event becomes a dead letter, and all
// are delivered after recovery.
func TestFleetOutage(t *testing.T) {
	suite(t)
	const (
		outage = 30 * time.Second
		events = 150
		bound  = 12
	)
	dbURL := shared(t).database(t, "fleet_outage")
	var failing atomic.Bool
	failing.Store(true)
	tg := newTarget(t, func(*http.Request) (int, <-chan struct{}) {
		if failing.Load() {
			return http.StatusInternalServerError, nil
		}
		return http.StatusOK, nil
	})
	replicas, cfgPath := fleet(t, 3, dbURL, route("hooks", "/hooks", "2s", `    retry: {initial_backoff: 1s, max_backoff: 30s}`), tg)
	outageStart := time.Now()
	keys := queue(t, replicas, events, "outage")
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	// Any replica, and the CLI, sees the fleet's circuit open.
	waitUntil(t, 20*time.Second, "routes list to show the circuit open", func() bool {
		out, err := exec.Command(binary, "routes", "list", "--config", cfgPath).CombinedOutput()
		return err == nil && regexpMatch(`hooks +active +open `, string(out))
	})
	time.Sleep(time.Until(outageStart.Add(outage)))
	failing.Store(false)
	outageEnd := time.Now()

	got, settledAt := waitSettled(t, p, "hooks", keys, 180*time.Second)
	during := 0
	byReplica := map[string]int{}
	for _, r := range tg.log() {
		if r.at.Before(outageEnd) {
			during++
			byReplica[r.replica]++
		}
	}
	if during > bound {
		t.Errorf("the target got %d requests from 3 replicas during the %s outage (by replica %v), want at most %d for the fleet", during, outage, byReplica, bound)
	}
	dead := 0
	for _, k := range keys {
		if got[k].dead {
			dead++
		}
	}
	if dead > 0 {
		t.Errorf("%d events became dead letters; an outage shorter than give_up_after must not cost any", dead)
	}
	opened := 0
	for _, s := range replicas {
		if regexpMatch(`circuit breaker opened for the fleet`, s.log()) {
			opened++
		}
	}
	if opened != 1 {
		t.Errorf("%d replicas logged opening the circuit, want exactly 1: the breaker is the fleet's", opened)
	}
	figure(t, "3 replicas, %s outage, %d queued events: %d target requests during the outage (bound %d; by replica %v); dead letters %d; recovered to drained in %s",
		outage, events, during, bound, byReplica, dead, round(settledAt.Sub(outageEnd)))
}

// capacityTarget answers in 20 ms + 10 ms × the requests it has in flight,
// and refuses with 503 (no Retry-After) past 6 in flight: a service with a
// small database pool.
type capacityTarget struct {
	inflight          atomic.Int64
	answered, refused atomic.Int64
}

func (c *capacityTarget) behave(*http.Request) (int, <-chan struct{}) {
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	if n > 6 {
		c.refused.Add(1)
		return http.StatusServiceUnavailable, nil
	}
	time.Sleep(20*time.Millisecond + time.Duration(n)*10*time.Millisecond)
	c.answered.Add(1)
	return http.StatusOK, nil
}

// TestFleetAdaptiveFindsCapacity: concurrency 32 with adaptive concurrency
// on, three replicas, and a target that takes 6 at a time. 400 queued
// events are delivered with at most 10% of requests refused and no dead
// letter, in a few times the ideal 5.3 s (6 in flight at 80 ms). The
// bound asserted is generous, for slow machines; the figure reports the
// time.
func TestFleetAdaptiveFindsCapacity(t *testing.T) {
	suite(t)
	const events = 400
	ideal := time.Duration(events) * time.Second / 75
	dbURL := shared(t).database(t, "fleet_capacity")
	ct := &capacityTarget{}
	tg := newTarget(t, ct.behave)
	// The breaker's cooldown is the bench's capacity phase's (5 s, at most
	// 20 s), not the default 30 s: slow start on three replicas can
	// overshoot the target's 6 with a burst of refusals that opens the
	// fleet's breaker (5 failures in a row), and with the default cooldown
	// that one opening, not the limiter, made the run 38 to 69 s in 3 of 9
	// runs. The figure still shows it; the bound is about the limiter.
	replicas, cfgPath := fleet(t, 3, dbURL, route("hooks", "/hooks", "5s", `    concurrency: 32
    retry: {initial_backoff: 1s, max_backoff: 5s}
    circuit_breaker: {failures: 5, cooldown: 5s, max_cooldown: 20s}`), tg)
	// Queue the events while the route is paused, so that delivery starts
	// on a backlog, as after an outage.
	routesCmd(t, cfgPath, "pause", "hooks")
	keys := queue(t, replicas, events, "capacity")
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	began := time.Now()
	routesCmd(t, cfgPath, "resume", "hooks")
	got, settledAt := waitSettled(t, p, "hooks", keys, 5*time.Minute)
	took := settledAt.Sub(began)
	dead := 0
	for _, k := range keys {
		if got[k].dead {
			dead++
		}
	}
	requests, refused := len(tg.log()), int(ct.refused.Load())
	if dead > 0 {
		t.Errorf("%d events became dead letters", dead)
	}
	if refused*10 > requests {
		t.Errorf("%d of %d requests were refused, want at most 10%%", refused, requests)
	}
	// A few times the ideal on a quiet machine; the bound leaves room for
	// a loaded one (the fault suite runs cases in parallel on 2 cores).
	if took > 12*ideal {
		t.Errorf("400 events took %s, want within 12 × the ideal %s", round(took), round(ideal))
	}
	figure(t, "3 replicas, concurrency 32 adaptive, target of capacity 6: %d events in %s (%.1f × the ideal %s); %d requests, %d refused (%.1f%%); peak in flight %d; dead letters %d",
		events, round(took), took.Seconds()/ideal.Seconds(), round(ideal), requests, refused, 100*float64(refused)/float64(max(requests, 1)), tg.peak.Load(), dead)
}

// TestFleetLatencyJumps: the target's latency jumps tenfold for 5 s every
// 20 s. It answers in 100 ms + 2 ms × its requests in flight, so that the
// adaptive limit reaches the route's concurrency between jumps. During
// each jump the target gets fewer requests in flight than in the 5 s
// before it: the limit backs off, rather than keeping the slowed target
// as busy as before.
func TestFleetLatencyJumps(t *testing.T) {
	suiteAlone(t)
	const (
		period, length, offset = 20 * time.Second, 5 * time.Second, 15 * time.Second
		jumps                  = 2
		events                 = 3600
	)
	dbURL := shared(t).database(t, "fleet_jumps")
	var (
		startMu sync.Mutex
		start   time.Time
	)
	jumping := func(at time.Time) bool {
		startMu.Lock()
		s := start
		startMu.Unlock()
		if s.IsZero() || at.Before(s.Add(offset)) {
			return false
		}
		return at.Sub(s.Add(offset))%period < length
	}
	var inflight atomic.Int64
	tg := newTarget(t, func(*http.Request) (int, <-chan struct{}) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		d := 100*time.Millisecond + time.Duration(n)*2*time.Millisecond
		if jumping(time.Now()) {
			d *= 10
		}
		time.Sleep(d)
		return http.StatusOK, nil
	})
	replicas, cfgPath := fleet(t, 2, dbURL, route("hooks", "/hooks", "10s", `    concurrency: 8`), tg)
	routesCmd(t, cfgPath, "pause", "hooks")
	keys := queue(t, replicas, events, "jumps")
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	startMu.Lock()
	start = time.Now()
	startMu.Unlock()
	routesCmd(t, cfgPath, "resume", "hooks")

	// Sample the target's requests in flight every 20 ms until the end of
	// the last jump.
	end := start.Add(offset + time.Duration(jumps-1)*period + length)
	type sample struct {
		at time.Duration
		n  int64
	}
	var samples []sample
	for now := time.Now(); now.Before(end); now = time.Now() {
		samples = append(samples, sample{now.Sub(start), inflight.Load()})
		time.Sleep(20 * time.Millisecond)
	}
	mean := func(from, to time.Duration) float64 {
		sum, n := 0.0, 0
		for _, s := range samples {
			if s.at >= from && s.at < to {
				sum += float64(s.n)
				n++
			}
		}
		if n == 0 {
			return math.NaN()
		}
		return sum / float64(n)
	}
	var rows []string
	for i := range jumps {
		at := offset + time.Duration(i)*period
		before, during := mean(at-length, at), mean(at, at+length)
		rows = append(rows, fmt.Sprintf("%.1f → %.1f", before, during))
		if !(during < before) {
			t.Errorf("jump %d: %.2f requests in flight on average during the jump, %.2f in the 5 s before it; want fewer during", i+1, during, before)
		}
	}
	state, err := waiting(p, "hooks")
	if err != nil {
		t.Fatal(err)
	}
	if state == 0 {
		t.Errorf("the backlog ran out before the last jump ended: the comparison needs a backlog throughout; queue more events")
	}
	figure(t, "2 replicas, concurrency 8 adaptive, target 100 ms + 2 ms × in-flight, latency ×10 for 5 s every 20 s: mean in flight before → during each jump: %v; %d events still queued at the end", rows, state)
}

// waiting counts the route's deliveries not yet done.
func waiting(p *pgxpool.Pool, routeName string) (int, error) {
	var n int
	err := p.QueryRow(context.Background(),
		`SELECT count(*) FROM river_job WHERE queue = $1 AND state IN ('available', 'scheduled', 'retryable', 'running')`, routeName).Scan(&n)
	return n, err
}

// regexpMatch reports whether s matches the regular expression re.
func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// TestFleetKilledReplicaShareComesBack: two replicas share a route with
// concurrency 4 and adaptive_concurrency off, 2 each. One is killed; its
// lease expires within the lease TTL (15 s), and the survivor then sends 4
// at a time: the killed replica's capacity is back well within River's
// rescue interval.
func TestFleetKilledReplicaShareComesBack(t *testing.T) {
	suite(t)
	const concurrency = 4
	dbURL := shared(t).database(t, "fleet_killed")
	tg := newTarget(t, func(*http.Request) (int, <-chan struct{}) {
		time.Sleep(200 * time.Millisecond)
		return http.StatusOK, nil
	})
	replicas, _ := fleet(t, 2, dbURL, route("hooks", "/hooks", "2s", fmt.Sprintf(`    concurrency: %d
    adaptive_concurrency: false`, concurrency)), tg)
	keys := queue(t, replicas, 600, "killed")
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	perReplica := func() map[string]int {
		n := map[string]int{}
		for _, replica := range tg.activeKeys() {
			n[replica]++
		}
		return n
	}
	waitUntil(t, 30*time.Second, "both replicas to deliver at once", func() bool {
		n := perReplica()
		return n["a"] > 0 && n["b"] > 0
	})
	replicas[0].kill()
	killedAt := time.Now()
	const ttl = 15 * time.Second
	var back time.Duration
	waitUntil(t, ttl+20*time.Second, fmt.Sprintf("the survivor to send %d at a time", concurrency), func() bool {
		if perReplica()["b"] >= concurrency {
			back = time.Since(killedAt)
			return true
		}
		return false
	})
	if peak := tg.peak.Load(); peak > concurrency {
		t.Errorf("the target saw %d requests in flight, want at most %d", peak, concurrency)
	}
	figure(t, "killed one of 2 replicas sharing concurrency %d: the survivor sent %d at a time %s after the kill (lease TTL %s; River's rescue of the killed replica's jobs comes after about a minute)",
		concurrency, concurrency, round(back), ttl)
}
