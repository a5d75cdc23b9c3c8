package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Every secret below is unique text, so that finding it anywhere is
// unambiguous.
const (
	redactAdminToken = "admin-token-SECRET-0123456789abcdefghijkl"
	hdrOld           = "hdr-secret-old-AAAA"
	hdrNew           = "hdr-secret-new-BBBB"
	internalToken    = "internal-secret-CCCC"
	basicPassword    = "basic-pw-EEEE"
	hmacSecret       = "hmac-secret-FFFF"
)

var (
	signingKey  = []byte("signing-secret-DDDD-32-bytes-key")
	swKey       = []byte("sw-secret-GGGG-32-bytes-long-key")
	signingSec  = "whsec_" + base64.StdEncoding.EncodeToString(signingKey)
	swSecret    = "whsec_" + base64.StdEncoding.EncodeToString(swKey)
	redactRoute = `
listen: "127.0.0.1:0"
database_url: %q
admin_token: ` + redactAdminToken + `
log_level: debug
routes:
  - name: genesys
    auth: {header: {name: X-Webhook-Token, values: [` + hdrOld + `, ` + hdrNew + `]}}
    idempotency_key: [{json: /id}]
    target: {url: "TARGET/genesys", headers: {Authorization: "Bearer ` + internalToken + `"}, signing_secret: "` + signingSec + `"}
    retry: {initial_backoff: 50ms, max_backoff: 100ms, max_attempts: 3}
  - name: basic
    auth: {basic: {username: sender, password: ` + basicPassword + `}}
    idempotency_key: [{json: /id}]
    target: {url: "TARGET/refuse"}
  - name: github
    auth: {hmac: {header: X-Hub-Signature-256, secret: ` + hmacSecret + `, prefix: "sha256="}}
    idempotency_key: [{json: /id}]
    target: {url: "http://CLOSED/", timeout: 1s}
    retry: {initial_backoff: 50ms, max_backoff: 100ms, max_attempts: 2}
  - name: sw
    auth: {standard_webhooks: {secret: "` + swSecret + `"}}
    idempotency_key: [{header: webhook-id}]
    target: {url: "TARGET/sw"}
`
)

