package handler_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// storedConfig has an HMAC route that keeps one credential-looking header.
const storedConfig = `
database_url: postgres://unused/db
admin_token: ` + adminToken + `
routes:
  - name: gitlab
    auth: {hmac: {header: X-Signature, secret: hmac-secret}}
    idempotency_key: [{json: /id}]
    keep_headers: [X-Gitlab-Event-Token-Kind]
    target: {url: "http://127.0.0.1:1/unused"}
`

// TestStoredHeadersByPattern: headers whose names look like credentials
// (X-Gitlab-Token, X-Api-Key...) sent to an HMAC route are not stored, nor
// shown; keep_headers keeps one the operator vouches for.
func TestStoredHeadersByPattern(t *testing.T) {
	t.Parallel()
	b := setupWithPool(t, poolFor(t), storedConfig)
	body := []byte(`{"id":"pattern"}`)
	mac := hmac.New(sha256.New, []byte("hmac-secret"))
	mac.Write(body)
	secrets := map[string]string{
		"X-Gitlab-Token":    "glpat-secret-1",
		"X-Api-Key":         "secret-2",
		"X-Auth-Secret":     "secret-3",
		"X-Client-Password": "secret-4",
		"X-Slack-Signature": "v0=secret-5",
		"X-Session-Cookie":  "secret-6",
	}
	headers := map[string]string{
		"X-Signature": hex.EncodeToString(mac.Sum(nil)), "X-Gitlab-Event": "Push Hook",
		"X-Gitlab-Event-Token-Kind": "project", "X-Webhook-Token": "",
	}
	for k, v := range secrets {
		headers[k] = v
	}
	a := b.post(t, "gitlab", body, headers)
	if a.status != 200 {
		t.Fatalf("got %d %s", a.status, a.raw)
	}
	var raw string
	if err := b.pool.QueryRow(context.Background(), `SELECT headers::text FROM events WHERE key = 'pattern'`).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	for name, secret := range secrets {
		if strings.Contains(raw, secret) || strings.Contains(strings.ToLower(raw), strings.ToLower(name)) {
			t.Errorf("%s was stored: %s", name, raw)
		}
	}
	if strings.Contains(raw, headers["X-Signature"]) {
		t.Errorf("the route's signature was stored: %s", raw)
	}
	var stored http.Header
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Get("X-Gitlab-Event") != "Push Hook" || stored.Get("X-Gitlab-Event-Token-Kind") != "project" {
		t.Errorf("ordinary or kept headers were not stored: %s", raw)
	}
}

// TestForwardedContentTypeIsNormalised: whatever JSON media type and
// parameters a sender uses, the event is stored, and so delivered, as
// application/json with the sender's charset; the sender's own header stays
// among the stored headers.
func TestForwardedContentTypeIsNormalised(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for id, c := range map[string]struct{ sent, want string }{
		"ct-plain":   {"application/json", "application/json"},
		"ct-charset": {"application/json; charset=UTF-8", "application/json; charset=utf-8"},
		"ct-params":  {`application/cloudevents+json; charset="utf-8"; boundary=x; q=1`, "application/json; charset=utf-8"},
		"ct-suffix":  {"application/x-www-form-urlencoded+json", "application/json"},
	} {
		a := b.post(t, "genesys", []byte(`{"id":"`+id+`"}`), map[string]string{"Content-Type": c.sent})
		if a.status != 200 {
			t.Fatalf("%s: got %d %s", c.sent, a.status, a.raw)
		}
		var got, headers string
		if err := b.pool.QueryRow(context.Background(), `SELECT content_type, headers->'Content-Type'->>0 FROM events WHERE key = $1`, id).Scan(&got, &headers); err != nil {
			t.Fatal(err)
		}
		if got != c.want || headers != c.sent {
			t.Errorf("sent %q: content_type %q (want %q), stored header %q", c.sent, got, c.want, headers)
		}
	}
}
