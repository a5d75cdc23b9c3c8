package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const token = "0123456789abcdef0123456789abcdef"

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

const minimal = `
database_url: postgres://u@localhost/db
admin_token: ` + token + `
routes:
  - name: genesys
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:3000/events"}
`

func TestParseAppliesDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, ":8080"},
		{"dead_letter_retention", cfg.DeadLetterRetention.D(), 720 * time.Hour},
		{"event_retention", cfg.EventRetention.D(), 168 * time.Hour},
		{"intake_timeout", cfg.IntakeTimeout.D(), 2 * time.Second},
		{"intake_retry_after", cfg.IntakeRetryAfter.D(), 60 * time.Second},
		{"max_body_bytes", r.MaxBodyBytes, int64(1 << 20)},
		{"target.timeout", r.Target.Timeout.D(), 10 * time.Second},
		{"retry.max_attempts", r.Retry.MaxAttempts, 10},
		{"retry.initial_backoff", r.Retry.InitialBackoff.D(), 2 * time.Second},
		{"retry.max_backoff", r.Retry.MaxBackoff.D(), time.Hour},
		{"retry.give_up_after", r.Retry.GiveUpAfter.D(), 72 * time.Hour},
		{"concurrency", r.Concurrency, 8},
		{"adaptive_concurrency", r.Adaptive(), true},
		{"max_inflight_requests", cfg.MaxInflightRequests, 1024},
		{"rate_limit", r.RateLimit, 0.0},
		{"circuit_breaker.failures", r.CircuitBreaker.Failures, 5},
		{"circuit_breaker.cooldown", r.CircuitBreaker.Cooldown.D(), 30 * time.Second},
		{"circuit_breaker.max_cooldown", r.CircuitBreaker.MaxCooldown.D(), 5 * time.Minute},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseDesignExample(t *testing.T) {
	t.Parallel()
	// The example from DESIGN.md, verbatim in shape.
	doc := `
listen: ":8080"
database_url: ${DATABASE_URL}
admin_token: ${OUTBOX_ADMIN_TOKEN}
dead_letter_retention: 720h
event_retention: 168h
routes:
  - name: genesys
    auth:
      header: {name: X-Webhook-Token, value: ${GENESYS_TOKEN}}
      # basic: {username: genesys, password: ${PW}}
      # hmac: {header: X-Hub-Signature-256, secret: ${S}, algorithm: sha256, prefix: "sha256=", encoding: hex}
      # standard_webhooks: {secret: ${WHSEC}, tolerance: 5m}
    idempotency_key:
      - json: /id
      - header: webhook-id
    max_body_bytes: 1048576
    target:
      url: http://127.0.0.1:3000/genesys/events
      timeout: 10s
      headers: {Authorization: "Bearer ${INTERNAL_TOKEN}"}
    retry:
      max_attempts: 10
      initial_backoff: 2s
      max_backoff: 1h
      give_up_after: 72h
    concurrency: 8
`
	cfg, err := Parse([]byte(doc), env(map[string]string{
		"DATABASE_URL": "postgres://x@db/outbox", "OUTBOX_ADMIN_TOKEN": token,
		"GENESYS_TOKEN": "s3cr3t: #not-a-comment", "INTERNAL_TOKEN": "abc",
	}))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Auth.Header.Value != "s3cr3t: #not-a-comment" {
		t.Errorf("header value = %q: expansion must not reinterpret YAML", r.Auth.Header.Value)
	}
	if r.Target.Headers["Authorization"] != "Bearer abc" {
		t.Errorf("target header = %q", r.Target.Headers["Authorization"])
	}
	require.Len(t, r.IdempotencyKey, 2, "idempotency_key = %+v", r.IdempotencyKey)
	assert.Equal(t, "webhook-id", r.IdempotencyKey[1].Header, "idempotency_key = %+v", r.IdempotencyKey)
	if cfg.DatabaseURL != "postgres://x@db/outbox" {
		t.Errorf("database_url = %q", cfg.DatabaseURL)
	}
}

func TestExpandedNumbersAndNulls(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, "auth: {none: true}", "auth: {header: {name: X-Token, value: ${TOKEN}}}\n    concurrency: ${CONC}", 1)
	cfg, err := Parse([]byte(doc), env(map[string]string{"TOKEN": "null", "CONC": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Routes[0].Concurrency != 3 {
		t.Errorf("concurrency = %d, want 3", cfg.Routes[0].Concurrency)
	}
	if cfg.Routes[0].Auth.Header.Value != "null" {
		t.Errorf("value = %q, want the text null", cfg.Routes[0].Auth.Header.Value)
	}
}

func TestOverrides(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal), env(map[string]string{"DATABASE_URL": "postgres://other/db", "OUTBOX_LISTEN": "127.0.0.1:9999"}))
	if err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, "postgres://other/db", cfg.DatabaseURL, "override not applied")
	assert.Equal(t, "127.0.0.1:9999", cfg.Listen, "override not applied")
}

