package handler_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/handler"
)

// The signatures below are computed from each scheme's documented formula,
// not by the code under test.

func sign(newHash func() hash.Hash, secret, msg []byte) []byte {
	m := hmac.New(newHash, secret)
	m.Write(msg)
	return m.Sum(nil)
}

var authConfig = `
database_url: postgres://unused/db
admin_token: ` + adminToken + `
routes:
  - name: basic
    auth: {basic: {username: genesys, passwords: [old-pw, new-pw]}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: github
    auth: {hmac: {header: X-Hub-Signature-256, secrets: [old-secret, new-secret], algorithm: sha256, prefix: "sha256=", encoding: hex}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: openmessaging
    auth: {hmac: {header: X-Hub-Signature-256, secret: om-secret, prefix: "sha256=", encoding: base64}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: shopify
    auth: {hmac: {header: X-Shopify-Hmac-Sha256, secret: shop-secret, encoding: base64}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: legacy
    auth: {hmac: {header: X-Hub-Signature, secret: sha1-secret, algorithm: sha1, prefix: "sha1="}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: sw
    auth: {standard_webhooks: {secrets: ["whsec_` + swOldB64 + `", "whsec_` + swNewB64 + `"], tolerance: 5m}}
    idempotency_key: [{header: webhook-id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: token
    auth: {header: {name: X-Api-Token, values: [old-token, new-token]}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
`

var (
	swOld    = []byte("standard-webhooks-old-key-bytes!")
	swNew    = []byte("standard-webhooks-new-key-bytes!")
	swOldB64 = base64.StdEncoding.EncodeToString(swOld)
	swNewB64 = base64.StdEncoding.EncodeToString(swNew)
)

