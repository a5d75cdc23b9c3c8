package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/migrations"
)

// binary is the real outbox binary, built once for tests that run it as a
// separate process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outbox-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "outbox")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build outbox:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const testAdminToken = "0123456789abcdef0123456789abcdef"

// writeConfig writes a config file for one Genesys route delivering to
// targetURL, and returns its path.
func writeConfig(t *testing.T, dbURL, targetURL, extra string) string {
	t.Helper()
	doc := fmt.Sprintf(`
listen: "127.0.0.1:0"
database_url: %q
admin_token: %s
shutdown_timeout: 10s
routes:
  - name: genesys
    auth:
      header: {name: X-Webhook-Token, value: ${TEST_GENESYS_TOKEN}}
    idempotency_key:
      - json: /id
      - composite: [/topicName, /eventBody/conversationId, /eventBody/participantId, /eventBody/sessionId, /eventBody/eventTime]
    target:
      url: %s
      timeout: 5s
      headers: {Authorization: "Bearer internal-secret"}
    retry: {initial_backoff: 100ms, max_backoff: 1s, max_attempts: 5}
    concurrency: 4
%s`, dbURL, testAdminToken, targetURL, extra)
	path := filepath.Join(t.TempDir(), "outbox.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type delivery struct {
	header http.Header
	body   []byte
}

type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	got  []delivery
	hook func(w http.ResponseWriter, r *http.Request) bool
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if rec.hook != nil && rec.hook(w, r) {
			return
		}
		rec.mu.Lock()
		rec.got = append(rec.got, delivery{header: r.Header.Clone(), body: body})
		rec.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) deliveries() []delivery {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]delivery(nil), rec.got...)
}