func TestRetentionForever(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(minimal+"dead_letter_retention: forever\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	assert.True(t, cfg.DeadLetterRetention.Forever(), "dead_letter_retention: forever reads as %v", cfg.DeadLetterRetention)
	assert.Equal(t, "forever", cfg.DeadLetterRetention.String(), "dead_letter_retention: forever")
}

func TestDollarEscape(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, "auth: {none: true}", `auth: {header: {name: X-Token, value: "pa$$word$x"}}`, 1)
	cfg, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Routes[0].Auth.Header.Value; got != "pa$word$x" {
		t.Errorf("value = %q, want pa$word$x", got)
	}
}

// TestErrorsNameTheField feeds one mistake at a time and checks that the
// message names the field (or line) and the problem.
func TestErrorsNameTheField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		edit func(string) string
		vars map[string]string
		want []string
	}{
		{"unknown top-level key", func(s string) string { return s + "lisen: :80\n" }, nil,
			[]string{`unknown key "lisen"`, "line 9", "known keys: listen"}},
		{"unknown nested key", func(s string) string {
			return strings.Replace(s, `target: {url:`, `target: {timout: 5s, url:`, 1)
		}, nil, []string{`unknown key "timout" in routes[0].target`}},
		{"missing env var", func(s string) string {
			return strings.Replace(s, "postgres://u@localhost/db", "${NOPE_DB}", 1)
		}, nil, []string{"environment variable NOPE_DB is not set", "line 2"}},
		{"bad route name", func(s string) string { return strings.Replace(s, "name: genesys", "name: Genesys_1", 1) }, nil,
			[]string{`routes[0] (Genesys_1).name: "Genesys_1" is not allowed`}},
		{"no auth", func(s string) string { return strings.Replace(s, "auth: {none: true}", "auth: {}", 1) }, nil,
			[]string{"routes[0] (genesys).auth: is required: choose exactly one of none: true, basic, header, hmac, standard_webhooks"}},
		{"two auth modes", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true, header: {name: X-T, value: v}}", 1)
		}, nil, []string{"sets 2 modes"}},
		{"header value and values", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {header: {name: X-T, value: v, values: [a]}}", 1)
		}, nil, []string{"auth.header: set value or values, not both"}},
		{"bad duration", func(s string) string { return s + "event_retention: 7d\n" }, nil,
			[]string{`"7d" is not a duration`, "168h"}},
		{"duration without unit", func(s string) string {
			return strings.Replace(s, `target: {url:`, `target: {timeout: 10, url:`, 1)
		}, nil, []string{`"10" is not a duration`, "add a unit"}},
		{"bad json pointer", func(s string) string { return strings.Replace(s, "json: /id", "json: id", 1) }, nil,
			[]string{`idempotency_key[0].json: "id" is not a JSON pointer`}},
		{"empty key source", func(s string) string { return strings.Replace(s, "{json: /id}", "{}", 1) }, nil,
			[]string{"idempotency_key[0]: set exactly one of json, header, composite, body_sha256"}},
		{"relative target", func(s string) string { return strings.Replace(s, "http://127.0.0.1:3000/events", "/events", 1) }, nil,
			[]string{`target.url: "/events" is not an absolute http:// or https:// URL`}},
		{"reserved target header", func(s string) string {
			return strings.Replace(s, `target: {url:`, `target: {headers: {X-Outbox-Key: x}, url:`, 1)
		}, nil, []string{"X-Outbox-Key is set by webhook-outbox"}},
		{"short admin token", func(s string) string { return strings.Replace(s, token, "short", 1) }, nil,
			[]string{"admin_token: is 5 bytes long; it must be at least 32"}},
		{"max_backoff below initial", func(s string) string {
			return s[:strings.Index(s, "    target:")] + "    retry: {initial_backoff: 10s, max_backoff: 1s}\n" + s[strings.Index(s, "    target:"):]
		}, nil, []string{"retry.max_backoff: 1s is shorter than initial_backoff 10s"}},
		{"duplicate route", func(s string) string {
			return s + "  - name: genesys\n    auth: {none: true}\n    idempotency_key: [{json: /id}]\n    target: {url: http://x}\n"
		}, nil, []string{`routes[1] (genesys).name: "genesys" is already used by routes[0]`}},
		{"wrong type", func(s string) string { return s + "routes_extra: 1\n" }, nil, []string{`unknown key "routes_extra"`}},
		{"not yaml", func(string) string { return "routes: [\n" }, nil, []string{"invalid YAML"}},
		{"no routes", func(string) string { return "database_url: postgres://x/y\nadmin_token: " + token + "\n" }, nil,
			[]string{"routes: at least one route is required"}},
		{"unknown circuit_breaker key", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true}\n    circuit_breaker: {failure: 3}", 1)
		}, nil, []string{`unknown key "failure" in routes[0].circuit_breaker (known keys: failures, cooldown, max_cooldown)`}},
		{"bad circuit_breaker values", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true}\n    circuit_breaker: {failures: 0, cooldown: 100ms, max_cooldown: 50ms}", 1)
		}, nil, []string{
			"routes[0] (genesys).circuit_breaker.cooldown: 100ms is too short: use at least 1s",
			"routes[0] (genesys).circuit_breaker.max_cooldown: 50ms is shorter than cooldown 100ms",
		}},
		{"negative failures", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true}\n    circuit_breaker: {failures: -1}", 1)
		}, nil, []string{"routes[0] (genesys).circuit_breaker.failures: must be at least 1"}},
		{"negative rate_limit", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true}\n    rate_limit: -2", 1)
		}, nil, []string{"routes[0] (genesys).rate_limit: must be a positive number of requests per second"}},
		{"rate_limit not a number", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true}\n    rate_limit: fast", 1)
		}, nil, []string{"line 7: cannot use the text `fast` as a number"}},
		// Expiring a dead letter removes its event, and with it the key's
		// deduplication: the dedupe window would be shorter than
		// event_retention.
		{"dead letters kept shorter than events", func(s string) string { return s + "dead_letter_retention: 24h\nevent_retention: 48h\n" }, nil,
			[]string{"dead_letter_retention: 24h is shorter than event_retention (48h)", "forever"}},
		{"adaptive_concurrency not a boolean", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {none: true}\n    adaptive_concurrency: sometimes", 1)
		}, nil, []string{"line 7: cannot use the text `sometimes` as true or false"}},
		{"bad max_inflight_requests", func(s string) string { return s + "max_inflight_requests: -5\n" }, nil,
			[]string{"max_inflight_requests: must be at least 1"}},
		{"bad standard webhooks secret", func(s string) string {
			return strings.Replace(s, "auth: {none: true}", "auth: {standard_webhooks: {secret: 'whsec_!!!'}}", 1)
		}, nil, []string{"is not a Standard Webhooks secret"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(c.edit(minimal)), env(c.vars))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestFaultToleranceKeys reads the breaker, rate limit and in-flight cap as
// written, and keeps max_cooldown at least cooldown when only cooldown is set.
func TestFaultToleranceKeys(t *testing.T) {
	t.Parallel()
	doc := strings.Replace(minimal, "auth: {none: true}", "auth: {none: true}\n    rate_limit: 2.5\n    circuit_breaker: {failures: 3, cooldown: 10m}", 1) +
		"max_inflight_requests: 64\n"
	cfg, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	assert.Equal(t, 64, cfg.MaxInflightRequests, "max_inflight_requests")
	assert.Equal(t, 2.5, r.RateLimit, "rate_limit")
	assert.Equal(t, 3, r.CircuitBreaker.Failures, "circuit_breaker.failures")
	assert.Equal(t, 10*time.Minute, r.CircuitBreaker.Cooldown.D(), "circuit_breaker.cooldown")
	assert.Equal(t, 10*time.Minute, r.CircuitBreaker.MaxCooldown.D(), "circuit_breaker.max_cooldown")
}

// TestAdaptiveConcurrencySwitch reads adaptive_concurrency: on unless set
// to false, and `concurrency` stays the number written either way.
func TestAdaptiveConcurrencySwitch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		line string
		want bool
	}{{"", true}, {"adaptive_concurrency: true", true}, {"adaptive_concurrency: false", false}, {"adaptive_concurrency: null", true}} {
		doc := strings.Replace(minimal, "auth: {none: true}", "auth: {none: true}\n    concurrency: 4\n    "+c.line, 1)
		cfg, err := Parse([]byte(doc), env(nil))
		if err != nil {
			t.Fatalf("%q: %v", c.line, err)
		}
		r := cfg.Routes[0]
		assert.Equal(t, c.want, r.Adaptive(), "%q: adaptive", c.line)
		assert.EqualValues(t, 4, r.Concurrency, "%q: concurrency", c.line)
	}
}

