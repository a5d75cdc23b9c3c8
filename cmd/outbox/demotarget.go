package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// runDemoTarget runs a stand-in for the internal service: it prints every
// delivery it receives and fails a chosen share of them, so a newcomer can
// watch retries and dead letters happen.
func runDemoTarget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := newFlagSet("demo-target", stderr)
	listen := fs.String("listen", ":9090", "address to listen on")
	failRate := fs.Float64("fail-rate", 0.3, "share of requests to fail, from 0 to 1")
	failStatus := fs.Int("fail-status", http.StatusInternalServerError, "status to fail with (500 retries, 503 with --retry-after snoozes, 410 is permanent)")
	retryAfter := fs.Int("retry-after", 0, "with a failure, send Retry-After with this many seconds (0: none)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("demo-target takes no arguments, got %q", rest)
	}
	if *failRate < 0 || *failRate > 1 {
		return usagef("--fail-rate must be between 0 and 1")
	}
	if *failStatus < 400 || *failStatus > 599 {
		return usagef("--fail-status must be a 4xx or 5xx status")
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", *listen, err)
	}
	target := &demoTarget{out: stdout, failRate: *failRate, failStatus: *failStatus, retryAfter: *retryAfter}
	srv := &http.Server{Handler: target, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "demo target listening on %s, failing %.0f%% of requests with %d\n", ln.Addr(), *failRate*100, *failStatus)
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type demoTarget struct {
	out        io.Writer
	failRate   float64
	failStatus int
	retryAfter int

	mu sync.Mutex
	n  int
}

func (t *demoTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	fail := rand.Float64() < t.failRate
	status := http.StatusOK
	if fail {
		status = t.failStatus
		if t.retryAfter > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(t.retryAfter))
		}
	}

	t.mu.Lock()
	t.n++
	snippet := strings.Join(strings.Fields(string(body)), " ")
	if len(snippet) > 160 {
		snippet = snippet[:160] + "…"
	}
	fmt.Fprintf(t.out, "#%d %s %s route=%s key=%s attempt=%s -> %d\n    %s\n", t.n, r.Method, r.URL.Path,
		r.Header.Get("X-Outbox-Route"), r.Header.Get("X-Outbox-Key"), r.Header.Get("X-Outbox-Attempt"), status, snippet)
	t.mu.Unlock()

	if fail {
		http.Error(w, fmt.Sprintf("demo target failing on purpose (%s)", http.StatusText(status)), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, `{"ok":true}`)
}
