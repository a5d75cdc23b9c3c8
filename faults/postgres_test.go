package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestPostgresRestartWhileClientsPost crashes Postgres (immediate stop, as a
// power cut) while 20 clients post, keeps it down for 5 s, and starts it
// again. Senders get 503 with Retry-After, never a 500 and never silence
// past their 5 s timeout; /readyz says 503 while it is down (once its
// one-second cache has expired); the same serve process recovers by
// itself; every acknowledged event is delivered, and a delivery is repeated
// only within the crash bound.
func TestPostgresRestartWhileClientsPost(t *testing.T) {
	suite(t)
	pg, err := newCluster("restart") // its own cluster: the other cases keep theirs up
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pg.database(t, "restart")
	tg := newTarget(t, ok)
	port := freePort(t)
	const concurrency = 4
	cfg := config{dbURL: dbURL, port: port, replica: "a", routes: route("hooks", "/hooks", "2s", fmt.Sprintf(`    retry: {initial_backoff: 200ms, max_backoff: 2s}
    concurrency: %d`, concurrency))}
	cfgPath := cfg.write(t, tg.srv.URL)
	migrate(t, cfgPath)
	srv := startServe(t, "serve", cfgPath, port)

	l := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	wg := senders(ctx, l, 20, 10000, "pg", 20*time.Millisecond, func(int, int) string { return srv.base })
	waitUntil(t, 60*time.Second, "200 acknowledged events before the crash", func() bool { return l.count() >= 200 })

	pg.crash(t)
	downAt := time.Now()
	// /readyz caches its check for a second, so it may say 200 just after
	// the crash; once it says 503, it must keep saying so while Postgres
	// is down.
	waitUntil(t, 10*time.Second, "/readyz to answer 503 after the crash", func() bool { return srv.readyz() == http.StatusServiceUnavailable })
	notReadyAfter := time.Since(downAt)
	var readyWhileDown []int
	for time.Since(downAt) < 5*time.Second {
		readyWhileDown = append(readyWhileDown, srv.readyz())
		time.Sleep(500 * time.Millisecond)
	}
	l.mu.Lock()
	ackedWhileUp, unavailable := len(l.acked), l.statuses[http.StatusServiceUnavailable]
	l.mu.Unlock()
	pg.start(t)
	upAt := time.Now()
	waitUntil(t, 60*time.Second, "/readyz to answer 200 again without a restart", func() bool { return srv.readyz() == http.StatusOK })
	readyAt := time.Now()
	waitUntil(t, 60*time.Second, "200 more acknowledged events after recovery", func() bool { return l.count() >= ackedWhileUp+200 })
	stop()
	wg.Wait()

	select {
	case <-srv.done:
		t.Fatal("serve exited when Postgres went away; it must wait for it to come back")
	default:
	}
	for _, status := range readyWhileDown {
		if status != http.StatusServiceUnavailable {
			t.Errorf("/readyz answered %d while Postgres was down, want 503 (all: %v)", status, readyWhileDown)
			break
		}
	}
	if unavailable == 0 {
		t.Error("no sender got a 503 while Postgres was down: the crash did not reach intake")
	}
	l.checkContract(t)
	l.mu.Lock()
	lat := l.latencies[http.StatusServiceUnavailable]
	statuses := l.statuses
	l.mu.Unlock()
	if m := maxOf(lat); m >= 5*time.Second {
		t.Errorf("a 503 took %s; the sender's timeout is 5s", m)
	}

	keys := l.keys()
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	got, drainedAt := waitSettled(t, p, "hooks", keys, 150*time.Second)
	for _, k := range keys {
		if !got[k].delivered {
			t.Errorf("%s is a dead letter; the target never failed", k)
		}
	}
	extra, late, dupKeys := tg.duplicatesBeyond(t, p, "hooks")
	// A Postgres crash is a crash: a 2xx whose commit it lost is sent again.
	if extra > concurrency {
		t.Errorf("the target got %d duplicate deliveries (keys %v); %s", extra, dupKeys, crashBound(concurrency, 1))
	}
	figure(t, "%d events acknowledged; answers by status %v; %d connection errors", len(keys), statuses, l.netErrors)
	figure(t, "503 latency while Postgres was down: median %s, max %s (%d answers); /readyz 503 %s after the crash, then %v",
		round(median(lat)), round(maxOf(lat)), len(lat), round(notReadyAfter), readyWhileDown)
	figure(t, "Postgres up to /readyz 200: %s; Postgres up to drained: %s; duplicate deliveries: %d of at most %d, %d more whose 2xx came after target.timeout",
		round(readyAt.Sub(upAt)), round(drainedAt.Sub(upAt)), extra, concurrency, late)
}