// TestSecretsStayOutOfStorageLogsAndMetrics runs serve with a route of each
// auth mode, a target token and an outbound signing secret; sends right and
// wrong credentials of every kind, admin tokens included; lets deliveries
// succeed, retry and fail for good; then looks for every secret, configured
// or sent, in every table of the database, in the logs (debug level, River's
// included), in /metrics and in the admin API's answers. None may appear.
func TestSecretsStayOutOfStorageLogsAndMetrics(t *testing.T) {
	t.Parallel()
	var genesysCalls atomic.Int32
	rec := newRecorder(t)
	rec.hook = func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.URL.Path == "/genesys" && genesysCalls.Add(1) == 1:
			http.Error(w, "database busy", http.StatusInternalServerError)
			return true
		case r.URL.Path == "/refuse":
			http.Error(w, "unknown event type", http.StatusBadRequest)
			return true
		}
		return false
	}
	doc := strings.NewReplacer("TARGET", rec.URL, "CLOSED", closedAddr(t)).Replace(redactRoute)
	var logs syncBuffer
	m, pool := startMainWithLimits(t, doc, nil, &logs)
	base := "http://" + m.Addr()

	var sent []string // every credential sent, right or wrong
	post := func(route, body string, headers map[string]string, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/"+route, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range headers {
			req.Header.Set(k, v)
			if k != "webhook-id" && k != "webhook-timestamp" {
				sent = append(sent, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST %s %s: %d %s, want %d", route, body, resp.StatusCode, raw, want)
		}
	}
	basicAuth := func(user, pw string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
	}
	hexSig := func(secret, body string) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(body))
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	swHeaders := func(key []byte, id, body string) map[string]string {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id + "." + ts + "." + body))
		return map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))}
	}
	sent = append(sent, hdrOld, hdrNew, basicPassword, hmacSecret)

	extra := map[string]string{"Cookie": "session=cookie-secret-IIII", "Proxy-Authorization": "Basic proxy-secret-JJJJ", "Authorization": "Bearer sender-bearer-KKKK"}
	post("genesys", `{"id":"g1"}`, merge(extra, map[string]string{"X-Webhook-Token": hdrOld}), 200)
	post("genesys", `{"id":"g2"}`, map[string]string{"X-Webhook-Token": hdrNew}, 200)
	post("genesys", `{"id":"g3"}`, map[string]string{"X-Webhook-Token": "hdr-guess-HHHH"}, 401)
	post("basic", `{"id":"b1"}`, map[string]string{"Authorization": basicAuth("sender", basicPassword)}, 200)
	post("basic", `{"id":"b2"}`, map[string]string{"Authorization": basicAuth("sender", "basic-guess-LLLL")}, 401)
	post("github", `{"id":"h1"}`, map[string]string{"X-Hub-Signature-256": hexSig(hmacSecret, `{"id":"h1"}`)}, 200)
	post("github", `{"id":"h2"}`, map[string]string{"X-Hub-Signature-256": hexSig("hmac-guess-MMMM", `{"id":"h2"}`)}, 401)
	post("sw", `{"n":1}`, swHeaders(swKey, "msg_1", `{"n":1}`), 200)
	post("sw", `{"n":2}`, swHeaders([]byte("sw-guess-key-OOOO"), "msg_2", `{"n":2}`), 401)

	var answers strings.Builder // what the admin surface shows
	admin := func(method, path, auth string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers.Write(raw)
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d %.300s, want %d", method, path, resp.StatusCode, raw, want)
		}
	}
	for _, guess := range []string{"Bearer admin-guess-NNNN-0123456789abcdefghij", basicAuth("root", "admin-guess-PPPP-0123456789abcdefghij")} {
		admin("GET", "/admin/v1/routes", guess, 401)
		admin("GET", "/riverui/api/jobs", guess, 401)
		sent = append(sent, guess, strings.Fields(guess)[1])
	}
	sent = append(sent, "admin-guess-NNNN", "admin-guess-PPPP", redactAdminToken, basicAuth("any", redactAdminToken))

	// Wait for the outcomes: three deliveries, two dead letters.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var delivered, dead int
		err := pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events WHERE delivered_at IS NOT NULL), (SELECT count(*) FROM dead_letters)`).Scan(&delivered, &dead)
		if err != nil {
			t.Fatal(err)
		}
		if delivered == 3 && dead == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d delivered, %d dead letters; logs:\n%s", delivered, dead, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	bearer := "Bearer " + redactAdminToken
	admin("GET", "/admin/v1/routes", bearer, 200)
	admin("GET", "/admin/v1/dead-letters", bearer, 200)
	admin("GET", "/admin/v1/events/genesys/g1", bearer, 200)
	admin("GET", "/admin/v1/events/github/h1", bearer, 200)
	admin("GET", "/riverui/api/jobs?state=discarded", basicAuth("any", redactAdminToken), 200)
	admin("GET", "/riverui/api/jobs?state=completed", basicAuth("any", redactAdminToken), 200)
	if !strings.Contains(answers.String(), "connection refused") || !strings.Contains(answers.String(), "400 Bad Request") {
		t.Errorf("the admin answers do not show the failures, so the check below proves little:\n%.2000s", answers.String())
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	configured := []string{redactAdminToken, hdrOld, hdrNew, internalToken, basicPassword, hmacSecret, signingSec, string(signingKey), swSecret, string(swKey)}
	places := map[string]string{
		"the database":  dumpDatabase(t, pool),
		"the logs":      logs.String(),
		"/metrics":      string(metrics),
		"the admin API": answers.String(),
	}
	for place, text := range places {
		if len(text) < 100 {
			t.Errorf("%s: almost nothing to search (%q)", place, text)
		}
		for _, secret := range append(configured, sent...) {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains the secret %q", place, secret)
			}
		}
	}
	// The deliveries carried the target's token and a signature: the
	// secrets were in use, not merely absent.
	for _, d := range rec.deliveries() {
		if d.header.Get("X-Outbox-Route") == "genesys" && (d.header.Get("Authorization") != "Bearer "+internalToken || d.header.Get("Webhook-Signature") == "") {
			t.Errorf("genesys delivery without the target token or signature: %v", d.header)
		}
	}
}

// dumpDatabase returns every row of every table in the public schema as
// text, and the event bodies decoded.
func dumpDatabase(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, table := range append(tables, "(SELECT convert_from(body, 'UTF8') AS body FROM events)") {
		if !strings.HasPrefix(table, "(") {
			table = pgx.Identifier{table}.Sanitize()
		}
		var text string
		if err := pool.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(string_agg(t::text, E'\n'), '') FROM %s t`, table)).Scan(&text); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		out.WriteString(text + "\n")
	}
	if !strings.Contains(out.String(), "g1") || !strings.Contains(out.String(), "msg_1") {
		t.Fatalf("the dump misses the events:\n%.2000s", out.String())
	}
	return out.String()
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func closedAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + freePort(t)
}
