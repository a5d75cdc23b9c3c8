package faults

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// orderedRoute is the route of the ordering cases: each sender client is
// a conversation (the body's "client"), whose events it posts one after
// the other, each once the previous was acknowledged.
func orderedRoute(concurrency int) string {
	return route("hooks", "/hooks", "2s", fmt.Sprintf(`    ordering: {key: [{json: /client}]}
    retry: {initial_backoff: 200ms, max_backoff: 2s}
    concurrency: %d`, concurrency))
}

// orderChecker is a target behaviour that needs each conversation's events
// in order: it records, per conversation, what it acknowledged, every
// request that came before its predecessor was acknowledged, and every
// request that overlapped another of the same conversation (from any
// replica).
type orderChecker struct {
	mu         sync.Mutex
	acked      map[int][]int // conversation -> events acknowledged, in order (repeats included)
	done       map[int]map[int]bool
	inflight   map[int]int
	overlaps   int
	early      []string
	duplicates int
}

func newOrderChecker() *orderChecker {
	return &orderChecker{acked: map[int][]int{}, done: map[int]map[int]bool{}, inflight: map[int]int{}}
}

// parseKey reads a sender's key, PREFIX-CC-IIIII.
func parseKey(key string) (conv, n int) {
	parts := strings.Split(key, "-")
	conv, _ = strconv.Atoi(parts[len(parts)-2])
	n, _ = strconv.Atoi(parts[len(parts)-1])
	return conv, n
}

// behave answers 200 after a little work, recording what it sees.
func (oc *orderChecker) behave(r *http.Request) (int, <-chan struct{}) {
	conv, n := parseKey(r.Header.Get("X-Outbox-Key"))
	oc.mu.Lock()
	oc.inflight[conv]++
	if oc.inflight[conv] > 1 {
		oc.overlaps++
	}
	if n > 0 && !oc.done[conv][n-1] {
		oc.early = append(oc.early, fmt.Sprintf("%02d-%05d before %02d-%05d was acknowledged", conv, n, conv, n-1))
	}
	oc.mu.Unlock()
	time.Sleep(3 * time.Millisecond) // work, during which an overlap would show
	oc.mu.Lock()
	oc.inflight[conv]--
	if oc.done[conv] == nil {
		oc.done[conv] = map[int]bool{}
	}
	if oc.done[conv][n] {
		oc.duplicates++
	}
	oc.done[conv][n] = true
	oc.acked[conv] = append(oc.acked[conv], n)
	oc.mu.Unlock()
	return http.StatusOK, nil
}

// check fails the test for any event sent early, any overlap, and any
// conversation whose acknowledged events, a repeat of the one just before
// aside (a delivery answered just before a crash, sent again), are not
// 0, 1, 2, ... up to what its sender got acknowledged. It returns the
// repeats.
func (oc *orderChecker) check(t *testing.T, l *ledger) int {
	t.Helper()
	sent := map[int]int{} // conversation -> events acknowledged to the sender
	for _, k := range l.keys() {
		conv, n := parseKey(k)
		sent[conv] = max(sent[conv], n+1)
	}
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if len(oc.early) > 0 {
		t.Errorf("%d events were sent before their predecessor was acknowledged, e.g. %v", len(oc.early), oc.early[:min(5, len(oc.early))])
	}
	if oc.overlaps > 0 {
		t.Errorf("%d requests overlapped another of the same conversation", oc.overlaps)
	}
	for conv, want := range sent {
		got := oc.acked[conv]
		var order []int
		for _, n := range got {
			if len(order) > 0 && order[len(order)-1] == n {
				continue // the repeat of a delivery cut off by a crash
			}
			order = append(order, n)
		}
		for i, n := range order {
			if n != i {
				t.Errorf("conversation %02d: events acknowledged in the order %v", conv, order)
				break
			}
		}
		if len(order) < want {
			t.Errorf("conversation %02d: %d events delivered, %d acknowledged to its sender", conv, len(order), want)
		}
	}
	return oc.duplicates
}

