package handler

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/webhook-outbox/webhook-outbox/config"
)

// gateConfig has two routes signed with HMAC, which must read the body
// before they know the sender, and one authenticated by a header token.
// 127.0.0.1 is a trusted proxy, so tests pick a client address with
// X-Forwarded-For.
const gateConfig = `
database_url: postgres://unused/db
admin_token: 0123456789abcdef0123456789abcdef
max_inflight_requests: 16
intake_body_timeout: %s
trusted_proxies: [127.0.0.1]
routes:
  - name: signed-a
    auth: {hmac: {header: X-Signature, secret: secret-a}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: signed-b
    auth: {hmac: {header: X-Signature, secret: secret-b}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: token
    auth: {header: {name: X-Webhook-Token, value: the-token}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
`

type gateBundle struct {
	in  *Intake
	srv *httptest.Server
}

func setupGate(t *testing.T, bodyTimeout string) *gateBundle {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, gateConfig, bodyTimeout), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewIntake(cfg, nopAcceptor{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewRouter(RouterOptions{Intake: in, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return &gateBundle{in: in, srv: srv}
}

// hold opens a connection that announces a 1 MiB body for route as if from
// client, sends one byte of it, and then idles. It returns the connection,
// to read an answer from if one comes.
func (b *gateBundle) hold(t *testing.T, route, client string, extra string) *bufio.Reader {
	t.Helper()
	conn, err := net.Dial("tcp", b.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /webhooks/%s HTTP/1.1\r\nHost: outbox\r\nContent-Type: application/json\r\nX-Forwarded-For: %s\r\nX-Signature: 00\r\n%sContent-Length: 1048576\r\n\r\n{", route, client, extra)
	return bufio.NewReader(conn)
}

// anonymous is how many anonymous slots are taken.
func (b *gateBundle) anonymous() int {
	b.in.gate.mu.Lock()
	defer b.in.gate.mu.Unlock()
	return b.in.gate.anon
}

func (b *gateBundle) waitAnonymous(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.anonymous() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d anonymous requests in flight, want %d", b.anonymous(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// answer reads an answer that must come without the client sending more.
func answerOn(t *testing.T, r *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// signedPost posts a correctly signed event to route from client.
func (b *gateBundle) signedPost(t *testing.T, route, secret, client, id string) (int, string) {
	t.Helper()
	body := []byte(`{"id":"` + id + `"}`)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/"+route, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature", hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("X-Forwarded-For", client)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestAnonymousBodiesCannotStarveSenders: with max_inflight_requests 16,
// clients that announce a body and never send it hold at most one slot per
// address on a route, four on a route, eight in all. Past those they get
// 429 at once. A signed sender on another route, and a sender with a token,
// still get through; a client without the token never holds a slot.
func TestAnonymousBodiesCannotStarveSenders(t *testing.T) {
	t.Parallel()
	b := setupGate(t, "30s")

	b.hold(t, "signed-a", "203.0.113.1", "")
	b.waitAnonymous(t, 1)
	status, raw := answerOn(t, b.hold(t, "signed-a", "203.0.113.1", ""))
	assert.Equal(t, 429, status, "a second idle body from one address: %s", raw)
	assert.Contains(t, raw, "route signed-a is already reading the most bodies from this address that it may", "a second idle body from one address")
	for i := 2; i <= 4; i++ {
		b.hold(t, "signed-a", fmt.Sprintf("203.0.113.%d", i), "")
	}
	b.waitAnonymous(t, 4)
	status, raw = answerOn(t, b.hold(t, "signed-a", "203.0.113.5", ""))
	assert.Equal(t, 429, status, "a fifth idle body on one route: %s", raw)
	assert.Contains(t, raw, "route signed-a is already reading the most bodies of senders not yet authenticated", "a fifth idle body on one route")
	// The other signed route has room.
	if status, raw := b.signedPost(t, "signed-b", "secret-b", "203.0.113.1", "b-1"); status != 200 {
		t.Errorf("a signed request to another route during the flood: %d %s", status, raw)
	}
	for i := 1; i <= 4; i++ {
		b.hold(t, "signed-b", fmt.Sprintf("198.51.100.%d", i), "")
	}
	b.waitAnonymous(t, 8)
	status, raw = answerOn(t, b.hold(t, "signed-b", "198.51.100.99", ""))
	assert.Equal(t, 429, status, "past half of max_inflight_requests: %s", raw)
	assert.Contains(t, raw, "intake is already reading the most bodies of senders not yet authenticated", "past half of max_inflight_requests")
	// Without the token: 401 at once, before the body, and no slot.
	status, raw = answerOn(t, b.hold(t, "token", "192.0.2.1", ""))
	assert.Equal(t, 401, status, "no token: %s", raw)
	assert.Contains(t, raw, "X-Webhook-Token header is missing", "no token")
	// With it, a sender gets one of the slots kept for authenticated ones.
	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+"/webhooks/token", strings.NewReader(`{"id":"t-1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "the-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("a sender with the token during the flood: %d", resp.StatusCode)
	}
	if n := b.in.gate.inflight.Load(); n != 8 {
		t.Errorf("%d requests in flight, want the 8 idle ones", n)
	}
}

// TestSlowBodyIsCutOffAtBodyTimeout: a body that stops arriving is answered
// 408 at intake_body_timeout, long before the server's 30 s read timeout,
// and its slots are free again.
func TestSlowBodyIsCutOffAtBodyTimeout(t *testing.T) {
	t.Parallel()
	b := setupGate(t, "300ms")
	start := time.Now()
	status, raw := answerOn(t, b.hold(t, "signed-a", "203.0.113.1", ""))
	elapsed := time.Since(start)
	assert.Equal(t, 408, status, "an idle body: %s", raw)
	assert.Equal(t, `{"error":"the request body did not arrive in time; send it again"}`+"\n", raw, "an idle body")
	assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond, "answered before intake_body_timeout (300ms)")
	assert.LessOrEqual(t, elapsed, 20*time.Second, "answered long after intake_body_timeout (300ms)")
	b.waitAnonymous(t, 0)
	if status, raw := b.signedPost(t, "signed-a", "secret-a", "203.0.113.1", "a-1"); status != 200 {
		t.Errorf("the same address afterwards: %d %s", status, raw)
	}
}

// TestBodyBufferIsNotReservedUpFront: a body announced as 1 MiB of which one
// byte arrives makes intake reserve at most initialBodyBuffer.
func TestBodyBufferIsNotReservedUpFront(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodPost, "/webhooks/x", io.MultiReader(strings.NewReader("{"), errReader{}))
	r.ContentLength = 1 << 20
	var buf bytes.Buffer
	e := readBody(httptest.NewRecorder(), r, 1<<20, &buf)
	require.NotNil(t, e, "readBody")
	require.Equal(t, http.StatusBadRequest, e.Status, "readBody = %v", e)
	if buf.Cap() > initialBodyBuffer+bytes.MinRead {
		t.Errorf("reserved %d bytes for a body announced as 1 MiB of which 1 byte came; at most %d", buf.Cap(), initialBodyBuffer)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestIntakeGateBudgets(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ max, all, route, client int }{{1, 1, 1, 1}, {16, 8, 4, 1}, {64, 32, 16, 4}, {1024, 512, 256, 64}} {
		g := newIntakeGate(c.max)
		assert.Equal(t, c.all, g.anonMax, "max_inflight_requests %d: all", c.max)
		assert.Equal(t, c.route, g.anonRouteMax, "max_inflight_requests %d: per route", c.max)
		assert.Equal(t, c.client, g.anonClientMax, "max_inflight_requests %d: per client", c.max)
	}
	g := newIntakeGate(64)
	var releases []func()
	for range 4 {
		full, release := g.enterAnon("a", throttleKey(mustAddr("10.0.0.1")))
		if full != anonAdmitted {
			t.Fatal("refused within budget")
		}
		releases = append(releases, release)
	}
	if full, _ := g.enterAnon("a", throttleKey(mustAddr("10.0.0.1"))); full != anonFullClient {
		t.Errorf("fifth from one address: %d", full)
	}
	if full, release := g.enterAnon("b", throttleKey(mustAddr("10.0.0.1"))); full != anonAdmitted {
		t.Errorf("the same address on another route: %d", full)
	} else {
		release()
	}
	for _, release := range releases {
		release()
		release() // twice is harmless
	}
	assert.Zero(t, g.anon, "after release")
	assert.Empty(t, g.anonRoute, "after release")
	assert.Empty(t, g.anonClient, "after release")
}