func TestAuthModes(t *testing.T) {
	t.Parallel()
	pool := poolFor(t)
	b := setupWithPool(t, pool, authConfig)
	body := []byte(`{"id":"evt-1"}`)
	tampered := []byte(`{"id":"evt-2"}`)
	basic := func(user, pw string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
	}
	hexSig := func(secret string, msg []byte) string {
		return "sha256=" + hex.EncodeToString(sign(sha256.New, []byte(secret), msg))
	}
	now := time.Now().Unix()
	swSig := func(key []byte, id string, ts int64, msg []byte) string {
		signed := fmt.Appendf(nil, "%s.%d.%s", id, ts, msg)
		return "v1," + base64.StdEncoding.EncodeToString(sign(sha256.New, key, signed))
	}
	swHeaders := func(id string, ts int64, sig string) map[string]string {
		return map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(ts, 10), "webhook-signature": sig}
	}

	cases := []struct {
		name    string
		route   string
		body    []byte
		headers map[string]string
		status  int
		want    string
	}{
		{"basic right", "basic", body, map[string]string{"Authorization": basic("genesys", "old-pw")}, 200, ""},
		{"basic rotated", "basic", []byte(`{"id":"b2"}`), map[string]string{"Authorization": basic("genesys", "new-pw")}, 200, ""},
		{"basic wrong password", "basic", body, map[string]string{"Authorization": basic("genesys", "nope")}, 401, "wrong username or password"},
		{"basic wrong user", "basic", body, map[string]string{"Authorization": basic("admin", "old-pw")}, 401, "wrong username or password"},
		{"basic missing", "basic", body, nil, 401, "send HTTP Basic credentials"},

		{"hmac hex right", "github", body, map[string]string{"X-Hub-Signature-256": hexSig("old-secret", body)}, 200, ""},
		{"hmac hex rotated", "github", tampered, map[string]string{"X-Hub-Signature-256": hexSig("new-secret", tampered)}, 200, ""},
		{"hmac wrong secret", "github", body, map[string]string{"X-Hub-Signature-256": hexSig("guess", body)}, 401, "does not match the body"},
		{"hmac tampered body", "github", tampered, map[string]string{"X-Hub-Signature-256": hexSig("old-secret", body)}, 401, "does not match the body"},
		{"hmac missing", "github", body, nil, 401, "X-Hub-Signature-256 signature header is missing"},
		{"hmac no prefix", "github", body, map[string]string{"X-Hub-Signature-256": strings.TrimPrefix(hexSig("old-secret", body), "sha256=")}, 401, `must start with "sha256="`},
		{"hmac not hex", "github", body, map[string]string{"X-Hub-Signature-256": "sha256=zz"}, 401, "not a hex signature"},
		{"open messaging base64", "openmessaging", body, map[string]string{"X-Hub-Signature-256": "sha256=" + base64.StdEncoding.EncodeToString(sign(sha256.New, []byte("om-secret"), body))}, 200, ""},
		{"shopify base64", "shopify", body, map[string]string{"X-Shopify-Hmac-Sha256": base64.StdEncoding.EncodeToString(sign(sha256.New, []byte("shop-secret"), body))}, 200, ""},
		{"sha1", "legacy", body, map[string]string{"X-Hub-Signature": "sha1=" + hex.EncodeToString(sign(sha1.New, []byte("sha1-secret"), body))}, 200, ""},

		{"standard webhooks right", "sw", body, swHeaders("msg_1", now, swSig(swOld, "msg_1", now, body)), 200, ""},
		{"standard webhooks rotated, several signatures", "sw", body, swHeaders("msg_2", now, "v1,bm9wZQ== "+swSig(swNew, "msg_2", now, body)), 200, ""},
		{"standard webhooks wrong key", "sw", body, swHeaders("msg_3", now, swSig([]byte("wrong"), "msg_3", now, body)), 401, "no v1 signature"},
		{"standard webhooks tampered", "sw", tampered, swHeaders("msg_4", now, swSig(swOld, "msg_4", now, body)), 401, "no v1 signature"},
		{"standard webhooks stale", "sw", body, swHeaders("msg_5", now-600, swSig(swOld, "msg_5", now-600, body)), 401, "more than the 5m0s tolerance"},
		{"standard webhooks future", "sw", body, swHeaders("msg_6", now+600, swSig(swOld, "msg_6", now+600, body)), 401, "more than the 5m0s tolerance"},
		{"standard webhooks missing", "sw", body, map[string]string{"webhook-id": "msg_7"}, 401, "are all required"},
		{"standard webhooks missing signature", "sw", body, map[string]string{"webhook-id": "msg_7", "webhook-timestamp": strconv.FormatInt(now, 10)}, 401, "are all required"},
		{"standard webhooks timestamp not a number", "sw", body, map[string]string{"webhook-id": "msg_8", "webhook-timestamp": "soon", "webhook-signature": swSig(swOld, "msg_8", now, body)}, 401, "not a Unix time in seconds"},
		{"standard webhooks only an unknown version", "sw", body, swHeaders("msg_9", now, "v1a,"+strings.TrimPrefix(swSig(swOld, "msg_9", now, body), "v1,")), 401, "no v1 signature"},
		{"standard webhooks id swapped", "sw", body, swHeaders("msg_10", now, swSig(swOld, "msg_other", now, body)), 401, "no v1 signature"},
		{"standard webhooks timestamp tampered", "sw", body, swHeaders("msg_11", now+1, swSig(swOld, "msg_11", now, body)), 401, "no v1 signature"},
		{"standard webhooks signature not base64", "sw", body, swHeaders("msg_12", now, "v1,!!!"), 401, "no v1 signature"},
		{"standard webhooks near the tolerance", "sw", body, swHeaders("msg_13", now-290, swSig(swNew, "msg_13", now-290, body)), 200, ""},
		{"standard webhooks far past", "sw", body, swHeaders("msg_14", -1<<62, swSig(swOld, "msg_14", -1<<62, body)), 401, "tolerance"},

		{"hmac base64 wrong secret", "shopify", body, map[string]string{"X-Shopify-Hmac-Sha256": base64.StdEncoding.EncodeToString(sign(sha256.New, []byte("guess"), body))}, 401, "does not match the body"},
		{"hmac base64 tampered", "shopify", tampered, map[string]string{"X-Shopify-Hmac-Sha256": base64.StdEncoding.EncodeToString(sign(sha256.New, []byte("shop-secret"), body))}, 401, "does not match the body"},
		{"hmac not base64", "shopify", body, map[string]string{"X-Shopify-Hmac-Sha256": "%%%"}, 401, "not a base64 signature"},
		{"hmac sha1 wrong secret", "legacy", body, map[string]string{"X-Hub-Signature": "sha1=" + hex.EncodeToString(sign(sha1.New, []byte("guess"), body))}, 401, "does not match the body"},
		{"hmac sha256 where sha1 is expected", "legacy", body, map[string]string{"X-Hub-Signature": "sha1=" + hex.EncodeToString(sign(sha256.New, []byte("sha1-secret"), body))}, 401, "does not match the body"},

		{"header right", "token", body, map[string]string{"X-Api-Token": "old-token"}, 200, ""},
		{"header rotated", "token", tampered, map[string]string{"X-Api-Token": "new-token"}, 200, ""},
		{"header wrong", "token", body, map[string]string{"X-Api-Token": "old-token-"}, 401, "the X-Api-Token header does not hold a valid token"},
		{"header prefix of the token", "token", body, map[string]string{"X-Api-Token": "old"}, 401, "does not hold a valid token"},
		{"header missing", "token", body, nil, 401, "the X-Api-Token header is missing"},
	}
	for _, c := range cases {
		h := map[string]string{"X-Webhook-Token": ""}
		for k, v := range c.headers {
			h[k] = v
		}
		a := b.post(t, c.route, c.body, h)
		assert.Equal(t, c.status, a.status, "%s: %s", c.name, a.raw)
		assert.Contains(t, a.decoded["error"], c.want, "%s: %s", c.name, a.raw) // any error when want is ""
		if c.status == 401 && c.route == "basic" {
			assert.NotEmpty(t, a.header.Get("WWW-Authenticate"), "%s: 401 without WWW-Authenticate", c.name)
		}
	}
}