// TestOrderingAcrossReplicasAndKill posts 12 conversations through two
// replicas, SIGKILLs one in the middle of deliveries and starts it again.
// No conversation is ever delivered out of order or two events at once,
// none loses its place, and the only repeats are deliveries the killed
// replica had in flight.
func TestOrderingAcrossReplicasAndKill(t *testing.T) {
	suite(t)
	const concurrency = 4
	dbURL := shared(t).database(t, "ordering_kill")
	oc := newOrderChecker()
	tg := newTarget(t, oc.behave)
	cfgs := map[string]string{}
	ports := map[string]string{}
	replicas := map[string]*serve{}
	for _, name := range []string{"a", "b"} {
		ports[name] = freePort(t)
		cfgs[name] = config{dbURL: dbURL, port: ports[name], replica: name, routes: orderedRoute(concurrency)}.write(t, tg.srv.URL)
		if name == "a" {
			migrate(t, cfgs[name])
		}
		replicas[name] = startServe(t, "ordering-"+name, cfgs[name], ports[name])
	}
	bases := []string{replicas["a"].base, replicas["b"].base}
	l := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	wg := senders(ctx, l, 12, 10000, "ord", 5*time.Millisecond, func(c, i int) string { return bases[(c+i)%2] })
	waitUntil(t, 60*time.Second, "300 acknowledged events before the kill", func() bool { return l.count() >= 300 })
	waitUntil(t, 30*time.Second, "a delivery in flight from replica a", func() bool {
		for _, replica := range tg.activeKeys() {
			if replica == "a" {
				return true
			}
		}
		return false
	})
	replicas["a"].kill()
	ackedAtKill := l.count()
	time.Sleep(time.Second)
	replicas["a"] = startServe(t, "ordering-a2", cfgs["a"], ports["a"])
	restartedAt := time.Now()
	waitUntil(t, 60*time.Second, "300 more acknowledged events after the restart", func() bool { return l.count() >= ackedAtKill+300 })
	stop()
	wg.Wait()

	keys := l.keys()
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	_, drainedAt := waitSettled(t, p, "hooks", keys, 150*time.Second)
	l.checkContract(t)
	repeats := oc.check(t, l)
	if repeats > concurrency {
		t.Errorf("%d deliveries repeated; only the %d the killed replica had in flight may be", repeats, concurrency)
	}
	figure(t, "%d events of 12 conversations through two replicas, one SIGKILLed after %d: %d sent before their predecessor was acknowledged, %d overlaps, %d repeated; drained %s after the restart",
		len(keys), ackedAtKill, len(oc.early), oc.overlaps, repeats, round(drainedAt.Sub(restartedAt)))
}

// TestOrderingPostgresCrash crashes Postgres (immediate stop) while 12
// conversations are posted and delivered, and starts it again: every
// acknowledged event is delivered, each conversation in order, none two at
// once.
func TestOrderingPostgresCrash(t *testing.T) {
	suite(t)
	pg, err := newCluster("ordering_crash")
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pg.database(t, "ordering_crash")
	oc := newOrderChecker()
	tg := newTarget(t, oc.behave)
	port := freePort(t)
	cfgPath := config{dbURL: dbURL, port: port, replica: "a", routes: orderedRoute(4)}.write(t, tg.srv.URL)
	migrate(t, cfgPath)
	srv := startServe(t, "serve", cfgPath, port)
	l := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	wg := senders(ctx, l, 12, 10000, "ordpg", 10*time.Millisecond, func(int, int) string { return srv.base })
	waitUntil(t, 60*time.Second, "200 acknowledged events before the crash", func() bool { return l.count() >= 200 })
	pg.crash(t)
	time.Sleep(3 * time.Second)
	ackedAtCrash := l.count()
	pg.start(t)
	waitUntil(t, 90*time.Second, "200 more acknowledged events after the restart", func() bool { return l.count() >= ackedAtCrash+200 })
	stop()
	wg.Wait()

	keys := l.keys()
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	waitSettled(t, p, "hooks", keys, 150*time.Second)
	l.checkContract(t)
	repeats := oc.check(t, l)
	if repeats > 4 {
		t.Errorf("%d deliveries repeated; only those in flight at the crash (concurrency 4) may be", repeats)
	}
	figure(t, "%d events of 12 conversations across a Postgres crash: %d sent before their predecessor was acknowledged, %d overlaps, %d repeated", len(keys), len(oc.early), oc.overlaps, repeats)
}
