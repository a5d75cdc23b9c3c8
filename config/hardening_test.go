package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInflightMemoryIsBounded: max_inflight_requests × the largest
// max_body_bytes may not pass MaxInflightBodyBytes; the message says how far
// to lower it. The defaults fit exactly.
func TestInflightMemoryIsBounded(t *testing.T) {
	t.Parallel()
	if _, err := Parse([]byte(minimal), env(nil)); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	_, err := Parse([]byte(minimal+"max_inflight_requests: 2048\n"), env(nil))
	want := "max_inflight_requests: 2048 requests in flight with bodies of up to 1048576 bytes each (max_body_bytes of route genesys) could hold 2.0 GiB in memory, more than the 1.0 GiB allowed: lower max_inflight_requests to at most 1024, or lower max_body_bytes"
	assert.ErrorContains(t, err, want)
	big := strings.Replace(minimal, "auth: {none: true}", "auth: {none: true}\n    max_body_bytes: 8388608", 1)
	if _, err := Parse([]byte(big+"max_inflight_requests: 128\n"), env(nil)); err != nil {
		t.Errorf("128 × 8 MiB: %v", err)
	}
	_, err = Parse([]byte(big+"max_inflight_requests: 129\n"), env(nil))
	assert.ErrorContains(t, err, "lower max_inflight_requests to at most 128", "129 × 8 MiB")
	huge := strings.Replace(minimal, "auth: {none: true}", "auth: {none: true}\n    max_body_bytes: 4294967296", 1)
	_, err = Parse([]byte(huge), env(nil))
	assert.ErrorContains(t, err, "routes (genesys).max_body_bytes: 4294967296 bytes is more than the 1.0 GiB", "a 4 GiB body")
}

func TestIntakeBodyTimeout(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal+"intake_body_timeout: 2s\n"), env(nil))
	require.NoError(t, err)
	require.Equal(t, "2s", cfg.IntakeBodyTimeout.D().String(), "cfg %v", cfg)
	for _, v := range []string{"0s", "31s"} {
		_, err := Parse([]byte(minimal+"intake_body_timeout: "+v+"\n"), env(nil))
		assert.ErrorContains(t, err, "intake_body_timeout: "+v+" is out of range", v)
	}
}

// TestStoredHeaders: credential-looking names are not stored, whatever the
// auth mode; keep_headers brings one back, but never the route's own auth
// header.
func TestStoredHeaders(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, "auth: {none: true}", "auth: {hmac: {header: X-Hub-Signature-256, secret: s}}\n    keep_headers: [x-api-key-id]", 1)
	cfg, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	r := &cfg.Routes[0]
	for _, h := range []string{"X-Gitlab-Token", "X-Api-Key", "Api_Key", "X-Auth-User", "Set-Cookie", "X-Client-Secret", "X-Slack-Signature", "X-Shopify-Hmac-Sha256", "X-Password", "Authorization", "X-Hub-Signature-256"} {
		if r.StoresHeader(h) {
			t.Errorf("%s is stored", h)
		}
	}
	for _, h := range []string{"X-Api-Key-Id", "Content-Type", "X-GitHub-Delivery", "Webhook-Id", "User-Agent", "X-Request-Id"} {
		if !r.StoresHeader(h) {
			t.Errorf("%s is not stored", h)
		}
	}
	for name, c := range map[string]struct{ auth, keep, want string }{
		"own hmac header":       {"{hmac: {header: X-Sig, secret: s}}", "[x-sig]", "keep_headers[0]: X-Sig carries this route's own credential or signature"},
		"own token header":      {"{header: {name: X-Gitlab-Token, value: v}}", "[X-Api-Key, x-gitlab-token]", "keep_headers[1]: X-Gitlab-Token carries this route's own credential"},
		"basic's Authorization": {"{basic: {username: u, password: p}}", "[authorization]", "keep_headers[0]: Authorization carries this route's own"},
		"webhook-signature":     {"{standard_webhooks: {secret: " + whsec + "}}", "[Webhook-Signature]", "keep_headers[0]: Webhook-Signature carries"},
		"bad name":              {"{none: true}", `["x y"]`, `keep_headers[0]: "x y" is not a valid header name`},
	} {
		doc := strings.Replace(minimal, "auth: {none: true}", "auth: "+c.auth+"\n    keep_headers: "+c.keep, 1)
		_, err := Parse([]byte(doc), env(nil))
		assert.ErrorContains(t, err, c.want, name)
	}
	// A key may come from a credential-looking header only if it is kept.
	keyed := strings.Replace(minimal, "[{json: /id}]", "[{header: X-Event-Token}]", 1)
	_, err = Parse([]byte(keyed), env(nil))
	assert.ErrorContains(t, err, "idempotency_key[0].header: X-Event-Token carries a credential", "key from X-Event-Token")
	kept := strings.Replace(keyed, "auth: {none: true}", "auth: {none: true}\n    keep_headers: [X-Event-Token]", 1)
	if _, err := Parse([]byte(kept), env(nil)); err != nil {
		t.Errorf("key from a kept X-Event-Token: %v", err)
	}
}

