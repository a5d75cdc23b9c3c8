package handler_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

const orderedConfig = `
database_url: postgres://unused/db
admin_token: ` + adminToken + `
intake_timeout: 10s
routes:
  - name: conv
    auth: {none: true}
    idempotency_key: [{json: /id}]
    ordering:
      key: [{json: /conversationId}, {header: X-Conversation}]
    target: {url: "http://127.0.0.1:1/unused"}
  - name: plain
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/unused"}
`

// TestIntakeOrderingValue posts events with an ordering value from the
// body, from a header, of odd shapes, and with none: the answer is the same
// for all, and the event and its job carry the value, or none.
func TestIntakeOrderingValue(t *testing.T) {
	t.Parallel()
	b := setupWithPool(t, poolFor(t), orderedConfig)
	long := strings.Repeat("x", 600)
	cases := []struct {
		name, route, body string
		headers           map[string]string
		want              string // the stored ordering value; "" for none
	}{
		{"from the body", "conv", `{"id":"a","conversationId":"c-1"}`, nil, "c-1"},
		{"a number", "conv", `{"id":"b","conversationId":42}`, nil, "42"},
		{"from the header when the body has none", "conv", `{"id":"c"}`, map[string]string{"X-Conversation": "c-2"}, "c-2"},
		{"missing", "conv", `{"id":"d"}`, nil, ""},
		{"null", "conv", `{"id":"e","conversationId":null}`, nil, ""},
		{"an object", "conv", `{"id":"f","conversationId":{"x":1}}`, nil, ""},
		{"empty", "conv", `{"id":"g","conversationId":""}`, nil, ""},
		{"too long for a key: hashed", "conv", `{"id":"h","conversationId":"` + long + `"}`, nil, "sha256:"},
		{"a control character: hashed", "conv", `{"id":"i","conversationId":"a\u0001b"}`, nil, "sha256:"},
		{"a route without ordering", "plain", `{"id":"j","conversationId":"c-1"}`, nil, ""},
	}
	for _, c := range cases {
		a := b.post(t, c.route, []byte(c.body), c.headers)
		if a.status != http.StatusOK || a.decoded["status"] != "accepted" || len(a.decoded) != 2 {
			t.Errorf("%s: %d %s, want 200 accepted like any event", c.name, a.status, a.raw)
			continue
		}
		key := a.decoded["key"]
		var stored, inArgs *string
		var hasArg bool
		err := b.pool.QueryRow(context.Background(), `
			SELECT e.ordering_key, j.args->>'ordering_key', j.args ? 'ordering_key'
			FROM events e JOIN river_job j ON (j.args->>'event_id')::bigint = e.id
			WHERE e.route = $1 AND e.key = $2`, c.route, key).Scan(&stored, &inArgs, &hasArg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		switch {
		case c.want == "" && (stored != nil || hasArg):
			t.Errorf("%s: stored ordering value %v, job args %v; want none", c.name, deref(stored), deref(inArgs))
		case c.want != "" && (stored == nil || inArgs == nil || *stored != *inArgs || !strings.HasPrefix(*stored, c.want)):
			t.Errorf("%s: stored ordering value %q, job args %q; want %q", c.name, deref(stored), deref(inArgs), c.want)
		}
	}
	// Two events whose value was hashed still share a key.
	b.post(t, "conv", []byte(`{"id":"h2","conversationId":"`+long+`"}`), nil)
	var n int
	if err := b.pool.QueryRow(context.Background(), `SELECT count(DISTINCT ordering_key) FROM events WHERE key IN ('h', 'h2')`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the two long values became %d ordering keys (%v), want 1", n, err)
	}
	// And the second waits behind the first.
	var states string
	if err := b.pool.QueryRow(context.Background(), `
		SELECT string_agg(state::text, ' ' ORDER BY id) FROM river_job WHERE args->>'key' IN ('h', 'h2')`).Scan(&states); err != nil || states != "available pending" {
		t.Errorf("jobs of one conversation are %q (%v), want \"available pending\"", states, err)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q", *s)
}
