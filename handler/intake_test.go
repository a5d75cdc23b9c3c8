package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/handler"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

const (
	adminToken   = "0123456789abcdef0123456789abcdef"
	genesysToken = "genesys-secret-token"
)

const baseConfig = `
database_url: postgres://unused/db
admin_token: ` + adminToken + `
intake_timeout: 10s
intake_retry_after: 30s
routes:
  - name: genesys
    auth:
      header: {name: X-Webhook-Token, value: ` + genesysToken + `}
    idempotency_key:
      - json: /id
      - header: webhook-id
      - composite: [/topicName, /eventBody/conversationId, /eventBody/participantId, /eventBody/sessionId, /eventBody/eventTime]
    max_body_bytes: 2048
    target: {url: "http://127.0.0.1:1/unused"}
    retry: {max_attempts: 7}
  - name: open
    auth: {none: true}
    idempotency_key: [{json: /n}, {json: /id}]
    target: {url: "http://127.0.0.1:1/unused"}
    ordering: {key: [{json: /conversationId}], on_dead_letter: block}
`

type bundle struct {
	server *httptest.Server
	pool   *pgxpool.Pool
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return setupWithPool(t, poolFor(t), baseConfig)
}

func poolFor(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, _ := testdb.Pool(t)
	return pool
}

func setupWithPool(t *testing.T, pool *pgxpool.Pool, doc string) *bundle {
	t.Helper()
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.New(pool)
	client, err := jobs.NewInsertOnlyClient(pool, logger)
	if err != nil {
		t.Fatal(err)
	}
	intake, err := handler.NewIntake(cfg, store.NewIntake(st, client), logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler.NewRouter(handler.RouterOptions{Intake: intake, Readiness: st, Logger: logger}))
	t.Cleanup(srv.Close)
	return &bundle{server: srv, pool: pool}
}

type answer struct {
	status  int
	header  http.Header
	decoded map[string]string
	raw     string
}

func (b *bundle) post(t *testing.T, route string, body []byte, headers map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.server.URL+"/webhooks/"+route, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", genesysToken)
	for k, v := range headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.decoded); err != nil {
		t.Fatalf("answer is not a JSON object: %q", raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("answer Content-Type = %q", ct)
	}
	return a
}

func (b *bundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/genesys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAcceptStoresEventAndJobInOneGo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := readTestdata(t, "data-action.json")

	a := b.post(t, "genesys", body, map[string]string{"Content-Type": "application/json; charset=utf-8"})
	require.Equal(t, 200, a.status, a.raw)
	require.Equal(t, "accepted", a.decoded["status"], a.raw)
	require.Equal(t, "5b0d6f8e-2c41-4e1a-9a77-0c3e8f1d2b64", a.decoded["key"], a.raw)

	var stored []byte
	var contentType string
	var eventID int64
	var receivedAt time.Time
	err := b.pool.QueryRow(context.Background(), `SELECT id, body, content_type, received_at FROM events WHERE route = 'genesys' AND key = $1`, a.decoded["key"]).Scan(&eventID, &stored, &contentType, &receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, body) {
		t.Errorf("stored body differs from the bytes sent")
	}
	if contentType != "application/json; charset=utf-8" { // as sent, and normalised
		t.Errorf("content_type = %q", contentType)
	}

	var queue, kind string
	var maxAttempts int
	var args outbox.DeliverArgs
	err = b.pool.QueryRow(context.Background(), `SELECT queue, kind, max_attempts, args FROM river_job`).Scan(&queue, &kind, &maxAttempts, &args)
	if err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, "genesys", queue, "job queue")
	assert.Equal(t, "deliver", kind, "job kind")
	assert.Equal(t, 7, maxAttempts, "job max_attempts")
	assert.True(t, args.ReceivedAt.Equal(receivedAt), "job args = %+v, event received at %s", args, receivedAt)
	assert.Equal(t, eventID, args.EventID, "job args = %+v", args)
	assert.Equal(t, "genesys", args.Route, "job args = %+v", args)
	assert.Equal(t, a.decoded["key"], args.Key, "job args = %+v", args)
}

