package jobs_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

var (
	signingOld = []byte("outbound-signing-key-old-32bytes")
	signingNew = []byte("outbound-signing-key-new-32bytes")
)

// verifyStandardWebhooks checks a delivery the way the docs tell the
// internal service to: from the documented formula, not outbox's code. It
// returns the keys whose signature is present.
func verifyStandardWebhooks(h http.Header, body []byte, keys ...[]byte) (matched int, err error) {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("webhook-timestamp %q: %w", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return 0, fmt.Errorf("webhook-timestamp %d is %s off", sec, d)
	}
	for _, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + string(body)))
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		for _, s := range strings.Fields(sigs) {
			if hmac.Equal([]byte(s), []byte(want)) {
				matched++
			}
		}
	}
	return matched, nil
}

// TestSignedDelivery: a route with signing_secrets signs every attempt
// with each key, webhook-id is the event key, and a route without one
// sends no Standard Webhooks headers. The secrets appear in no job row.
func TestSignedDelivery(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/signed" && calls.Add(1) == 1 {
			w.WriteHeader(http.StatusInternalServerError) // the retry is signed too
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	pool, _ := testdb.Pool(t)
	whsec := func(k []byte) string { return "whsec_" + base64.StdEncoding.EncodeToString(k) }
	doc := fmt.Sprintf(`
database_url: postgres://unused/db
disable_admin: true
routes:
  - name: signed
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: %q, signing_secrets: [%q, %q]}
    retry: {initial_backoff: 50ms, max_backoff: 100ms}
  - name: plain
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: %q}
`, tg.URL+"/signed", whsec(signingOld), whsec(signingNew), tg.URL+"/plain")
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := store.New(pool)
	opts := jobs.ClientOptions{Logger: logger, RiverLogger: logger}
	withDeps(t, st, cfg, &opts)
	client, err := jobs.NewClient(pool, st, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(ctx)
	})
	b := &bundle{pool: pool, client: client, intake: store.NewIntake(st, client)}
	body := `{"id":"conv-42","n":1}`
	var jobIDs []int64
	for _, route := range []string{"signed", "plain"} {
		res, err := b.intake.Accept(context.Background(), &outbox.NewEvent{Route: route, Key: "conv-42", ContentType: "application/json", Body: []byte(body), MaxAttempts: 5})
		if err != nil {
			t.Fatal(err)
		}
		jobIDs = append(jobIDs, res.JobID)
	}
	for _, id := range jobIDs {
		if job := b.waitJob(t, id, 15*time.Second, func(j *rivertype.JobRow) bool { return j.State == rivertype.JobStateCompleted }); job == nil {
			t.Fatal("not delivered")
		}
	}
	signed := 0
	for _, r := range tg.requests() {
		if r.header.Get("X-Outbox-Route") == "plain" {
			for _, h := range []string{"webhook-id", "webhook-timestamp", "webhook-signature"} {
				if r.header.Get(h) != "" {
					t.Errorf("unsigned route sent %s", h)
				}
			}
			continue
		}
		signed++
		if got := r.header.Get("webhook-id"); got != "conv-42" || got != r.header.Get("X-Outbox-Key") {
			t.Errorf("webhook-id %q, X-Outbox-Key %q", got, r.header.Get("X-Outbox-Key"))
		}
		matched, err := verifyStandardWebhooks(r.header, r.body, signingOld, signingNew)
		if err != nil || matched != 2 {
			t.Errorf("attempt %s: %d of 2 signatures verify (%v): %s", r.header.Get("X-Outbox-Attempt"), matched, err, r.header.Get("webhook-signature"))
		}
		if matched, _ := verifyStandardWebhooks(r.header, []byte(`{"id":"conv-42","n":2}`), signingOld, signingNew); matched != 0 {
			t.Error("the signature verifies a different body")
		}
	}
	if signed != 2 {
		t.Errorf("%d signed requests, want 2 (a 500, then the retry)", signed)
	}
	var rows string
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(concat_ws(' ', args::text, errors::text, metadata::text), ' '), '') FROM river_job`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{whsec(signingOld), base64.StdEncoding.EncodeToString(signingNew), string(signingOld)} {
		if strings.Contains(rows, secret) {
			t.Errorf("a signing secret is in river_job: %s", rows)
		}
	}
}
