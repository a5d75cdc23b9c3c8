package handler

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"hash"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// The fuzz targets here need no database: they drive the parsing and
// checking code directly, and FuzzIntake stores into nopAcceptor.

// FuzzExtractKey runs the idempotency key sources over arbitrary bodies,
// headers and pointers. A key that comes back is one the database and the
// X-Outbox-Key header can hold; otherwise the answer is a 422 that says why.
func FuzzExtractKey(f *testing.F) {
	f.Add([]byte(`{"id":"abc"}`), "", "/id")
	f.Add([]byte(`{"id":12345678901234567890.50}`), "", "/id")
	f.Add([]byte(`{"id":null}`), "msg_1", "/id")
	f.Add([]byte(`{"a":[{"b":"x"}],"c/d":{"~":7}}`), "", "/c~1d/~0")
	f.Add([]byte(`{"a":[{"b":"x"}]}`), "", "/a/0/b")
	f.Add([]byte(`{"a":[1,2]}`), "", "/a/01")
	f.Add([]byte(`{"id":"a\nb"}`), "", "/id")
	f.Add([]byte(`{"id":"`+strings.Repeat("k", 513)+`"}`), "", "/id")
	f.Add([]byte("not json"), "h\x00", "/")
	f.Fuzz(func(t *testing.T, body []byte, headerValue, ptr string) {
		if config.ValidatePointer(ptr) != nil {
			ptr = "/id"
		}
		sources := newKeySources([]config.KeySource{
			{JSON: ptr},
			{Header: "webhook-id"},
			{Composite: []string{"/type", ptr}},
			{JSON: "/id"},
		})
		h := http.Header{"Webhook-Id": {headerValue}}
		key, e := extractKey(sources, h, body)
		if e != nil {
			require.Empty(t, key, "key with error %d %q", e.Status, e.Message)
			require.Equal(t, http.StatusUnprocessableEntity, e.Status, "error %q", e.Message)
			require.NotEmpty(t, e.Message, "error %d without a message", e.Status)
			return
		}
		require.NotEmpty(t, key, "extracted key")
		require.LessOrEqual(t, len(key), config.MaxKeyBytes, "extracted key %q", key)
		require.True(t, utf8.ValidString(key), "extracted key %q", key)
		require.False(t, strings.ContainsFunc(key, isControl), "extracted key %q", key)
		// With the header alone, the key is the header.
		if onlyHeader, e := extractKey(newKeySources([]config.KeySource{{Header: "webhook-id"}}), h, body); e == nil {
			require.Equal(t, headerValue, onlyHeader, "header key")
		}
	})
}

func mac(newHash func() hash.Hash, key, msg []byte) []byte {
	m := hmac.New(newHash, key)
	m.Write(msg)
	return m.Sum(nil)
}

// FuzzHMACVerifier checks the hmac mode against arbitrary bodies and
// signature headers, for each algorithm and encoding: the signature
// computed from the formula with any of the secrets is always accepted, and
// anything accepted decodes to exactly that signature.
func FuzzHMACVerifier(f *testing.F) {
	f.Add([]byte(`{"id":1}`), "sha256=abcd", "sha256=", false, false)
	f.Add([]byte(`{"id":1}`), "", "", true, false)
	f.Add([]byte(""), "sha1=ZZ", "sha1=", false, true)
	f.Add([]byte("x"), "c2lnbmF0dXJl", "", true, true)
	secrets := [][]byte{[]byte("old-secret"), []byte("new-secret")}
	f.Fuzz(func(t *testing.T, body []byte, header, prefix string, useBase64, useSHA1 bool) {
		newHash := sha256.New
		if useSHA1 {
			newHash = sha1.New
		}
		a := &hmacAuth{header: "X-Signature", secrets: secrets, newHash: newHash, prefix: prefix, base64: useBase64}
		encode := hex.EncodeToString
		decode := hex.DecodeString
		if useBase64 {
			encode, decode = base64.StdEncoding.EncodeToString, base64.StdEncoding.DecodeString
		}
		for _, secret := range secrets {
			right := prefix + encode(mac(newHash, secret, body))
			if why := a.check(http.Header{"X-Signature": {right}}, body, time.Now()); why != "" {
				t.Fatalf("the right signature %q was refused: %s", right, why)
			}
		}
		why := a.check(http.Header{"X-Signature": {header}}, body, time.Now())
		if why == "" {
			sig, err := decode(strings.TrimPrefix(header, prefix))
			require.NoError(t, err, "accepted a forged signature %q", header)
			require.True(t, strings.HasPrefix(header, prefix), "accepted a forged signature %q", header)
			require.True(t, hmac.Equal(sig, mac(newHash, secrets[0], body)) || hmac.Equal(sig, mac(newHash, secrets[1], body)),
				"accepted a forged signature %q", header)
		} else {
			require.NotContains(t, why, string(secrets[0]), "the refusal shows a secret")
			require.NotContains(t, why, string(secrets[1]), "the refusal shows a secret")
		}
	})
}

