package faults

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTwoReplicas runs two `outbox serve` replicas on one database. While
// both run, senders post to either and no event is delivered twice. Then
// one replica is SIGKILLed in the middle of deliveries the target is
// holding: River's rescuer hands them to the survivor, which delivers them.
func TestTwoReplicas(t *testing.T) {
	suite(t)
	dbURL := shared(t).database(t, "replicas")
	var mu sync.Mutex
	release := make(chan struct{})
	tg := newTarget(t, func(r *http.Request) (int, <-chan struct{}) {
		if strings.HasPrefix(r.Header.Get("X-Outbox-Key"), "hold-") {
			mu.Lock()
			defer mu.Unlock()
			return http.StatusOK, release
		}
		time.Sleep(5 * time.Millisecond)
		return http.StatusOK, nil
	})
	// A short target timeout keeps the rescue quick: River rescues a
	// running job after the longest timeout plus 30 s, checking every 30 s.
	const concurrency = 4
	routes := route("hooks", "/hooks", "5s", fmt.Sprintf(`    retry: {initial_backoff: 200ms, max_backoff: 2s}
    concurrency: %d`, concurrency))
	replicas := map[string]*serve{}
	for _, name := range []string{"a", "b"} {
		port := freePort(t)
		cfgPath := config{dbURL: dbURL, port: port, replica: name, routes: routes}.write(t, tg.srv.URL)
		if name == "a" {
			migrate(t, cfgPath)
		}
		replicas[name] = startServe(t, "replica-"+name, cfgPath, port)
	}
	bases := []string{replicas["a"].base, replicas["b"].base}
	p := pool(t, dbURL)

	// Both replicas up: exactly one delivery per event.
	l := newLedger()
	senders(context.Background(), l, 20, 50, "both", 5*time.Millisecond, func(c, i int) string { return bases[(c+i)%2] }).Wait()
	keys := l.keys()
	checkNoLoss(t, p, "hooks", keys)
	waitSettled(t, p, "hooks", keys, 60*time.Second)
	l.checkContract(t)
	byReplica := map[string]int{}
	for _, r := range tg.log() {
		byReplica[r.replica]++
	}
	extra, late, dupKeys := tg.duplicatesBeyond(t, p, "hooks")
	if extra > 0 {
		t.Errorf("%d duplicate deliveries with no replica crashed (keys %v); without a crash the bound is 0", extra, dupKeys)
	}
	if byReplica["a"] == 0 || byReplica["b"] == 0 {
		t.Errorf("deliveries by replica: %v; both should have worked", byReplica)
	}
	figure(t, "%d events through two replicas, delivered by replica %v, duplicates %d (and %d whose 2xx came after target.timeout)", len(keys), byReplica, extra, late)

	// Hold deliveries at the target, then kill the replica holding most.
	hold := newLedger()
	httpc := &http.Client{Timeout: 5 * time.Second}
	for i := range 8 {
		key := fmt.Sprintf("hold-%d", i)
		waitUntil(t, 30*time.Second, "hold event "+key+" to be acknowledged", func() bool {
			return post(context.Background(), httpc, hold, bases[i%2], "hooks", key, fmt.Appendf(nil, `{"id":%q}`, key))
		})
	}
	var active map[string]string
	waitUntil(t, 30*time.Second, "held deliveries in flight", func() bool {
		active = tg.activeKeys()
		return len(active) >= 2
	})
	count := map[string]int{}
	for _, replica := range active {
		count[replica]++
	}
	victim, survivor := "a", "b"
	if count["b"] > count["a"] {
		victim, survivor = "b", "a"
	}
	var victimKeys []string
	for k, replica := range active {
		if replica == victim {
			victimKeys = append(victimKeys, k)
		}
	}
	replicas[victim].kill()
	killedAt := time.Now()
	// The target processes a held request only if it is released before
	// its caller hangs up. Release only once the target has seen every
	// request of the killed replica end, so none of them counts as
	// processed: the killed replica never got an answer, and each held
	// event must reach the target exactly once. (Released earlier, such a
	// request is a delivery the crash repeats, within crashBound.)
	waitUntil(t, 30*time.Second, "the target to see the killed replica's requests end", func() bool {
		for _, replica := range tg.activeKeys() {
			if replica == victim {
				return false
			}
		}
		return true
	})
	mu.Lock()
	close(release)
	mu.Unlock()

	holdKeys := hold.keys()
	checkNoLoss(t, p, "hooks", holdKeys)
	_, settledAt := waitSettled(t, p, "hooks", holdKeys, 150*time.Second)
	// Each held event reaches the target once: the killed replica never
	// got an answer, so nothing it sent is repeated. A second 2xx is
	// allowed only where the target answered after target.timeout.
	extraAfter, lateAfter, dupKeys := tg.duplicatesBeyond(t, p, "hooks")
	for _, k := range holdKeys {
		if by := tg.deliveredBy(k); len(by) == 0 || slices.Contains(dupKeys, k) {
			t.Errorf("%s delivered %d times (by %v), want once: the target never answered the killed replica", k, len(by), by)
		}
	}
	for _, k := range victimKeys {
		if by := tg.deliveredBy(k); len(by) == 0 || slices.Contains(by, victim) {
			t.Errorf("%s was in flight on killed replica %s; delivered by %v, want by the survivor %s only", k, victim, by, survivor)
		}
	}
	if extraAfter > concurrency {
		t.Errorf("%d duplicate deliveries after one replica was killed (keys %v); %s", extraAfter, dupKeys, crashBound(concurrency, 1))
	}
	figure(t, "killed replica %s with %d deliveries in flight; the survivor rescued and delivered them %s after the kill; duplicates %d of at most %d (and %d whose 2xx came after target.timeout)",
		victim, len(victimKeys), round(settledAt.Sub(killedAt)), extraAfter, concurrency, lateAfter)
}