// TestDemoTokensAreRefused: RefuseDemoTokens names every secret that is a
// token published with the demos.
func TestDemoTokensAreRefused(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(strings.Replace(minimal, token, "${ADMIN}", 1), "auth: {none: true}", "auth: {header: {name: X-Webhook-Token, value: ${SENDER}}}", 1)
	cfg, err := Parse([]byte(doc), env(map[string]string{"ADMIN": "compose-demo-admin-token-change-me-0123456789abcdef", "SENDER": "dev-genesys-token"}))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.RefuseDemoTokens()
	for _, want := range []string{
		"admin_token: is a demo token published with webhook-outbox, which anyone can use",
		"routes[0] (genesys).auth.header.value: is a demo token",
		"OUTBOX_ALLOW_DEMO_TOKENS=1",
	} {
		assert.ErrorContains(t, err, want)
	}
	cfg, err = Parse([]byte(minimal), env(nil))
	require.NoError(t, err, "own tokens")
	assert.NoError(t, cfg.RefuseDemoTokens(), "own tokens")
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	parse := func(doc string) []string {
		t.Helper()
		cfg, err := Parse([]byte(doc), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Warnings()
	}
	cleartext := "listen :8080 is reachable from other hosts over plain HTTP"
	w := parse(minimal)
	require.Len(t, w, 1, "default listen: %q", w)
	assert.True(t, strings.HasPrefix(w[0], cleartext), "default listen: %q", w)
	for _, extra := range []string{"listen: 127.0.0.1:8080\n", "listen: \"[::1]:8080\"\n", "listen: localhost:8080\n", "trusted_proxies: [10.0.0.1]\n"} {
		if w := parse(minimal + extra); len(w) != 0 {
			t.Errorf("%s: %q", extra, w)
		}
	}
	hmac := strings.Replace(minimal, "auth: {none: true}", "auth: {hmac: {header: X-Hub-Signature-256, secret: s}}", 1)
	hmac = strings.Replace(hmac, "[{json: /id}]", "[{json: /id}, {header: X-GitHub-Delivery}]", 1) + "listen: 127.0.0.1:8080\n"
	w = parse(hmac)
	want := "route genesys: idempotency_key[1] reads the X-Github-Delivery header, which the hmac signature does not cover"
	require.Len(t, w, 1, "hmac with a header key: %q", w)
	assert.True(t, strings.HasPrefix(w[0], want), "hmac with a header key: %q", w)
	sw := strings.Replace(minimal, "auth: {none: true}", "auth: {standard_webhooks: {secret: "+whsec+"}}", 1) + "listen: 127.0.0.1:8080\n"
	if w := parse(strings.Replace(sw, "[{json: /id}]", "[{header: webhook-id}]", 1)); len(w) != 0 {
		t.Errorf("standard webhooks keyed by webhook-id: %q", w)
	}
	w = parse(strings.Replace(sw, "[{json: /id}]", "[{header: X-Event-Id}]", 1))
	require.Len(t, w, 1, "standard webhooks keyed by another header: %q", w)
	assert.Contains(t, w[0], "X-Event-Id header, which the Standard Webhooks signature does not cover", "standard webhooks keyed by another header")
}

func TestRedactURLHidesTokens(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://hooks.example/services/T0AB12CD3/B0CD34EF5/aB3dE5fG7hJ9kL1mN3pQ5rS7": "https://hooks.example/services/T0AB12CD3/B0CD34EF5/xxxxx",
		"https://svc.internal/hook?token=s3cr3t&v=2":                                  "https://svc.internal/hook?token=xxxxx&v=xxxxx",
		"https://svc.internal/in/3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59/events":         "https://svc.internal/in/xxxxx/events",
		"http://svc.internal/genesys/conversation-events-v2":                          "http://svc.internal/genesys/conversation-events-v2",
		"https://u:p@svc.internal/x#access_token=abc":                                 "https://u:xxxxx@svc.internal/x#xxxxx",
		"https://svc.internal/a%2Fb?flag":                                             "https://svc.internal/a%2Fb?flag",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMetricsListen(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal+"metrics_listen: 127.0.0.1:9100\n"), env(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9100", cfg.MetricsListen, "cfg %v", cfg)
	for extra, want := range map[string]string{
		"metrics_listen: nope\n":                     `metrics_listen: "nope" is not a listen address`,
		"listen: :9100\nmetrics_listen: \":9100\"\n": "metrics_listen: is the same address as listen",
	} {
		_, err := Parse([]byte(minimal+extra), env(nil))
		assert.ErrorContains(t, err, want, extra)
	}
	if !slices.Contains(CredentialHeaderPatterns, "token") {
		t.Error("token is not a credential pattern")
	}
}
