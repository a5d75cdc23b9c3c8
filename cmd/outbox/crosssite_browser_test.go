package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

const crossSiteConfig = `
listen: "127.0.0.1:0"
database_url: %q
admin_token: %s
shutdown_timeout: 10s
routes:
  - name: genesys
    auth: {header: {name: X-Webhook-Token, value: genesys-token}}
    idempotency_key: [{json: /id}]
    target: {url: %s, timeout: 5s}
`

// TestCrossSitePageCannotAct runs the review's CSRF attack in a real
// browser against the real wiring: the operator has logged in to River UI
// (so the browser holds the admin token), then opens a page on another
// site, whose script POSTs to pause a route and to River UI's job cancel
// with the browser's credentials. Both answer 403, and the route is still
// running and the job still waiting.
func TestCrossSitePageCannotAct(t *testing.T) {
	browser := newBrowser(t)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3600") // the job waits an hour
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(target.Close)
	pool, dbURL := testdb.Pool(t)
	cfg, err := config.Parse(fmt.Appendf(nil, crossSiteConfig, dbURL, testAdminToken, target.URL), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	base := startMain(t, &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/genesys", strings.NewReader(`{"id":"victim"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "genesys-token")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("webhook: %v %v", resp, err)
	}
	var jobID int64
	if err := pool.QueryRow(context.Background(), `SELECT id FROM river_job`).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	// A page on another site: localhost is not 127.0.0.1.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "<!doctype html><title>cute cats</title><p>cats")
	}))
	t.Cleanup(evil.Close)
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)

	ctx, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	statuses := map[string]int64{}
	go func() {
		for ev, err := range chromedp.Events(ctx, network.ResponseReceived) {
			if err != nil {
				return
			}
			mu.Lock()
			statuses[ev.Response.URL] = ev.Response.Status
			mu.Unlock()
		}
	}()

	u, _ := url.Parse(base)
	u.User = url.UserPassword("operator", testAdminToken)
	if err := chromedp.Do(ctx, chromedp.Navigate(u.String()+"/riverui/"), chromedp.WaitVisible(chromedp.CSS("#root"))); err != nil {
		t.Fatalf("logging in to River UI: %v", err)
	}
	pause, cancelJob := base+"/admin/v1/routes/genesys/pause", base+"/riverui/api/jobs/cancel"
	script := fmt.Sprintf(`Promise.allSettled([
		fetch(%q, {method: "POST", mode: "no-cors", credentials: "include"}),
		fetch(%q, {method: "POST", mode: "no-cors", credentials: "include", body: JSON.stringify({ids: ["%d"]})}),
	]).then(() => "sent")`, pause, cancelJob, jobID)
	if err := chromedp.Do(ctx, chromedp.Navigate(evilURL)); err != nil {
		t.Fatal(err)
	}
	sent, err := chromedp.Run(ctx, chromedp.Evaluate[string](script, chromedp.EvalAwaitPromise))
	if err != nil || sent != "sent" {
		t.Fatalf("the page's script: %q %v", sent, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		p, c := statuses[pause], statuses[cancelJob]
		mu.Unlock()
		if p != 0 && c != 0 {
			if p != 403 || c != 403 {
				t.Errorf("the cross-site page's requests were answered pause %d, cancel %d; want 403 and 403", p, c)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser saw no answers to the page's requests: %v", statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var paused bool
	var state string
	if err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM river_queue WHERE name = 'genesys' AND paused_at IS NOT NULL), (SELECT state::text FROM river_job WHERE id = $1)`, jobID).Scan(&paused, &state); err != nil {
		t.Fatal(err)
	}
	if paused || state == "cancelled" {
		t.Errorf("after the cross-site page: paused %v, job %s", paused, state)
	}
}
