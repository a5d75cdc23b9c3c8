package handler

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

type countingReadiness struct {
	calls atomic.Int32
	err   error
}

func (c *countingReadiness) Ready(context.Context) error {
	c.calls.Add(1)
	return c.err
}

// TestReadinessIsCached: a flood of probes within a second costs one check;
// a second later the next probe checks again, and sees a change.
func TestReadinessIsCached(t *testing.T) {
	t.Parallel()
	ready := &countingReadiness{}
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := newCachedReadiness(ready)
	c.now = clock.now
	h := readyz(c, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			w := httptest.NewRecorder()
			h(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if w.Code != 200 {
				t.Errorf("probe: %d", w.Code)
			}
		})
	}
	wg.Wait()
	if n := ready.calls.Load(); n != 1 {
		t.Errorf("200 probes made %d checks, want 1", n)
	}
	ready.err = outbox.Errorf(outbox.EUNAVAILABLE, "the schema is at version 3, this binary needs 4: run outbox migrate up")
	clock.add(readinessTTL - time.Millisecond)
	assert.NoError(t, c.Ready(context.Background()), "within the second")
	assert.EqualValues(t, 1, ready.calls.Load(), "checks within the second")
	clock.add(time.Millisecond)
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	assert.Equal(t, 503, w.Code, "after a second: %s", w.Body)
	assert.Contains(t, w.Body.String(), "outbox migrate up", "after a second")
	assert.EqualValues(t, 2, ready.calls.Load(), "checks after a second")
}

// TestUntrustedForwardedForWarnsOnce: a peer that is not a trusted proxy
// but sends X-Forwarded-For is logged once, naming the peer; the header is
// not believed.
func TestUntrustedForwardedForWarnsOnce(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	addrs := newClientAddrs([]netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, slog.New(slog.NewTextHandler(&logs, nil)), "admin")
	for i, remote := range []string{"10.0.0.1:1", "192.0.2.7:1", "192.0.2.8:1"} {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {"198.51.100.1"}}}
		got := addrs.of(r)
		if want := []string{"198.51.100.1", "192.0.2.7", "192.0.2.8"}[i]; got.String() != want {
			t.Errorf("%s: %s, want %s", remote, got, want)
		}
	}
	assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), "warnings: %s", logs.String())
	assert.Contains(t, logs.String(), "peer=192.0.2.7")
	assert.Contains(t, logs.String(), "trusted_proxies")
}

// TestMetricsElsewhere: with metrics on their own listener, the main router
// does not serve /metrics, and NewOpsRouter does, with the health checks.
func TestMetricsElsewhere(t *testing.T) {
	t.Parallel()
	in := &Intake{routes: map[string]*intakeRoute{}}
	logger := slog.New(slog.DiscardHandler)
	ready := &countingReadiness{}
	main := NewRouter(RouterOptions{Intake: in, Readiness: ready, Logger: logger, MetricsElsewhere: true})
	w := httptest.NewRecorder()
	main.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != 404 {
		t.Errorf("/metrics on the main router: %d", w.Code)
	}
	ops := NewOpsRouter(prometheus.NewRegistry(), ready, logger)
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		w := httptest.NewRecorder()
		ops.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != 200 {
			t.Errorf("%s on the ops router: %d %s", path, w.Code, w.Body)
		}
	}
}