// FuzzStandardWebhooksVerifier checks the standard_webhooks mode against
// arbitrary ids, timestamps, bodies and signature lists: a right signature
// among any junk is accepted, and anything accepted carries a v1 signature
// of id.timestamp.body with one of the keys, inside the tolerance.
func FuzzStandardWebhooksVerifier(f *testing.F) {
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("msg_1", "1614265330", []byte(`{}`), "v1,bm9wZQ== v2,abc v1a,xyz")
	f.Add("", "", []byte(""), "")
	f.Add("id", "-9223372036854775808", []byte("{}"), "v1,")
	f.Add("id", "+1614265330", []byte("{}"), "v1,!!!!")
	specKey, _ := whsig.DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	keys := [][]byte{specKey, []byte("second-key")}
	a := &standardWebhooksAuth{keys: keys, tolerance: 5 * time.Minute}
	now := time.Unix(1614265330, 0)
	// The specification's own example is accepted.
	if why := a.check(http.Header{"Webhook-Id": {"msg_p5jXN8AQM9LWM0D4loKWxJek"}, "Webhook-Timestamp": {"1614265330"}, "Webhook-Signature": {"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}}, []byte(`{"test": 2432232314}`), now); why != "" {
		f.Fatalf("the specification's example was refused: %s", why)
	}
	f.Fuzz(func(t *testing.T, id, ts string, body []byte, sigs string) {
		sign := func(key []byte, ts string) string {
			return "v1," + base64.StdEncoding.EncodeToString(mac(sha256.New, key, []byte(id+"."+ts+"."+string(body))))
		}
		nowTS := strconv.FormatInt(now.Unix(), 10)
		right := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {nowTS}, "Webhook-Signature": {sigs + " " + sign(keys[1], nowTS)}}
		if why := a.check(right, body, now); (why == "") != (id != "") {
			t.Fatalf("right signature among %q for id %q: %q", sigs, id, why)
		}
		h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {sigs}}
		if a.check(h, body, now) != "" {
			return
		}
		secs, err := strconv.ParseInt(ts, 10, 64)
		require.NoError(t, err, "accepted timestamp %q", ts)
		require.GreaterOrEqual(t, secs, now.Unix()-300, "accepted timestamp %q", ts)
		require.LessOrEqual(t, secs, now.Unix()+300, "accepted timestamp %q", ts)
		for _, s := range strings.Fields(sigs) {
			for _, key := range keys {
				if s == sign(key, ts) {
					return
				}
				// base64 decoding tolerates some other spellings of the
				// same bytes; compare the bytes.
				got, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "v1,"))
				want := mac(sha256.New, key, []byte(id+"."+ts+"."+string(body)))
				if strings.HasPrefix(s, "v1,") && err == nil && hmac.Equal(got, want) {
					return
				}
			}
		}
		t.Fatalf("accepted id %q ts %q signatures %q", id, ts, sigs)
	})
}

// FuzzCredentialVerifiers checks the basic and header modes: only a
// configured password (with the username) or token is accepted.
func FuzzCredentialVerifiers(f *testing.F) {
	f.Add("Basic "+base64.StdEncoding.EncodeToString([]byte("genesys:old-pw")), "old-token")
	f.Add("Basic "+base64.StdEncoding.EncodeToString([]byte("genesys:new-pw:x")), "new-token ")
	f.Add("Basic Z2VuZXN5czo=", "")
	f.Add("basic Z2VuZXN5czpvbGQtcHc=", "OLD-TOKEN")
	passwords := [][]byte{[]byte("old-pw"), []byte("new-pw")}
	tokens := [][]byte{[]byte("old-token"), []byte("new-token")}
	basic := &basicAuth{username: []byte("genesys"), passwords: passwords}
	header := &headerAuth{name: "X-Webhook-Token", values: tokens}
	f.Fuzz(func(t *testing.T, authorization, token string) {
		h := http.Header{"Authorization": {authorization}, "X-Webhook-Token": {token}}
		if basic.check(h, nil, time.Now()) == "" {
			user, pass, ok := (&http.Request{Header: h}).BasicAuth()
			require.True(t, ok, "basic accepted %q", authorization)
			require.Equal(t, "genesys", user, "basic accepted %q", authorization)
			require.Contains(t, []string{"old-pw", "new-pw"}, pass, "basic accepted %q", authorization)
		}
		accepted := header.check(h, nil, time.Now()) == ""
		require.Equal(t, token == "old-token" || token == "new-token", accepted, "header mode accepted %q", token)
	})
}

// nopAcceptor stores nothing: it lets FuzzIntake run the whole handler
// without a database. Keys ending in "dup" come back as duplicates.
type nopAcceptor struct{}

func (nopAcceptor) Accept(_ context.Context, ev *outbox.NewEvent) (outbox.Accepted, error) {
	return outbox.Accepted{Duplicate: strings.HasSuffix(ev.Key, "dup")}, nil
}

