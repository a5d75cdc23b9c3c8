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

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDebugListenerIsLoopbackOnly: the profiler, which has no
// authentication, refuses an address other hosts can reach unless allowed
// explicitly, and its server has timeouts.
func TestDebugListenerIsLoopbackOnly(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)
	for _, addr := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.1.2.3:6060", "outbox.internal:6060"} {
		_, _, err := newDebugServer(addr, false, logger)
		assert.ErrorContains(t, err, "OUTBOX_DEBUG_LISTEN="+addr+" is not a loopback address", addr)
		assert.ErrorContains(t, err, "OUTBOX_DEBUG_ALLOW_REMOTE=1", addr)
	}
	for _, c := range []struct {
		addr  string
		allow bool
	}{{"127.0.0.1:0", false}, {"localhost:0", false}, {"[::1]:0", false}, {"0.0.0.0:0", true}} {
		srv, ln, err := newDebugServer(c.addr, c.allow, logger)
		require.NoError(t, err, "%s (allowed %v)", c.addr, c.allow)
		require.NotNil(t, srv, "%s (allowed %v)", c.addr, c.allow)
		ln.Close()
		assert.Positive(t, srv.ReadHeaderTimeout, "%s: ReadHeaderTimeout", c.addr)
		assert.Positive(t, srv.ReadTimeout, "%s: ReadTimeout", c.addr)
		assert.GreaterOrEqual(t, srv.WriteTimeout, time.Minute, "%s: WriteTimeout", c.addr)
		assert.Positive(t, srv.IdleTimeout, "%s: IdleTimeout", c.addr)
		assert.Positive(t, srv.MaxHeaderBytes, "%s: MaxHeaderBytes", c.addr)
	}
	// serve refuses to start with such an address.
	cfg := writeConfig(t, "postgres://unused@127.0.0.1:1/db", "http://127.0.0.1:1/", "")
	code, _, errOut := runBinary(t, []string{"OUTBOX_DEBUG_LISTEN=:6060", "TEST_GENESYS_TOKEN=t"}, "serve", "--config", cfg)
	assert.Equal(t, 1, code, "serve with OUTBOX_DEBUG_LISTEN=:6060: %s", errOut)
	assert.Contains(t, errOut, "OUTBOX_DEBUG_LISTEN=:6060 is not a loopback address", "serve with OUTBOX_DEBUG_LISTEN=:6060")
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
		assert.Equal(t, want, resp.StatusCode, "%s/metrics: %.200s", base, raw)
		if want == 200 {
			assert.True(t, strings.Contains(string(raw), "outbox_intake_events_total"), "%s/metrics: %.200s", base, raw)
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
	assert.Equal(t, 0, code, "config check:\n%s%s", out, errOut)
	assert.NotContains(t, out+errOut, "tok-secret-1", "output shows a token")
	assert.NotContains(t, out+errOut, "aB3dE5fG7hJ9kL1mN3pQ5rS7", "output shows a token")
}

// TestDemoTokensAreRefusedOutsideMakeRun: serve and config check refuse a
// config holding a token published with the demos, unless
// OUTBOX_ALLOW_DEMO_TOKENS=1 (which make run sets).
func TestDemoTokensAreRefusedOutsideMakeRun(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "postgres://unused@127.0.0.1:1/db", "http://127.0.0.1:1/", "")
	for _, args := range [][]string{{"config", "check", "--config", cfg}, {"serve", "--config", cfg}} {
		code, _, errOut := runBinary(t, []string{"TEST_GENESYS_TOKEN=dev-genesys-token"}, args...)
		assert.Equal(t, 1, code, "%s with the demo token: %s", args[0], errOut)
		assert.Contains(t, errOut, "routes[0] (genesys).auth.header.value: is a demo token published with webhook-outbox", "%s with the demo token", args[0])
	}
	code, out, errOut := runBinary(t, []string{"TEST_GENESYS_TOKEN=dev-genesys-token", "OUTBOX_ALLOW_DEMO_TOKENS=1"}, "config", "check", "--config", cfg)
	assert.Equal(t, 0, code, "config check under make run: %s%s", out, errOut)
	assert.Contains(t, out, "is valid", "config check under make run: %s", errOut)
	run, err := os.ReadFile(filepath.Join("..", "..", "scripts", "run.sh"))
	require.NoError(t, err)
	assert.Contains(t, string(run), "export OUTBOX_ALLOW_DEMO_TOKENS=1", "scripts/run.sh does not allow the demo tokens")
}

// TestRoutesListRedactsTargetTokens: routes list, from the CLI and the
// admin API's data, hides tokens in the target URL's query and path.
func TestRoutesListRedactsTargetTokens(t *testing.T) {
	b := setupCLI(t, "http://127.0.0.1:1/hooks/aB3dE5fG7hJ9kL1mN3pQ5rS7?api_key=key-secret-1")
	for _, args := range [][]string{{"routes", "list", "--config", b.cfgPath}, {"routes", "list", "--json", "--config", b.cfgPath}} {
		code, out, errOut := cli(t, args...)
		assert.Equal(t, 0, code, "%v:\n%s%s", args, out, errOut)
		assert.Contains(t, out, "http://127.0.0.1:1/hooks/xxxxx?api_key=xxxxx", "%v", args)
		assert.NotContains(t, out, "key-secret-1", "%v", args)
		assert.NotContains(t, out, "aB3dE5fG7hJ9kL1mN3pQ5rS7", "%v", args)
	}
}
