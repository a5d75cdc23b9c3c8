package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// floodConfig has two HMAC routes, which read the body before they know the
// sender, and one with a header token, with max_inflight_requests 64.
const floodConfig = `
listen: "127.0.0.1:0"
database_url: %q
admin_token: ` + testAdminToken + `
max_inflight_requests: 64
routes:
  - name: github
    auth: {hmac: {header: X-Hub-Signature-256, secret: flood-secret, prefix: "sha256="}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: shopify
    auth: {hmac: {header: X-Shopify-Hmac-Sha256, secret: shop-secret, encoding: base64}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: genesys
    auth: {header: {name: X-Webhook-Token, value: genesys-token}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
`

// TestFloodOfIdleBodies reproduces the review's attack on the real wiring
// over real sockets: 64 connections without credentials each announce a
// 1 MiB body (Content-Length: 1048576), send one byte and idle, on every
// route. Meanwhile a correctly signed request to another route answers 200
// within 3 s, so does a request with the header token, and the heap does not
// grow by the bodies announced (64 MiB at least, before the fix).
func TestFloodOfIdleBodies(t *testing.T) {
	t.Parallel()
	m, pool := startMainWithLimits(t, floodConfig, nil, nil)
	addr := m.Addr()

	heapInUse := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heapInUse()

	for _, route := range []string{"github", "genesys"} {
		// Open the flood: each connection announces 1 MiB and sends "{".
		var wg sync.WaitGroup
		answered := make(chan int, 64)
		for range 64 {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			fmt.Fprintf(conn, "POST /webhooks/%s HTTP/1.1\r\nHost: outbox\r\nContent-Type: application/json\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 1048576\r\n\r\n{", route)
			wg.Go(func() {
				// Those refused are answered at once; the rest idle
				// until intake_body_timeout or the end of the test.
				_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
				if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
					answered <- resp.StatusCode
				}
			})
		}

		start := time.Now()
		status, raw := signedPost(t, addr, "shopify", "shop-secret", "signed-during-"+route)
		if elapsed := time.Since(start); status != 200 || elapsed > 3*time.Second {
			t.Errorf("flood on %s: a signed request to another route got %d %s after %s, want 200 within 3s", route, status, raw, elapsed)
		}
		start = time.Now()
		status, raw = tokenPost(t, addr, "token-during-"+route)
		if elapsed := time.Since(start); status != 200 || elapsed > 3*time.Second {
			t.Errorf("flood on %s: a request with the token got %d %s after %s, want 200 within 3s", route, status, raw, elapsed)
		}
		during := heapInUse()
		if grown := int64(during) - int64(before); grown > 24<<20 {
			t.Errorf("flood on %s: the heap grew by %d MiB; 64 announced bodies of 1 MiB must not be reserved", route, grown>>20)
		}
		t.Logf("flood on %s: heap in use %d MiB before, %d MiB during", route, before>>20, during>>20)
		// What the flood itself got: 401 on the token route (no slot is
		// ever taken), 429 past the anonymous budgets on the signed one.
		refused := map[int]int{}
	collect:
		for {
			select {
			case s := <-answered:
				refused[s]++
			case <-time.After(500 * time.Millisecond):
				break collect
			}
		}
		t.Logf("flood on %s: the idle connections were answered %v", route, refused)
		if route == "genesys" && refused[401] != 64 {
			t.Errorf("flood on the token route: %v, want 64 answers of 401 before the body", refused)
		}
		if route == "github" && refused[429] < 64-16 {
			t.Errorf("flood on an HMAC route: %v, want most of the 64 refused with 429 at once", refused)
		}
	}
	if n := countEvents(t, pool); n != 4 {
		t.Errorf("%d events stored, want the 4 authenticated ones", n)
	}
}

func signedPost(t *testing.T, addr, route, secret, id string) (int, string) {
	t.Helper()
	body := []byte(`{"id":"` + id + `"}`)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/webhooks/"+route, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Shopify-Hmac-Sha256", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return doWithin(t, req)
}

func tokenPost(t *testing.T, addr, id string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/webhooks/genesys", strings.NewReader(`{"id":"`+id+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "genesys-token")
	return doWithin(t, req)
}

// doWithin sends req on a fresh connection, giving up after 10 s.
func doWithin(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}