const fuzzIntakeConfig = `
database_url: postgres://unused/db
admin_token: 0123456789abcdef0123456789abcdef
routes:
  - name: open
    auth: {none: true}
    idempotency_key: [{json: /id}, {header: webhook-id}, {composite: [/topicName, /eventBody/conversationId]}]
    max_body_bytes: 4096
    target: {url: "http://127.0.0.1:1/"}
  - name: token
    auth: {header: {name: X-Webhook-Token, values: [tok-1, tok-2]}}
    idempotency_key: [{json: /id}, {body_sha256: true}]
    target: {url: "http://127.0.0.1:1/"}
  - name: github
    auth: {hmac: {header: X-Hub-Signature-256, secret: s, prefix: "sha256="}}
    idempotency_key: [{json: /id}]
    target: {url: "http://127.0.0.1:1/"}
  - name: sw
    auth: {standard_webhooks: {secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
    idempotency_key: [{header: webhook-id}]
    target: {url: "http://127.0.0.1:1/"}
`

// FuzzIntake drives the whole router with arbitrary routes, bodies and
// headers. It must never panic (the router would turn that into a 503),
// and it must always answer one of intake's documented statuses with a
// JSON body: {"status","key"} for 200, {"error"} for the rest.
func FuzzIntake(f *testing.F) {
	f.Add("open", []byte(`{"id":"evt-1"}`), "application/json", "", "", "")
	f.Add("open", []byte(`{"id":"evt-dup"}`), "application/cloudevents+json; charset=utf-8", "", "", "")
	f.Add("open", []byte(`{"topicName":"t","eventBody":{"conversationId":"c"}}`), "application/json", "", "", "")
	f.Add("open", []byte(`{"id":1e400}`), "application/json", "", "", "")
	f.Add("open", []byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`), "application/json", "", "", "")
	f.Add("open", []byte(strings.Repeat("x", 5000)), "application/json", "", "", "")
	f.Add("open", []byte(`{"id":"\ud800"}`), "text/plain", "", "", "")
	f.Add("token", []byte(`{"x":1}`), "application/json", "tok-2", "", "")
	f.Add("token", []byte(`{"id":"a"}`), "", "tok-3", "", "")
	f.Add("github", []byte(`{"id":"a"}`), "application/json", "", "sha256=00", "")
	f.Add("sw", []byte(`{"test": 2432232314}`), "application/json", "", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	f.Add("nope", []byte(`{}`), "application/json", "", "", "")
	f.Add("a/b", []byte(`{}`), "application/json;;", "", "", "")
	cfg, err := config.Parse([]byte(fuzzIntakeConfig), func(string) (string, bool) { return "", false })
	if err != nil {
		f.Fatal(err)
	}
	in, err := NewIntake(cfg, nopAcceptor{}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	in.now = func() time.Time { return time.Unix(1614265330, 0) }
	router := NewRouter(RouterOptions{Intake: in, Logger: slog.New(slog.DiscardHandler)})
	documented := map[int]bool{200: true, 400: true, 401: true, 404: true, 413: true, 415: true, 422: true}
	f.Fuzz(func(t *testing.T, route string, body []byte, contentType, token, signature, webhookID string) {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/open", bytes.NewReader(body))
		req.URL.Path = "/webhooks/" + route
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("X-Webhook-Token", token)
		req.Header.Set("X-Hub-Signature-256", signature)
		req.Header.Set("Webhook-Signature", signature)
		req.Header.Set("Webhook-Timestamp", "1614265330")
		req.Header.Set("Webhook-Id", webhookID)
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)

		if !documented[w.Code] {
			t.Fatalf("status %d for route %q: %s", w.Code, route, w.Body)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}
		var answer map[string]string
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%d answer is not a JSON object of strings: %q", w.Code, w.Body)
		}
		if w.Code == 200 {
			key := answer["key"]
			require.Len(t, answer, 2, "200 answer %q", w.Body)
			require.Contains(t, []string{"accepted", "duplicate"}, answer["status"], "200 answer %q", w.Body)
			require.NotEmpty(t, key, "200 answer %q", w.Body)
			require.LessOrEqual(t, len(key), config.MaxKeyBytes, "200 answer %q", w.Body)
			require.True(t, utf8.ValidString(key), "200 answer %q", w.Body)
			require.False(t, strings.ContainsFunc(key, isControl), "200 answer %q", w.Body)
			return
		}
		require.Len(t, answer, 1, "%d answer %q", w.Code, w.Body)
		require.NotEmpty(t, answer["error"], "%d answer %q", w.Code, w.Body)
		for _, secret := range []string{"tok-1", "tok-2", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"} {
			if !strings.Contains(route+contentType, secret) { // the request itself put it in its route or Content-Type
				require.NotContains(t, answer["error"], secret, "the error shows a secret")
			}
		}
	})
}
