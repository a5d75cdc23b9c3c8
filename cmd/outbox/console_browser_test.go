package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// chromiumPath finds a Chromium or Chrome binary; "" when there is none.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newBrowser starts a headless Chromium for the test, with a fresh profile,
// at a laptop's window size.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		t.Skip("no chromium binary on PATH: install it (Debian: apt-get install -y chromium) to run the console's browser test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Start the browser now, on a context without a deadline (a deadline on
	// the first run would end the browser with it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("cannot start chromium (%s): %v", path, err)
	}
	return ctx
}

// flakyTarget fails every delivery with 503 until healed, then accepts and
// records them.
type flakyTarget struct {
	*httptest.Server
	healed atomic.Bool
	mu     sync.Mutex
	got    []delivery
}

func newFlakyTarget(t *testing.T) *flakyTarget {
	ft := &flakyTarget{}
	ft.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.HasSuffix(r.URL.Path, "/genesys") && !ft.healed.Load() {
			http.Error(w, `{"error":"conversation store is timing out"}`, http.StatusServiceUnavailable)
			return
		}
		ft.mu.Lock()
		ft.got = append(ft.got, delivery{header: r.Header.Clone(), body: body})
		ft.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(ft.Close)
	return ft
}

func (ft *flakyTarget) received(key string) bool {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	for _, d := range ft.got {
		if d.header.Get("X-Outbox-Key") == key {
			return true
		}
	}
	return false
}

const browserConfig = `
listen: "127.0.0.1:0"
database_url: %q
admin_token: %s
shutdown_timeout: 10s
routes:
  - name: genesys
    auth: {header: {name: X-Webhook-Token, value: genesys-token}}
    idempotency_key: [{json: /id}]
    target: {url: %s/genesys, timeout: 5s}
    retry: {initial_backoff: 50ms, max_backoff: 200ms, max_attempts: 3}
    circuit_breaker: {failures: 1000, cooldown: 1s}
    concurrency: 4
  - name: billing
    auth: {header: {name: X-Webhook-Token, value: billing-token}}
    idempotency_key: [{json: /id}]
    target: {url: %s/billing, timeout: 5s}
    concurrency: 4
`

// TestConsoleInBrowser walks an operator's path in a real browser against
// the real wiring: open the dead letters with Basic auth, find one by its
// key, read its payload, press Retry and accept the confirmation, and see
// the target receive the event. With UPDATE_SCREENSHOTS=1 it also writes
// the screenshots in docs/img.
func TestConsoleInBrowser(t *testing.T) {
	browser := newBrowser(t)
	target := newFlakyTarget(t)
	pool, dbURL := testdb.Pool(t)
	cfg, err := config.Parse(fmt.Appendf(nil, browserConfig, dbURL, testAdminToken, target.URL, target.URL), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	base := startMain(t, m)

	send := func(route, token string, body map[string]any) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/"+route, strings.NewReader(string(raw)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Webhook-Token", token)
		req.Header.Set("User-Agent", "Genesys-Cloud-Webhooks/1.0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook answered %d", resp.StatusCode)
		}
	}
	for i := range 12 {
		send("billing", "billing-token", map[string]any{"id": fmt.Sprintf("inv-%04d", 7100+i), "amount": 1200 + i*15, "currency": "EUR"})
	}
	const key = "c7a3e5d2-4f1b-4e8a-9b6c-2d1f0e9a8b7c"
	conversations := []string{key, "0d9b7f21-3c55-4a8e-8f10-6e2b4c9d1a33", "5e8f2a10-9b7c-4d3e-a1f2-7c6b5a4d3e21", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"}
	for i, id := range conversations {
		send("genesys", "genesys-token", map[string]any{
			"id":        id,
			"topicName": "v2.detail.events.conversation." + id + ".customer.start",
			"version":   "2",
			"eventBody": map[string]any{
				"conversationId": "conv-" + id[:8],
				"participantId":  fmt.Sprintf("p-%d", 4100+i),
				"queueName":      "Support EMEA",
				"customer":       map[string]any{"name": "Ada Lovelace", "phone": "+44 20 7946 0958"},
				"eventTime":      "2026-11-28T09:14:03.512Z",
			},
		})
	}

	// Wait until the four genesys events are dead letters.
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM dead_letters WHERE route = 'genesys'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == len(conversations) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events became dead letters within a minute", n, len(conversations))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The downstream is healthy again; the operator retries by hand.
	target.healed.Store(true)

	u, _ := url.Parse(base)
	u.User = url.UserPassword("operator", testAdminToken)
	withAuth := u.String()

	ctx, cancel := context.WithTimeout(browser, 90*time.Second)
	defer cancel()
	accepted := acceptDialogs(t, ctx, browser)

	screenshots := os.Getenv("UPDATE_SCREENSHOTS") != ""
	shot := func(name string) {
		t.Helper()
		if !screenshots {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("..", "..", "docs", "img", "console-"+name+".png")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}
	if screenshots {
		if err := chromedp.Do(ctx, chromedp.Navigate(withAuth+"/console/"), chromedp.WaitVisible(chromedp.CSS("figure.chart svg"))); err != nil {
			t.Fatal(err)
		}
		shot("overview")
	}

	// Open the dead letters with Basic auth, and follow the link named by
	// the key.
	link := chromedp.Search(`//a[normalize-space()="` + key + `"]`)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(withAuth+"/console/dead-letters"),
		chromedp.WaitVisible(link),
	); err != nil {
		t.Fatalf("the dead letters page shows no link named %s: %v", key, err)
	}
	shot("dead-letters")
	if err := chromedp.Do(ctx, chromedp.Click(link), chromedp.WaitVisible(chromedp.CSS("#payload-stored"))); err != nil {
		t.Fatalf("following the dead letter's link: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"conv-" + key[:8], "Ada Lovelace", "503 Service Unavailable", "Genesys-Cloud-Webhooks/1.0"} {
		if !strings.Contains(text, want) {
			t.Errorf("the detail page does not show %q:\n%s", want, text)
		}
	}
	shot("detail")

	// Press Retry; the page asks for confirmation, which is accepted.
	retry := chromedp.Search(`//button[normalize-space()="Retry"]`)
	if err := chromedp.Do(ctx, chromedp.Click(retry), chromedp.WaitVisible(chromedp.CSS(".flash"))); err != nil {
		t.Fatalf("pressing Retry: %v", err)
	}
	if accepted.Load() == 0 {
		t.Error("pressing Retry asked for no confirmation")
	}
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(".flash")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(flash, "Retried job") {
		t.Errorf("after Retry the page says %q", flash)
	}
	deadline = time.Now().Add(60 * time.Second)
	for !target.received(key) {
		if time.Now().After(deadline) {
			t.Fatalf("the target did not receive %s within a minute of the retry", key)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Only the retried one was sent again.
	for _, other := range conversations[1:] {
		if target.received(other) {
			t.Errorf("the target received %s, which nobody retried", other)
		}
	}
}

// acceptDialogs accepts every JavaScript dialog the page opens, and counts
// them.
func acceptDialogs(t *testing.T, ctx, browser context.Context) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	opening := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range opening {
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				err := chromedp.Do(browser, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
					_, err := cdp.Call(ctx, tgt, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
					return err
				}))
				if err != nil && ctx.Err() == nil {
					t.Errorf("cannot accept the dialog: %v", err)
				}
			}()
		}
	}()
	return &n
}
