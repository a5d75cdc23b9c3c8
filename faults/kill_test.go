package faults

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// TestKillServeWhileClientsPost SIGKILLs `outbox serve` while 24 clients
// post and deliveries are in flight, restarts it, and checks that every
// acknowledged event was delivered. The only duplicates allowed are the
// documented bound: deliveries the killed replica had sent and not yet
// recorded, at most the route's concurrency, since a delivery holds its
// slot until its outcome is recorded.
func TestKillServeWhileClientsPost(t *testing.T) {
	suite(t)
	const concurrency = 8
	dbURL := shared(t).database(t, "kill")
	tg := newTarget(t, func(*http.Request) (int, <-chan struct{}) {
		time.Sleep(20 * time.Millisecond) // keeps some deliveries in flight at the kill
		return http.StatusOK, nil
	})
	port := freePort(t)
	cfg := config{dbURL: dbURL, port: port, replica: "a", routes: route("hooks", "/hooks", "2s", `    retry: {initial_backoff: 200ms, max_backoff: 2s}
    concurrency: 8`)}
	cfgPath := cfg.write(t, tg.srv.URL)
	migrate(t, cfgPath)
	srv := startServe(t, "serve-1", cfgPath, port)

	l := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	wg := senders(ctx, l, 24, 10000, "kill", 10*time.Millisecond, func(int, int) string { return srv.base })
	waitUntil(t, 60*time.Second, "300 acknowledged events before the kill", func() bool { return l.count() >= 300 })
	waitUntil(t, 30*time.Second, "deliveries in flight", func() bool { return tg.inflight.Load() > 0 })
	srv.kill()
	ackedAtKill := l.count()
	time.Sleep(time.Second)                 // senders get connection refused meanwhile
	startServe(t, "serve-2", cfgPath, port) // same port: senders carry on
	restartedAt := time.Now()
	waitUntil(t, 60*time.Second, "300 more acknowledged events after the restart", func() bool { return l.count() >= ackedAtKill+300 })
	stop()
	wg.Wait()

	keys := l.keys()
	p := pool(t, dbURL)
	checkNoLoss(t, p, "hooks", keys)
	// Deliveries that were running at the kill wait for River's rescuer:
	// target timeout + 30 s, checked every 30 s.
	got, drainedAt := waitSettled(t, p, "hooks", keys, 150*time.Second)
	for _, k := range keys {
		if !got[k].delivered {
			t.Errorf("%s is a dead letter; the target never failed", k)
		}
	}
	l.checkContract(t)
	extra, late, dupKeys := tg.duplicatesBeyond(t, p, "hooks")
	figure(t, "%d events acknowledged (%d before the SIGKILL), %d sender connection errors while it was down",
		len(keys), ackedAtKill, l.netErrors)
	figure(t, "duplicate deliveries after SIGKILL: %d of at most %d (keys %v); %d more whose 2xx came after target.timeout", extra, concurrency, dupKeys, late)
	figure(t, "restart to drained: %s", round(drainedAt.Sub(restartedAt)))
	if extra > concurrency {
		t.Errorf("the target got %d duplicate deliveries (keys %v); %s", extra, dupKeys, crashBound(concurrency, 1))
	}
}
