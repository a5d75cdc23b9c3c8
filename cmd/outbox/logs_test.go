package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// loadTestConfig is writeConfig, loaded with the sender token supplied
// directly rather than through the process environment, so that tests using
// it can run in parallel.
func loadTestConfig(t *testing.T, targetURL, senderToken string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(writeConfig(t, testdb.URL(t), targetURL, ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, func(name string) (string, bool) {
		if name == "TEST_GENESYS_TOKEN" {
			return senderToken, true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startMain(t *testing.T, m *Main) string {
	t.Helper()
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return "http://" + m.Addr()
}

func newHTTPTestServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, base, token, body string, header map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/genesys", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// scriptedTarget answers each delivery by its X-Outbox-Key and the number
// of times it has seen that key.
type scriptedTarget struct {
	mu     sync.Mutex
	seen   map[string]int
	answer func(w http.ResponseWriter, key string, n int)
}

func (s *scriptedTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("X-Outbox-Key")
	s.mu.Lock()
	s.seen[key]++
	n := s.seen[key]
	s.mu.Unlock()
	s.answer(w, key, n)
}

func (s *scriptedTarget) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[key]
}

// waitFor polls until cond holds, for at most a generous timeout: the
// machine may be busy, and nothing here measures speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLogsCarryIDsAndNoSecrets reads the JSON log of a real serve while a
// webhook is rejected, accepted, redelivered, retried and delivered.
func TestLogsCarryIDsAndNoSecrets(t *testing.T) {
	t.Parallel()
	const (
		senderToken = "sender-token-s3cr3t-9Qw"
		wrongToken  = "wrong-token-Vx7-guess"
		marker      = "payload-marker-Zq9"
	)
	target := &scriptedTarget{seen: map[string]int{}, answer: func(w http.ResponseWriter, key string, n int) {
		if key == "log-1" && n == 1 {
			http.Error(w, "try again", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}}
	srv := newHTTPTestServer(t, target)
	cfg := loadTestConfig(t, srv.URL+"/hook", senderToken)
	cfg.LogLevel = "debug"
	var logs syncBuffer
	logger, err := newLogger(&logs, "json", cfg.LogLevel)
	if err != nil {
		t.Fatal(err)
	}
	base := startMain(t, &Main{Config: cfg, Logger: logger, RiverLogger: logger})

	post(t, base, wrongToken, `{"id":"log-0","note":"`+marker+`"}`, map[string]string{"X-Request-Id": "req-rejected-1"})
	resp := post(t, base, senderToken, `{"id":"log-1","note":"`+marker+`"}`, map[string]string{"X-Request-Id": "req-abc-123"})
	if resp.Header.Get("X-Request-Id") != "req-abc-123" {
		t.Errorf("X-Request-Id answered %q, want the caller's", resp.Header.Get("X-Request-Id"))
	}
	resp = post(t, base, senderToken, `{"id":"log-2","note":"`+marker+`"}`, nil)
	generated := resp.Header.Get("X-Request-Id")
	if generated == "" {
		t.Fatal("no X-Request-Id in the answer")
	}
	post(t, base, senderToken, `{"id":"log-2","note":"`+marker+`"}`, map[string]string{"X-Request-Id": "req-dup-1"})

	type line map[string]any
	lines := func() []line {
		var out []line
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("log line is not JSON: %q", sc.Text())
			}
			out = append(out, l)
		}
		return out
	}
	delivered := func(key string) bool {
		for _, l := range lines() {
			if l["msg"] == "delivered" && l["key"] == key {
				return true
			}
		}
		return false
	}
	waitFor(t, "both deliveries to be logged", func() bool { return delivered("log-1") && delivered("log-2") })

	all := lines()
	wantRequestID := map[string]string{"log-1": "req-abc-123", "log-2": generated}
	seen := map[string]int{}
	for _, l := range all {
		comp, _ := l["component"].(string)
		msg, _ := l["msg"].(string)
		switch comp {
		case "intake":
			if msg == "route accepts webhooks without authentication (auth: none: true)" {
				continue
			}
			requireFields(t, l, "route", "request_id")
			switch msg {
			case "intake rejected":
				if l["request_id"] != "req-rejected-1" {
					t.Errorf("rejection logged with request_id %v", l["request_id"])
				}
			case "accepted":
				requireFields(t, l, "key", "job_id", "event_id")
				if key, _ := l["key"].(string); l["request_id"] != wantRequestID[key] {
					t.Errorf("accepted %v logged with request_id %v, want %q", key, l["request_id"], wantRequestID[key])
				}
			case "duplicate ignored":
				requireFields(t, l, "key")
				if l["request_id"] != "req-dup-1" {
					t.Errorf("duplicate logged with request_id %v", l["request_id"])
				}
			}
			seen["intake "+msg]++
		case "delivery":
			requireFields(t, l, "route", "key", "job_id", "attempt", "request_id")
			if key, _ := l["key"].(string); l["request_id"] != wantRequestID[key] {
				t.Errorf("delivery line %q for %v has request_id %v, want %q", msg, key, l["request_id"], wantRequestID[key])
			}
			seen["delivery "+msg]++
		}
	}
	for _, want := range []string{"intake intake rejected", "intake accepted", "intake duplicate ignored", "delivery delivery failed; will retry", "delivery delivered"} {
		if seen[want] == 0 {
			t.Errorf("no %q log line; saw %v", want, seen)
		}
	}
	raw := logs.String()
	for name, secret := range map[string]string{
		"the sender's token":           senderToken,
		"a wrong token a sender tried": wrongToken,
		"the target's Authorization":   "internal-secret",
		"the admin token":              testAdminToken,
		"the payload":                  marker,
	} {
		if strings.Contains(raw, secret) {
			t.Errorf("the log contains %s (%q)", name, secret)
		}
	}
}

func requireFields(t *testing.T, l map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		assert.NotNil(t, l[f], "log line %q has no %s: %v", l["msg"], f, l) // missing or null
		assert.NotEqual(t, "", l[f], "log line %q has an empty %s: %v", l["msg"], f, l)
	}
}

func TestLogFormatsAndLevels(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger, err := newLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("hidden")
	logger.Warn("shown", "route", "r")
	if strings.Contains(buf.String(), "hidden") {
		t.Errorf("an info line passed log_level warn: %s", buf.String())
	}
	var l map[string]any
	if assert.NoError(t, json.Unmarshal(buf.Bytes(), &l), "json log line = %q", buf.String()) {
		assert.Equal(t, "shown", l["msg"], "json log line = %q", buf.String())
		assert.Equal(t, "WARN", l["level"], "json log line = %q", buf.String())
		assert.Equal(t, "r", l["route"], "json log line = %q", buf.String())
	}

	buf.Reset()
	logger, err = newLogger(&buf, "text", "debug")
	if err != nil {
		t.Fatal(err)
	}
	logger.Debug("detail", "route", "r")
	assert.Contains(t, buf.String(), "level=DEBUG", "text log line")
	assert.Contains(t, buf.String(), "msg=detail route=r", "text log line")
	if _, err := newLogger(&buf, "xml", "info"); err == nil {
		t.Errorf("--log-format xml was accepted")
	}
	if _, err := newLogger(&buf, "json", "loud"); err == nil {
		t.Errorf("log_level loud was accepted")
	}
}
