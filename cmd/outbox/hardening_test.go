package main

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDebugListenerIsLoopbackOnly: the profiler, which has no
// authentication, refuses an address other hosts can reach unless allowed
// explicitly, and its server has timeouts.
func TestDebugListenerIsLoopbackOnly(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	for _, addr := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.1.2.3:6060", "outbox.internal:6060"} {
		_, _, err := newDebugServer(addr, false, logger)
		if err == nil || !strings.Contains(err.Error(), "OUTBOX_DEBUG_LISTEN="+addr+" is not a loopback address") || !strings.Contains(err.Error(), "OUTBOX_DEBUG_ALLOW_REMOTE=1") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	for _, c := range []struct {
		addr  string
		allow bool
	}{{"127.0.0.1:0", false}, {"localhost:0", false}, {"[::1]:0", false}, {"0.0.0.0:0", true}} {
		srv, ln, err := newDebugServer(c.addr, c.allow, logger)
		if err != nil || srv == nil {
			t.Errorf("%s (allowed %v): %v", c.addr, c.allow, err)
			continue
		}
		ln.Close()
		if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout < time.Minute || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
			t.Errorf("%s: timeouts %s %s %s %s, max header bytes %d", c.addr, srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
		}
	}
	// serve refuses to start with such an address.
	cfg := writeConfig(t, "postgres://unused@127.0.0.1:1/db", "http://127.0.0.1:1/", "")
	code, _, errOut := runBinary(t, []string{"OUTBOX_DEBUG_LISTEN=:6060", "TEST_GENESYS_TOKEN=t"}, "serve", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "OUTBOX_DEBUG_LISTEN=:6060 is not a loopback address") {
		t.Errorf("serve with OUTBOX_DEBUG_LISTEN=:6060: exit %d %s", code, errOut)
	}
}

// TestMetricsListen: with metrics_listen, /metrics (with /healthz and
// /readyz) is served there, and no longer on listen.
func TestMetricsListen(t *testing.T) {
	t.Parallel()
	m, _ := startMainWithLimits(t, limitsConfig+"metrics_listen: 127.0.0.1:0\n", nil, nil)
	for base, want := range map[string]int{"http://" + m.Addr(): 404, "http://" + m.MetricsAddr(): 200} {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 200 && !strings.Contains(string(raw), "outbox_intake_events_total")) {
			t.Errorf("%s/metrics: %d %.200s", base, resp.StatusCode, raw)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + m.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s on metrics_listen: %d", path, resp.StatusCode)
		}
	}
}

// TestServeLogsWarnings: serve logs the config's security warnings at
// startup, here a key from a header the HMAC signature does not cover.
func TestServeLogsWarnings(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(limitsConfig, "auth: {header: {name: X-Webhook-Token, value: genesys-token}}", "auth: {hmac: {header: X-Hub-Signature-256, secret: s}}", 1)
	doc = strings.Replace(doc, "idempotency_key: [{json: /id}]", "idempotency_key: [{header: X-GitHub-Delivery}]", 1)
	var logs syncBuffer
	startMainWithLimits(t, doc, nil, &logs)
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"route genesys: idempotency_key[0] reads the X-Github-Delivery header, which the hmac signature does not cover`) {
		t.Errorf("no warning in the log:\n%s", logs.String())
	}
}

// TestConfigCheckHardening: config check warns about a cleartext listener
// and a key the signature does not cover, and hides tokens in target URLs.
func TestConfigCheckHardening(t *testing.T) {
	t.Parallel()
	doc := `
database_url: postgres://u@localhost/db
admin_token: ` + testAdminToken + `
listen: ":8080"
metrics_listen: 127.0.0.1:9100
routes:
  - name: github
    auth: {hmac: {header: X-Hub-Signature-256, secret: s, prefix: "sha256="}}
    idempotency_key: [{header: X-GitHub-Delivery}]
    target: {url: "https://hooks.internal/in/aB3dE5fG7hJ9kL1mN3pQ5rS7?access_token=tok-secret-1&v=2"}
`
	path := filepath.Join(t.TempDir(), "outbox.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, "config", "check", "--config", path)
	for _, want := range []string{
		"POST /webhooks/github -> https://hooks.internal/in/xxxxx?access_token=xxxxx&v=xxxxx (auth: hmac X-Hub-Signature-256,",
		"/metrics, /healthz and /readyz on 127.0.0.1:9100",
		"warning: listen :8080 is reachable from other hosts over plain HTTP",
		"warning: route github: idempotency_key[0] reads the X-Github-Delivery header, which the hmac signature does not cover",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	if code != 0 || strings.Contains(out+errOut, "tok-secret-1") || strings.Contains(out+errOut, "aB3dE5fG7hJ9kL1mN3pQ5rS7") {
		t.Errorf("exit %d, output shows a token:\n%s%s", code, out, errOut)
	}
}

// TestDemoTokensAreRefusedOutsideMakeRun: serve and config check refuse a
// config holding a token published with the demos, unless
// OUTBOX_ALLOW_DEMO_TOKENS=1 (which make run sets).
func TestDemoTokensAreRefusedOutsideMakeRun(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "postgres://unused@127.0.0.1:1/db", "http://127.0.0.1:1/", "")
	for _, args := range [][]string{{"config", "check", "--config", cfg}, {"serve", "--config", cfg}} {
		code, _, errOut := runBinary(t, []string{"TEST_GENESYS_TOKEN=dev-genesys-token"}, args...)
		if code != 1 || !strings.Contains(errOut, "routes[0] (genesys).auth.header.value: is a demo token published with webhook-outbox") {
			t.Errorf("%s with the demo token: exit %d %s", args[0], code, errOut)
		}
	}
	code, out, errOut := runBinary(t, []string{"TEST_GENESYS_TOKEN=dev-genesys-token", "OUTBOX_ALLOW_DEMO_TOKENS=1"}, "config", "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "is valid") {
		t.Errorf("config check under make run: exit %d %s%s", code, out, errOut)
	}
	run, err := os.ReadFile(filepath.Join("..", "..", "scripts", "run.sh"))
	if err != nil || !strings.Contains(string(run), "export OUTBOX_ALLOW_DEMO_TOKENS=1") {
		t.Errorf("scripts/run.sh does not allow the demo tokens: %v", err)
	}
}

// TestRoutesListRedactsTargetTokens: routes list, from the CLI and the
// admin API's data, hides tokens in the target URL's query and path.
func TestRoutesListRedactsTargetTokens(t *testing.T) {
	b := setupCLI(t, "http://127.0.0.1:1/hooks/aB3dE5fG7hJ9kL1mN3pQ5rS7?api_key=key-secret-1")
	for _, args := range [][]string{{"routes", "list", "--config", b.cfgPath}, {"routes", "list", "--json", "--config", b.cfgPath}} {
		code, out, errOut := cli(t, args...)
		if code != 0 || !strings.Contains(out, "http://127.0.0.1:1/hooks/xxxxx?api_key=xxxxx") || strings.Contains(out, "key-secret-1") || strings.Contains(out, "aB3dE5fG7hJ9kL1mN3pQ5rS7") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
}