func (rec *recorder) waitFor(t *testing.T, n int, timeout time.Duration) []delivery {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := rec.deliveries()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("target received %d deliveries, want %d", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func postWebhook(t *testing.T, base string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/genesys", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "genesys-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestEndToEnd runs the real serve wiring on :0 with a config file, posts
// the three Genesys payloads, and checks what the target receives.
func TestEndToEnd(t *testing.T) {
	t.Setenv("TEST_GENESYS_TOKEN", "genesys-token")
	dbURL := testdb.URL(t)
	rec := newRecorder(t)
	cfg, err := config.Load(writeConfig(t, dbURL, rec.URL+"/genesys/events", ""))
	if err != nil {
		t.Fatal(err)
	}
	m := &Main{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	base := "http://" + m.Addr()

	payloads := map[string]string{
		"5b0d6f8e-2c41-4e1a-9a77-0c3e8f1d2b64": "data-action.json",
		"6a7e8b9c-1d2e-4f30-8a41-b52c63d74e85": "eventbridge.json",
		"v2.detail.events.conversation.3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59.customer.start|3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59|a1b2c3d4-e5f6-4789-8abc-def012345678|0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f|1795856597067": "notification.json",
	}
	bodies := map[string][]byte{}
	for key, file := range payloads {
		body, err := os.ReadFile(filepath.Join("..", "..", "testdata", "genesys", file))
		if err != nil {
			t.Fatal(err)
		}
		bodies[key] = body
		status, answer := postWebhook(t, base, body)
		require.Equal(t, 200, status, "%s: %s", file, answer)
		require.Contains(t, answer, `"status":"accepted"`, file)
		// The sender redelivers: a duplicate, and no second delivery.
		status, answer = postWebhook(t, base, body)
		require.Equal(t, 200, status, "%s redelivered: %s", file, answer)
		require.Contains(t, answer, `"status":"duplicate"`, "%s redelivered", file)
	}

	got := rec.waitFor(t, 3, 15*time.Second)
	time.Sleep(300 * time.Millisecond) // room for an unwanted fourth
	if n := len(rec.deliveries()); n != 3 {
		t.Errorf("target received %d deliveries, want 3", n)
	}
	for _, d := range got {
		key := d.header.Get("X-Outbox-Key")
		want, ok := bodies[key]
		if !ok {
			t.Errorf("delivery with unexpected X-Outbox-Key %q", key)
			continue
		}
		if !bytes.Equal(d.body, want) {
			t.Errorf("%s: body differs from the bytes posted", payloads[key])
		}
		for name, value := range map[string]string{
			"Content-Type": "application/json", "X-Outbox-Route": "genesys", "X-Outbox-Attempt": "1", "Authorization": "Bearer internal-secret",
		} {
			if got := d.header.Get(name); got != value {
				t.Errorf("%s: header %s = %q, want %q", payloads[key], name, got, value)
			}
		}
		if d.header.Get("X-Webhook-Token") != "" {
			t.Errorf("the sender's token was forwarded to the target")
		}
	}

	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz = %d", resp.StatusCode)
	}

	// The routes listing and /metrics show the route's circuit breaker.
	req, _ := http.NewRequest(http.MethodGet, base+"/admin/v1/routes", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(raw), `"circuit":{"state":"closed"`, "routes listing")
	assert.Contains(t, string(raw), `"delivered_last_hour":3`, "routes listing")
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `outbox_circuit_state{route="genesys"} 0`) {
		t.Errorf("/metrics has no closed circuit for genesys")
	}
}

// runBinary runs the outbox binary to completion.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// TestMigrateUpConcurrently runs two `outbox migrate up` processes at once
// on an empty database, as two replicas starting together do.
func TestMigrateUpConcurrently(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EmptyURL(t)
	cfgPath := writeConfig(t, dbURL, "http://127.0.0.1:1/", "")
	env := []string{"TEST_GENESYS_TOKEN=x"}
	var wg sync.WaitGroup
	codes := make([]int, 2)
	outs := make([]string, 2)
	for i := range 2 {
		wg.Go(func() {
			code, stdout, stderr := runBinary(t, env, "migrate", "up", "--config", cfgPath)
			codes[i], outs[i] = code, stdout+stderr
		})
	}
	wg.Wait()
	for i := range 2 {
		if codes[i] != 0 {
			t.Errorf("process %d exited %d: %s", i, codes[i], outs[i])
		}
	}
	code, stdout, _ := runBinary(t, env, "migrate", "version", "--config", cfgPath)
	assert.Equal(t, 0, code, "migrate version: %q", stdout)
	assert.True(t, strings.HasPrefix(stdout, fmt.Sprintf("%d (up to date)", migrations.Latest)), "migrate version: %q", stdout)
	code, stdout, _ = runBinary(t, env, "migrate", "down", "--config", cfgPath)
	// One step down; version numbers have gaps, so the version below
	// Latest is not always Latest-1.
	assert.Equal(t, 0, code, "migrate down: %q", stdout)
	assert.Contains(t, stdout, fmt.Sprintf("from version %d to ", migrations.Latest), "migrate down")
	assert.NotContains(t, stdout, fmt.Sprintf("to %d\n", migrations.Latest), "migrate down")
}

// TestServeLifecycle runs the real binary: it refuses an unmigrated
// database with a message saying what to run, starts with --migrate,
// delivers, and on SIGTERM finishes the delivery in flight before exiting 0.
func TestServeLifecycle(t *testing.T) {
	t.Parallel()
	dbURL := testdb.EmptyURL(t)
	release := make(chan struct{})
	rec := newRecorder(t)
	var once sync.Once
	started := make(chan struct{})
	rec.hook = func(w http.ResponseWriter, r *http.Request) bool {
		once.Do(func() { close(started) })
		<-release // hold the delivery in flight
		return false
	}
	port := freePort(t)
	cfgPath := writeConfig(t, dbURL, rec.URL+"/hook", "")
	env := []string{"TEST_GENESYS_TOKEN=genesys-token", "OUTBOX_LISTEN=127.0.0.1:" + port}

	code, _, stderr := runBinary(t, env, "serve", "--config", cfgPath)
	require.Equal(t, 1, code, "serve on an empty database: stderr %q", stderr)
	require.Contains(t, stderr, "run `outbox migrate up`", "serve on an empty database")

	cmd := exec.Command(binary, "serve", "--migrate", "--config", cfgPath, "--log-format", "text")
	cmd.Env = append(os.Environ(), env...)
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	base := "http://127.0.0.1:" + port
	waitReady(t, base, &logs)

	if status, answer := postWebhook(t, base, []byte(`{"id":"inflight"}`)); status != 200 {
		t.Fatalf("post: %d %s", status, answer)
	}
	<-started
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	close(release)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM; logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "shut down cleanly") {
		t.Errorf("logs do not report a clean shutdown:\n%s", logs.String())
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var delivered bool
	err = pool.QueryRow(context.Background(), `SELECT delivered_at IS NOT NULL FROM events WHERE key = 'inflight'`).Scan(&delivered)
	assert.NoError(t, err, "the in-flight delivery")
	assert.True(t, delivered, "the in-flight delivery was not recorded as delivered")
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func waitReady(t *testing.T, base string, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not become ready; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestConfigCheckAndExitCodes(t *testing.T) {
	t.Parallel()
	good := writeConfig(t, "postgres://x@localhost/db", "http://127.0.0.1:9090/", "")
	code, stdout, _ := runBinary(t, []string{"TEST_GENESYS_TOKEN=x"}, "config", "check", "--config", good)
	assert.Equal(t, 0, code, "valid config: %q", stdout)
	assert.Contains(t, stdout, "is valid: 1 route(s)", "valid config")
	assert.Contains(t, stdout, "POST /webhooks/genesys -> http://127.0.0.1:9090/", "valid config")
	// OUTBOX_CONFIG is honoured.
	code, _, _ = runBinary(t, []string{"TEST_GENESYS_TOKEN=x", "OUTBOX_CONFIG=" + good}, "config", "check")
	if code != 0 {
		t.Errorf("OUTBOX_CONFIG: exit %d", code)
	}

	code, _, stderr := runBinary(t, nil, "config", "check", "--config", good) // TEST_GENESYS_TOKEN unset
	assert.Equal(t, 1, code, "missing variable: %q", stderr)
	assert.Contains(t, stderr, "environment variable TEST_GENESYS_TOKEN is not set", "missing variable")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("database_url: postgres://x/y\nadmin_token: "+testAdminToken+"\nroutes: []\ncolour: blue\n"), 0o600)
	code, _, stderr = runBinary(t, nil, "config", "check", "--config", bad)
	assert.Equal(t, 1, code, "unknown key: %q", stderr)
	assert.Contains(t, stderr, `unknown key "colour"`, "unknown key")
	for _, args := range [][]string{{}, {"frobnicate"}, {"config"}, {"migrate", "sideways", "--config", good}, {"serve", "--nope"}} {
		code, _, stderr := runBinary(t, []string{"TEST_GENESYS_TOKEN=x"}, args...)
		assert.Equal(t, 2, code, "outbox %v: stderr %q", args, stderr)
		assert.Contains(t, stderr, "Usage:", "outbox %v", args)
	}
}

func TestDemoTarget(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rate string
		want int
	}{{"0", 200}, {"1", 500}} {
		port := freePort(t)
		cmd := exec.Command(binary, "demo-target", "--listen", "127.0.0.1:"+port, "--fail-rate", c.rate)
		var out syncBuffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var resp *http.Response
		var err error
		for range 100 {
			req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+port+"/genesys/events", strings.NewReader(`{"id":"demo"}`))
			req.Header.Set("X-Outbox-Key", "demo")
			if resp, err = http.DefaultClient.Do(req); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		assert.Equal(t, c.want, resp.StatusCode, "fail-rate %s: output %q", c.rate, out.String())
		assert.Contains(t, out.String(), "key=demo", "fail-rate %s", c.rate)
	}
}