// TestStandardWebhooksIDIsTheKey: with idempotency_key [{header:
// webhook-id}], the sender's message id is the key, and a redelivery (same
// id, new timestamp and signature) is a duplicate.
func TestStandardWebhooksIDIsTheKey(t *testing.T) {
	t.Parallel()
	b := setupWithPool(t, poolFor(t), authConfig)
	body := []byte(`{"type":"conversation.start"}`)
	send := func(ts int64) answer {
		signed := fmt.Appendf(nil, "msg_2Lh9KkkQzPq.%d.%s", ts, body)
		return b.post(t, "sw", body, map[string]string{
			"webhook-id":        "msg_2Lh9KkkQzPq",
			"webhook-timestamp": strconv.FormatInt(ts, 10),
			"webhook-signature": "v1," + base64.StdEncoding.EncodeToString(sign(sha256.New, swNew, signed)),
		})
	}
	now := time.Now().Unix()
	first := send(now - 30)
	require.Equal(t, 200, first.status, "first: %s", first.raw)
	require.Equal(t, "accepted", first.decoded["status"], "first: %s", first.raw)
	require.Equal(t, "msg_2Lh9KkkQzPq", first.decoded["key"], "first: %s", first.raw)
	again := send(now)
	require.Equal(t, 200, again.status, "redelivery: %s", again.raw)
	require.Equal(t, "duplicate", again.decoded["status"], "redelivery: %s", again.raw)
	require.Equal(t, "msg_2Lh9KkkQzPq", again.decoded["key"], "redelivery: %s", again.raw)
	if n := b.count(t, `SELECT count(*) FROM events WHERE route = 'sw'`); n != 1 {
		t.Errorf("%d rows", n)
	}
}

// TestNoneAuthWarnsAtStartup: a route with none: true is logged as
// unauthenticated when intake is built; others are not.
func TestNoneAuthWarnsAtStartup(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse([]byte(baseConfig), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if _, err := handler.NewIntake(cfg, nil, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	want := `level=WARN msg="route accepts webhooks without authentication (auth: none: true)" route=open`
	assert.Contains(t, logs.String(), want, "startup logs")
	assert.Equal(t, 1, strings.Count(logs.String(), "\n"), "startup logs, want one line:\n%s", logs.String())
}
