package faults

import (
	"context"
	"fmt"
	"net/http"
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
	routes := route("hooks", "/hooks", "5s", `    retry: {initial_backoff: 200ms, max_backoff: 2s}
    concurrency: 4`)
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
	extra, dupKeys := tg.duplicates()
	if extra > 0 {
		t.Errorf("%d duplicate deliveries with no replica crashed (keys %v)", extra, dupKeys)
	}
	if byReplica["a"] == 0 || byReplica["b"] == 0 {
		t.Errorf("deliveries by replica: %v; both should have worked", byReplica)
	}
	figure(t, "%d events through two replicas, delivered by replica %v, duplicates %d", len(keys), byReplica, extra)

	// Hold deliveries at the target, then kill the replica holding most.
	hold := newLedger()
	httpc := &http.Client{Timeout: 5 * time.Second}
	for i := range 8 {
		key := fmt.Sprintf("hold-%d", i)
		waitUntil(t, 30*time.Second, "hold event "+key+" to be acknowledged", func() bool {
			return post(context.Background(), httpc, hold, bases[i%2], "hooks", key, fmt.Appendf(nil, `{"id":%q}`, key))
		})
	}
	var victim, survivor string
	waitUntil(t, 30*time.Second, "held deliveries in flight", func() bool {
		return tg.inflight.Load() >= 2
	})
	time.Sleep(200 * time.Millisecond) // let both replicas pick some up
	active := tg.activeKeys()
	count := map[string]int{}
	for _, replica := range active {
		count[replica]++
	}
	victim, survivor = "a", "b"
	if count["b"] > count["a"] {
		victim, survivor = "b", "a"
	}
	replicas[victim].kill()
	killedAt := time.Now()
	mu.Lock()
	close(release)
	mu.Unlock()
	var victimKeys []string
	for k, replica := range active {
		if replica == victim {
			victimKeys = append(victimKeys, k)
		}
	}
	if len(victimKeys) == 0 {
		t.Fatalf("no held delivery was in flight on the killed replica: %v", active)
	}

	holdKeys := hold.keys()
	checkNoLoss(t, p, "hooks", holdKeys)
	_, settledAt := waitSettled(t, p, "hooks", holdKeys, 150*time.Second)
	for _, k := range holdKeys {
		if replicas := tg.deliveredBy(k); len(replicas) != 1 {
			t.Errorf("%s delivered %d times (by %v), want once: the killed replica never got an answer", k, len(replicas), replicas)
		}
	}
	for _, k := range victimKeys {
		if by := tg.deliveredBy(k); len(by) != 1 || by[0] != survivor {
			t.Errorf("%s was in flight on killed replica %s; delivered by %v, want by the survivor %s", k, victim, by, survivor)
		}
	}
	figure(t, "killed replica %s with %d deliveries in flight; the survivor rescued and delivered them %s after the kill",
		victim, len(victimKeys), round(settledAt.Sub(killedAt)))
}
