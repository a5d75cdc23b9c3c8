package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// limitsConfig is one Genesys-like route with a 1 MiB body limit.
const limitsConfig = `
listen: "127.0.0.1:0"
database_url: %q
admin_token: ` + testAdminToken + `
routes:
  - name: genesys
    auth: {header: {name: X-Webhook-Token, value: genesys-token}}
    idempotency_key: [{json: /id}]
    max_body_bytes: 1048576
    target: {url: "http://127.0.0.1:1/"}
`

// startMain runs the real serve wiring on :0 with doc (a config whose
// database_url is filled in), and returns it and its database.
func startMainWithLimits(t *testing.T, doc string, limits *httpLimits, logs io.Writer) (*Main, *pgxpool.Pool) {
	t.Helper()
	pool, dbURL := testdb.Pool(t)
	cfg, err := config.Parse(fmt.Appendf(nil, doc, dbURL), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := &Main{Config: cfg, Logger: logger, RiverLogger: logger, limits: limits}
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m, pool
}

func countEvents(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestServeLimitsAreSet checks the limits serve runs with: each timeout is
// set, and bounded.
func TestServeLimitsAreSet(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse(fmt.Appendf(nil, limitsConfig, "postgres://unused/db"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := (&Main{Config: cfg, Logger: slog.New(slog.DiscardHandler)}).newHTTPServer(http.NotFoundHandler())
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ got, max time.Duration }{
		"ReadHeaderTimeout": {srv.ReadHeaderTimeout, 10 * time.Second},
		"ReadTimeout":       {srv.ReadTimeout, 30 * time.Second},
		"WriteTimeout":      {srv.WriteTimeout, 60 * time.Second},
		"IdleTimeout":       {srv.IdleTimeout, 120 * time.Second},
	} {
		if c.got <= 0 || c.got > c.max {
			t.Errorf("%s = %s, want set and at most %s", name, c.got, c.max)
		}
	}
	if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d", srv.MaxHeaderBytes)
	}
	if srv.TLSConfig != nil {
		t.Error("TLS without tls in the config")
	}
}

// TestSlowClientsAreCutOff runs serve with short timeouts and real sockets:
// a client trickling its headers is disconnected at ReadHeaderTimeout, and
// one trickling its body gets a 408 at ReadTimeout. Nothing is stored.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	limits := &httpLimits{readHeader: 500 * time.Millisecond, read: time.Second, write: 5 * time.Second, idle: 5 * time.Second, maxHeaderBytes: 64 << 10}
	m, pool := startMainWithLimits(t, limitsConfig, limits, nil)

	t.Run("headers", func(t *testing.T) {
		conn := dial(t, m.Addr())
		start := time.Now()
		closed := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(conn)
			closed <- err
		}()
		_, _ = io.WriteString(conn, "POST /webhooks/genesys HTTP/1.1\r\nHost: outbox\r\n")
		for i := 0; ; i++ {
			select {
			case <-closed:
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("disconnected after %s", d)
				}
				return
			case <-time.After(100 * time.Millisecond):
				if time.Since(start) > 10*time.Second {
					t.Fatal("a client trickling headers was never disconnected")
				}
				// One header byte at a time, never ending the headers.
				_, _ = conn.Write([]byte{"X-Slow: abcdefgh"[i%16]})
			}
		}
	})

	t.Run("body", func(t *testing.T) {
		conn := dial(t, m.Addr())
		start := time.Now()
		body := `{"id":"slow-loris","pad":"` + strings.Repeat("x", 200) + `"}`
		_, _ = fmt.Fprintf(conn, "POST /webhooks/genesys HTTP/1.1\r\nHost: outbox\r\nContent-Type: application/json\r\nX-Webhook-Token: genesys-token\r\nContent-Length: %d\r\n\r\n", len(body))
		stop := make(chan struct{})
		go func() {
			for i := 0; i < len(body); i++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{body[i]}); err != nil {
					return
				}
			}
		}()
		defer close(stop)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to a slow body: %v", err)
		}
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 408 || string(raw) != `{"error":"the request body did not arrive in time; send it again"}`+"\n" {
			t.Errorf("slow body: %d %s", resp.StatusCode, raw)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("answered after %s", d)
		}
	})
	if n := countEvents(t, pool); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// TestOversizeBodiesAreCutOff sends a 10 GB body to a route whose limit is
// 1 MiB, through real sockets: declared in Content-Length, it is refused
// before a byte of it is read; streamed chunked, it is cut off at the limit
// while reading, and the connection is closed long before 10 GB.
func TestOversizeBodiesAreCutOff(t *testing.T) {
	t.Parallel()
	m, pool := startMainWithLimits(t, limitsConfig, nil, nil)
	const tenGB = 10 << 30
	want413 := `{"error":"the body is larger than this route's max_body_bytes (1048576 bytes)"}` + "\n"

	t.Run("Content-Length", func(t *testing.T) {
		conn := dial(t, m.Addr())
		_, _ = fmt.Fprintf(conn, "POST /webhooks/genesys HTTP/1.1\r\nHost: outbox\r\nContent-Type: application/json\r\nX-Webhook-Token: genesys-token\r\nContent-Length: %d\r\n\r\n", int64(tenGB))
		// Not a byte of the body is sent: the answer comes anyway.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 413 || string(raw) != want413 {
			t.Errorf("%d %s", resp.StatusCode, raw)
		}
	})

	t.Run("chunked", func(t *testing.T) {
		conn := dial(t, m.Addr())
		_, _ = io.WriteString(conn, "POST /webhooks/genesys HTTP/1.1\r\nHost: outbox\r\nContent-Type: application/json\r\nX-Webhook-Token: genesys-token\r\nTransfer-Encoding: chunked\r\n\r\n")
		written := make(chan int64, 1)
		go func() {
			chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", 64<<10, strings.Repeat("x", 64<<10))
			var n int64
			for n < tenGB {
				_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				k, err := conn.Write(chunk)
				n += int64(k)
				if err != nil {
					break
				}
			}
			written <- n
		}()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 413 || string(raw) != want413 || !resp.Close {
			t.Errorf("%d close=%v %s", resp.StatusCode, resp.Close, raw)
		}
		// The server stops reading and closes the connection: what the
		// client managed to write is the limit plus socket buffers.
		n := <-written
		if n > 64<<20 {
			t.Errorf("the client wrote %d MiB before the server hung up", n>>20)
		}
		t.Logf("the client wrote %.1f MiB of 10 GiB before the connection was closed", float64(n)/(1<<20))
	})
	if n := countEvents(t, pool); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