func TestAllProblemsReportedAtOnce(t *testing.T) {
	t.Parallel()
	doc := `
database_url: ""
routes:
  - name: "Bad Name"
    auth: {}
    target: {}
`
	_, err := Parse([]byte(doc), env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"database_url: is required", "admin_token: is required", ".name:", ".auth: is required", "idempotency_key: at least one source", "target.url: is required"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
}

func TestPath(t *testing.T) {
	t.Setenv("OUTBOX_CONFIG", "")
	if got := Path(""); got != "outbox.yaml" {
		t.Errorf("default = %q", got)
	}
	t.Setenv("OUTBOX_CONFIG", "/etc/outbox.yaml")
	if got := Path(""); got != "/etc/outbox.yaml" {
		t.Errorf("env = %q", got)
	}
	if got := Path("x.yaml"); got != "x.yaml" {
		t.Errorf("flag = %q", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	assert.ErrorContains(t, err, "does not exist: pass --config PATH or set OUTBOX_CONFIG")
}

func TestExampleConfigIsValid(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../outbox.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data, env(map[string]string{
		"DATABASE_URL": "postgres://x@localhost/outbox", "OUTBOX_ADMIN_TOKEN": token, "GENESYS_TOKEN": "t",
	}))
	if err != nil {
		t.Fatalf("outbox.example.yaml: %v", err)
	}
}
