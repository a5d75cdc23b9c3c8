package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/docs/examples/receiver"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// receivedRequest is one request as the target saw it.
type receivedRequest struct {
	method, path string
	header       http.Header
	body         []byte
}

// TestReceivingDeliveries checks docs/receiving-deliveries.md against a real
// serve: the delivery request it describes (method, byte-identical body,
// headers, a retry's attempt number), and its verification examples, in Go
// (docs/examples/receiver) and in Node (verify.js), run against
// signatures that outbox's own signing code made.
func TestReceivingDeliveries(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []receivedRequest
	target := newHTTPTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, receivedRequest{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body})
		first := len(got) == 1
		mu.Unlock()
		if first {
			// A 5xx without Retry-After: retried with backoff.
			http.Error(w, "database is down", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	oldSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("receiving-docs-old-signing-key-1"))
	newSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("receiving-docs-new-signing-key-2"))
	doc := fmt.Sprintf(`
listen: "127.0.0.1:0"
database_url: %q
disable_admin: true
routes:
  - name: orders
    auth: {header: {name: X-Webhook-Token, value: sender-token}}
    idempotency_key: [{json: /id}]
    target:
      url: %q
      headers: {Authorization: "Bearer internal-token"}
      signing_secrets: [%q, %q]
    retry: {initial_backoff: 100ms, max_backoff: 1s}
`, testdb.URL(t), target.URL+"/hooks/orders", oldSecret, newSecret)
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	base := startMain(t, &Main{Config: cfg, Logger: slog.New(slog.DiscardHandler)})

	// Odd spacing and key order: the target must get these exact bytes.
	sent := []byte("{ \"id\": \"order-17\",\n  \"total\": 12.50, \"b\":1,\"a\":2 }")
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/orders", bytes.NewReader(sent))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Webhook-Token", "sender-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("intake answered %d", resp.StatusCode)
	}
	waitFor(t, "the delivery and its retry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 2
	})
	mu.Lock()
	deliveries := append([]receivedRequest(nil), got[:2]...)
	mu.Unlock()

	for i, d := range deliveries {
		attempt := fmt.Sprint(i + 1)
		if d.method != http.MethodPost || d.path != "/hooks/orders" {
			t.Errorf("attempt %s: %s %s, want POST /hooks/orders", attempt, d.method, d.path)
		}
		if !bytes.Equal(d.body, sent) {
			t.Errorf("attempt %s: body %q, want the bytes sent %q", attempt, d.body, sent)
		}
		for name, want := range map[string]string{
			"Content-Type":     "application/json; charset=utf-8",
			"Authorization":    "Bearer internal-token",
			"X-Outbox-Route":   "orders",
			"X-Outbox-Key":     "order-17",
			"X-Outbox-Attempt": attempt,
			"Webhook-Id":       "order-17",
			"User-Agent":       "webhook-outbox/1",
		} {
			if v := d.header.Get(name); v != want {
				t.Errorf("attempt %s: %s = %q, want %q", attempt, name, v, want)
			}
		}
		if v := d.header.Get("X-Webhook-Token"); v != "" {
			t.Errorf("attempt %s: the sender's credential reached the target", attempt)
		}
		if n := len(strings.Fields(d.header.Get("Webhook-Signature"))); n != 2 {
			t.Errorf("attempt %s: %d signatures, want one per signing secret", attempt, n)
		}
	}
	d := deliveries[1]

	t.Run("go", func(t *testing.T) {
		now := time.Now()
		for _, secret := range []string{oldSecret, newSecret} {
			if err := receiver.Verify(d.header, d.body, now, secret); err != nil {
				t.Errorf("a delivery signed by outbox does not verify with %s: %v", secret[:10], err)
			}
		}
		wrong := "whsec_" + base64.StdEncoding.EncodeToString([]byte("not-the-secret-outbox-signs-with"))
		if err := receiver.Verify(d.header, d.body, now, wrong); err == nil {
			t.Error("verifies with a secret outbox does not use")
		}
		if err := receiver.Verify(d.header, append([]byte(" "), d.body...), now, newSecret); err == nil {
			t.Error("verifies an altered body")
		}
		if err := receiver.Verify(d.header, d.body, now.Add(receiver.Tolerance+time.Minute), newSecret); err == nil {
			t.Error("verifies a delivery replayed after the tolerance")
		}

		// The handler does the work once per X-Outbox-Key, and answers 2xx
		// to the redelivery too.
		done := map[string]int{}
		h := receiver.Handler(func(_ context.Context, key string, body []byte) (bool, error) {
			done[key]++
			return done[key] > 1, nil
		}, newSecret)
		for i, want := range []int{http.StatusNoContent, http.StatusOK} {
			r := httptest.NewRequest(http.MethodPost, "/hooks/orders", bytes.NewReader(d.body))
			r.Header = d.header.Clone()
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != want {
				t.Errorf("delivery %d: the example handler answered %d, want %d", i+1, w.Code, want)
			}
		}
		r := httptest.NewRequest(http.MethodPost, "/hooks/orders", strings.NewReader(`{"id":"forged"}`))
		r.Header = d.header.Clone()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized {
			t.Errorf("a forged body: the example handler answered %d, want 401", w.Code)
		}
	})

	t.Run("node", func(t *testing.T) {
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("node is not on PATH: the Node.js example (docs/examples/receiver/verify.js) was not run; install Node.js 18 or later to run it")
		}
		headers := map[string]string{}
		for name := range d.header {
			headers[strings.ToLower(name)] = d.header.Get(name)
		}
		run := func(body []byte, secrets ...string) (int, string) {
			input, _ := json.Marshal(map[string]any{"headers": headers, "body_base64": base64.StdEncoding.EncodeToString(body), "secrets": secrets})
			cmd := exec.Command(node, repoFile("docs/examples/receiver/verify.js"))
			cmd.Stdin = bytes.NewReader(input)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if _, ok := err.(*exec.ExitError); err != nil && !ok {
				t.Fatalf("cannot run node: %v", err)
			}
			return cmd.ProcessState.ExitCode(), strings.TrimSpace(string(out))
		}
		if code, out := run(d.body, newSecret); code != 0 || out != "valid" {
			t.Errorf("a delivery signed by outbox: exit %d, %q", code, out)
		}
		if code, out := run(d.body, "whsec_"+base64.StdEncoding.EncodeToString([]byte("some-other-secret")), oldSecret); code != 0 {
			t.Errorf("with the old secret among the service's: exit %d, %q", code, out)
		}
		if code, out := run([]byte(`{"id":"order-17","total":1250}`), newSecret); code != 1 || !strings.HasPrefix(out, "invalid") {
			t.Errorf("an altered body: exit %d, %q", code, out)
		}
	})
}