func TestDuplicateAnswers200WithoutNewRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := readTestdata(t, "eventbridge.json")
	first := b.post(t, "genesys", body, nil)
	second := b.post(t, "genesys", body, nil)
	require.Equal(t, "accepted", first.decoded["status"], "first: %s", first.raw)
	require.Equal(t, 200, second.status, "second: %s", second.raw)
	require.Equal(t, "duplicate", second.decoded["status"], "second: %s", second.raw)
	if second.decoded["key"] != "6a7e8b9c-1d2e-4f30-8a41-b52c63d74e85" {
		t.Errorf("duplicate key = %q", second.decoded["key"])
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 1 {
		t.Errorf("%d events, want 1", n)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job`); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

func TestConcurrentSameKeyGivesOneRowOneJob(t *testing.T) {
	t.Parallel()
	// 50 transactions queue on one key and a small pool: on a busy machine
	// the first commit can take longer than baseConfig's 500ms budget, and
	// this test is about deduplication, not the budget.
	b := setupWithPool(t, poolFor(t), strings.Replace(baseConfig, "intake_timeout: 500ms", "intake_timeout: 15s", 1))
	const n = 50
	var wg sync.WaitGroup
	statuses := make([]string, n)
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			// Different bodies, same key: the first committed wins.
			a := b.post(t, "genesys", fmt.Appendf(nil, `{"id":"same-key","n":%d}`, i), nil)
			codes[i], statuses[i] = a.status, a.decoded["status"]
		})
	}
	wg.Wait()
	accepted := 0
	for i := range n {
		if codes[i] != 200 {
			t.Errorf("request %d answered %d", i, codes[i])
		}
		if statuses[i] == "accepted" {
			accepted++
		}
	}
	if accepted != 1 {
		t.Errorf("%d requests were accepted, want exactly 1 (the rest duplicates)", accepted)
	}
	if got := b.count(t, `SELECT count(*) FROM events WHERE key = 'same-key'`); got != 1 {
		t.Errorf("%d rows, want 1", got)
	}
	if got := b.count(t, `SELECT count(*) FROM river_job`); got != 1 {
		t.Errorf("%d jobs, want 1", got)
	}
}

func TestKeyExtraction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []struct {
		name    string
		route   string
		body    string
		headers map[string]string
		wantKey string
	}{
		{"string id", "genesys", `{"id":"abc"}`, nil, "abc"},
		{"number is its JSON text", "genesys", `{"id":12345678901234567890.50}`, nil, "12345678901234567890.50"},
		{"null falls through to header", "genesys", `{"id":null}`, map[string]string{"webhook-id": "msg_1"}, "msg_1"},
		{"empty string falls through", "genesys", `{"id":""}`, map[string]string{"webhook-id": "msg_2"}, "msg_2"},
		{"boolean falls through", "genesys", `{"id":true}`, map[string]string{"webhook-id": "msg_3"}, "msg_3"},
		{"object falls through", "genesys", `{"id":{"a":1}}`, map[string]string{"webhook-id": "msg_4"}, "msg_4"},
		{"composite for the bare envelope", "genesys", string(readTestdata(t, "notification.json")), nil,
			"v2.detail.events.conversation.3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59.customer.start|3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59|a1b2c3d4-e5f6-4789-8abc-def012345678|0f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f|1795856597067"},
		{"first source wins", "open", `{"n":7,"id":"x"}`, nil, "7"},
		{"unicode key", "open", `{"id":"Zoë-\u00fc"}`, nil, "Zoë-ü"},
	}
	for _, c := range cases {
		a := b.post(t, c.route, []byte(c.body), c.headers)
		assert.Equal(t, 200, a.status, "%s: %s", c.name, a.raw)
		assert.Equal(t, c.wantKey, a.decoded["key"], "%s: %s", c.name, a.raw)
	}
}

// TestRejections checks every error status, its JSON message, and that
// nothing was stored.
func TestRejections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	big := `{"id":"big","pad":"` + strings.Repeat("x", 3000) + `"}`
	cases := []struct {
		name    string
		route   string
		body    string
		headers map[string]string
		status  int
		want    string
	}{
		{"unknown route", "nope", `{"id":"1"}`, nil, 404, `no route named "nope"`},
		{"body over the limit", "genesys", big, nil, 413, "larger than this route's max_body_bytes (2048 bytes)"},
		{"body over the limit without Content-Length", "genesys", big, map[string]string{"X-Chunked": "1"}, 413, "max_body_bytes"},
		{"missing token", "genesys", `{"id":"1"}`, map[string]string{"X-Webhook-Token": ""}, 401, "authentication failed: the X-Webhook-Token header is missing"},
		{"wrong token", "genesys", `{"id":"1"}`, map[string]string{"X-Webhook-Token": "nope"}, 401, "does not hold a valid token"},
		{"missing content type", "genesys", `{"id":"1"}`, map[string]string{"Content-Type": ""}, 415, "Content-Type header is missing: send Content-Type: application/json"},
		{"text content type", "genesys", `{"id":"1"}`, map[string]string{"Content-Type": "text/plain"}, 415, "the Content-Type is text/plain"},
		{"invalid JSON", "genesys", `{"id":"1",}`, nil, 400, "not valid JSON: invalid character '}'"},
		{"empty body", "genesys", ``, nil, 400, "the body is empty"},
		{"not UTF-8", "genesys", "{\"id\":\"\xff\"}", nil, 400, "not UTF-8"},
		{"trailing garbage", "genesys", `{"id":"1"} x`, nil, 400, "not valid JSON"},
		{"no key", "genesys", `{"other":"1"}`, nil, 422, "no idempotency key: tried json /id (missing), header Webhook-Id (missing), composite"},
		{"key too long", "genesys", `{"id":"` + strings.Repeat("k", 513) + `"}`, nil, 422, "513 bytes long; keys are at most 512 bytes"},
		{"key with control characters", "genesys", `{"id":"a\nb"}`, nil, 422, "control characters"},
		{"auth before content type", "genesys", `not json`, map[string]string{"Content-Type": "text/plain", "X-Webhook-Token": "bad"}, 401, "authentication failed"},
		{"content type before JSON", "genesys", `not json`, map[string]string{"Content-Type": "text/plain"}, 415, "Content-Type"},
	}
	for _, c := range cases {
		var a answer
		if c.headers["X-Chunked"] != "" {
			a = b.postChunked(t, c.route, []byte(c.body))
		} else {
			a = b.post(t, c.route, []byte(c.body), c.headers)
		}
		assert.Equal(t, c.status, a.status, "%s: %s", c.name, a.raw)
		assert.Contains(t, a.decoded["error"], c.want, "%s: %s", c.name, a.raw)
		if len(a.decoded) != 1 {
			t.Errorf("%s: error body has keys other than error: %s", c.name, a.raw)
		}
	}
	if n := b.count(t, `SELECT count(*) FROM events`); n != 0 {
		t.Errorf("%d events stored by rejected requests", n)
	}
}

func (b *bundle) postChunked(t *testing.T, route string, body []byte) answer {
	t.Helper()
	// An io.Reader that is not a *bytes.Reader makes the client stream the
	// body chunked, without Content-Length.
	req, err := http.NewRequest(http.MethodPost, b.server.URL+"/webhooks/"+route, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", genesysToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.decoded)
	return a
}

func TestStoredHeadersHoldNoCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	secrets := map[string]string{
		"Authorization":       "Bearer top-secret-1",
		"Cookie":              "session=top-secret-2",
		"X-Hub-Signature-256": "sha256=top-secret-3",
		"X-Hub-Signature":     "sha1=top-secret-4",
		"Webhook-Signature":   "v1,top-secret-5",
		"Stripe-Signature":    "t=1,v1=top-secret-6",
		"Proxy-Authorization": "Basic top-secret-7",
	}
	headers := map[string]string{"X-Request-Id": "req-42", "X-Genesys-Org": "org-1"}
	for k, v := range secrets {
		headers[k] = v
	}
	a := b.post(t, "genesys", []byte(`{"id":"hdr"}`), headers)
	if a.status != 200 {
		t.Fatalf("got %d %s", a.status, a.raw)
	}
	var raw string
	if err := b.pool.QueryRow(context.Background(), `SELECT headers::text FROM events WHERE key = 'hdr'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	for _, secret := range append(mapValues(secrets), genesysToken) {
		assert.NotContains(t, raw, secret, "stored headers contain a credential")
		assert.NotContains(t, raw, strings.TrimPrefix(secret, "Bearer "), "stored headers contain a credential")
	}
	var stored http.Header
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, "req-42", stored.Get("X-Request-Id"), "ordinary headers were not kept: %s", raw)
	assert.Equal(t, "org-1", stored.Get("X-Genesys-Org"), "ordinary headers were not kept: %s", raw)
	assert.Equal(t, "application/json", stored.Get("Content-Type"), "ordinary headers were not kept: %s", raw)
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestDatabaseDownAnswers503 points intake at a database that does not
// answer: the sender gets 503 with Retry-After, never a 500 or a 2xx.
func TestDatabaseDownAnswers503(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	b := setupWithPool(t, pool, baseConfig)
	start := time.Now()
	a := b.post(t, "genesys", []byte(`{"id":"down"}`), nil)
	require.Equal(t, 503, a.status, a.raw)
	require.Equal(t, "30", a.header.Get("Retry-After"), a.raw)
	// It does not claim that nothing was stored (a group commit may still
	// land), and says what a retry answers; no driver details.
	if want := "the database is unavailable, so the event may not have been stored; retry later: if it was stored, the retry answers duplicate"; a.decoded["error"] != want {
		t.Errorf("error = %q, want %q", a.decoded["error"], want)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %s, longer than a sender's timeout", elapsed)
	}

	resp, err := http.Get(b.server.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/readyz = %d with the database down, want 503", resp.StatusCode)
	}
}

// TestSlowDatabaseAnswers503 holds a lock that blocks inserts: intake gives
// up at intake_timeout with 503, and the event is not stored.
func TestSlowDatabaseAnswers503(t *testing.T) {
	t.Parallel()
	b := setupWithPool(t, poolFor(t), strings.Replace(baseConfig, "intake_timeout: 10s", "intake_timeout: 500ms", 1))
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a := b.post(t, "genesys", []byte(`{"id":"slow"}`), nil)
	elapsed := time.Since(start)
	_ = tx.Rollback(ctx)
	want := "the database did not confirm within 500ms that the event was stored; retry later: if it was stored, the retry answers duplicate"
	require.Equal(t, 503, a.status, a.raw)
	require.NotEmpty(t, a.header.Get("Retry-After"), a.raw)
	require.Equal(t, want, a.decoded["error"], a.raw)
	if elapsed > 3*time.Second {
		t.Errorf("answered after %s; intake_timeout is 500ms", elapsed)
	}
	if n := b.count(t, `SELECT count(*) FROM events WHERE key = 'slow'`); n != 0 {
		t.Errorf("the timed-out event was stored anyway")
	}
	// The sender's retry then succeeds.
	if a := b.post(t, "genesys", []byte(`{"id":"slow"}`), nil); a.decoded["status"] != "accepted" {
		t.Errorf("retry after the lock: %s", a.raw)
	}
}

// TestInflightCapAnswers429: with max_inflight_requests requests waiting on
// a blocked database, the next one is shed at once with 429, Retry-After and
// a JSON error; the waiting ones still get their answer.
func TestInflightCapAnswers429(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(baseConfig, "intake_timeout: 10s", "intake_timeout: 10s\nmax_inflight_requests: 2", 1)
	b := setupWithPool(t, poolFor(t), doc)
	ctx := context.Background()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	answers := make(chan answer, 2)
	for i := range 2 {
		go func() { answers <- b.post(t, "genesys", fmt.Appendf(nil, `{"id":"held-%d"}`, i), nil) }()
	}
	// Wait until both hold the lock's queue.
	deadline := time.Now().Add(10 * time.Second)
	for b.count(t, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass`) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two requests never queued on the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a := b.post(t, "genesys", []byte(`{"id":"shed"}`), nil)
	require.Equal(t, 429, a.status, "third request: %s", a.raw)
	require.Equal(t, "30", a.header.Get("Retry-After"), "third request: %s", a.raw)
	require.Contains(t, a.decoded["error"], "max_inflight_requests", "third request: %s", a.raw)
	_ = tx.Rollback(ctx)
	for range 2 {
		if a := <-answers; a.status != 200 {
			t.Errorf("a held request got %d %s after the lock was released", a.status, a.raw)
		}
	}
	// The slots are free again.
	if a := b.post(t, "genesys", []byte(`{"id":"shed"}`), nil); a.decoded["status"] != "accepted" {
		t.Errorf("after the load passed: %s", a.raw)
	}
}

// TestPoolExhaustedAnswers503WithinBudget: when no pool connection can be
// had, intake still answers 503 at intake_timeout instead of waiting.
func TestPoolExhaustedAnswers503WithinBudget(t *testing.T) {
	t.Parallel()
	dbURL := testdb.URL(t)
	pool, err := pgxpool.New(context.Background(), dbURL+"&pool_max_conns=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	held, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	b := setupWithPool(t, pool, strings.Replace(baseConfig, "intake_timeout: 10s", "intake_timeout: 500ms", 1))
	start := time.Now()
	a := b.post(t, "genesys", []byte(`{"id":"no-conn"}`), nil)
	elapsed := time.Since(start)
	require.Equal(t, 503, a.status, a.raw)
	require.Equal(t, "30", a.header.Get("Retry-After"), a.raw)
	require.Contains(t, a.decoded["error"], "did not confirm within 500ms", a.raw)
	if elapsed > 3*time.Second {
		t.Errorf("answered after %s; intake_timeout is 500ms", elapsed)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/nope": 404} {
		resp, err := http.Get(b.server.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	// A schema that is behind makes the service not ready, and says why.
	if _, err := b.pool.Exec(context.Background(), `UPDATE schema_migrations SET version = version - 1`); err != nil {
		t.Fatal(err)
	}
	// Readiness is cached for a second.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(b.server.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 503 && strings.Contains(string(body), "outbox migrate up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz on an old schema = %d %s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
