package faults

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHangingTarget: a target that accepts requests and never answers is
// cut off at the route's timeout, so its deliveries fail and are retried
// instead of holding the route's worker slots forever; another route keeps
// delivering meanwhile; and when the target answers again everything is
// delivered.
func TestHangingTarget(t *testing.T) {
	suite(t)
	const timeout = time.Second
	dbURL := shared(t).database(t, "hang")
	var hanging atomic.Bool
	hanging.Store(true)
	never := make(chan struct{}) // never closed: the answer never comes
	tg := newTarget(t, func(r *http.Request) (int, <-chan struct{}) {
		if r.Header.Get("X-Outbox-Route") == "hanging" && hanging.Load() {
			return http.StatusOK, never
		}
		return http.StatusOK, nil
	})
	port := freePort(t)
	routes := route("hanging", "/hang", "1s", `    retry: {initial_backoff: 200ms, max_backoff: 1s, max_attempts: 20}
    concurrency: 2
    circuit_breaker: {failures: 3, cooldown: 2s, max_cooldown: 2s}`) + route("healthy", "/ok", "1s", "    concurrency: 2")
	cfgPath := config{dbURL: dbURL, port: port, replica: "a", routes: routes}.write(t, tg.srv.URL)
	migrate(t, cfgPath)
	srv := startServe(t, "serve", cfgPath, port)
	p := pool(t, dbURL)

	l := newLedger()
	httpc := &http.Client{Timeout: 5 * time.Second}
	postAll := func(routeName string, n int) []string {
		var keys []string
		for i := range n {
			key := fmt.Sprintf("%s-%d", routeName, i)
			waitUntil(t, 30*time.Second, key+" to be acknowledged", func() bool {
				return post(context.Background(), httpc, l, srv.base, routeName, key, fmt.Appendf(nil, `{"id":%q}`, key))
			})
			keys = append(keys, key)
		}
		return keys
	}
	hungKeys := postAll("hanging", 10)
	hungUp := func() []request {
		var out []request
		for _, r := range tg.log() {
			if r.route == "hanging" && r.hungUpOn {
				out = append(out, r)
			}
		}
		return out
	}
	waitUntil(t, 60*time.Second, "outbox to give up on 3 hanging requests", func() bool { return len(hungUp()) >= 3 })

	// The hanging target does not hold up another route.
	healthyKeys := postAll("healthy", 10)
	checkNoLoss(t, p, "healthy", healthyKeys)
	waitSettled(t, p, "healthy", healthyKeys, 60*time.Second)

	// The target's clock starts when a request arrives, after outbox's
	// has: it can see less than the timeout, never much more.
	var longest time.Duration
	for _, r := range hungUp() {
		longest = max(longest, r.took)
		if r.took > timeout+10*time.Second {
			t.Errorf("outbox hung up on %s only after %s; the route's timeout is %s", r.key, r.took, timeout)
		}
	}
	if peak := peakConcurrency(tg.log(), "hanging"); peak > 2 {
		t.Errorf("%d requests to the hanging target at once; the route's concurrency is 2", peak)
	}
	var withTimeoutError int
	if err := p.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE queue = 'hanging' AND errors::text LIKE '%no answer within 1s%'`).Scan(&withTimeoutError); err != nil {
		t.Fatal(err)
	}
	if withTimeoutError == 0 {
		t.Error(`no delivery job records "no answer within 1s"`)
	}

	hanging.Store(false)
	answeringAt := time.Now()
	checkNoLoss(t, p, "hanging", hungKeys)
	got, drainedAt := waitSettled(t, p, "hanging", hungKeys, 60*time.Second)
	for _, k := range hungKeys {
		if !got[k].delivered {
			t.Errorf("%s is a dead letter after the target answered again", k)
		}
	}
	l.checkContract(t)
	if !strings.Contains(srv.log(), "no answer within 1s") {
		t.Error(`serve's log does not say "no answer within 1s"`)
	}
	figure(t, "%d requests to the hanging target, each cut off after at most %s (timeout %s); answering again to drained: %s",
		len(hungUp()), round(longest), timeout, round(drainedAt.Sub(answeringAt)))
}

// hangupLag is how late, at most, the target may notice that outbox hung
// up: its handler learns of the closed connection only on its next read,
// which a busy machine can delay. Without it a request outbox has already
// given up on would count as still in progress when the next one arrives.
const hangupLag = 500 * time.Millisecond

// peakConcurrency is the most requests for routeName the target had in
// progress at once.
func peakConcurrency(log []request, routeName string) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, r := range log {
		if r.route == routeName {
			end := r.at.Add(r.took)
			if r.hungUpOn && r.took > hangupLag {
				end = end.Add(-hangupLag)
			}
			edges = append(edges, edge{r.at, 1}, edge{end, -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	n, peak := 0, 0
	for _, e := range edges {
		n += e.delta
		peak = max(peak, n)
	}
	return peak
}
