// Package receiver shows how an internal service receives webhook-outbox's
// deliveries: it verifies the Standard Webhooks signature outbox adds when a
// route sets target.signing_secret, deduplicates on X-Outbox-Key, and
// answers with statuses that make outbox do the right thing.
//
// docs/receiving-deliveries.md quotes this file, and a test
// (cmd/outbox/receiving_test.go) runs it against deliveries that a real
// outbox signed. Copy it into your service.
package receiver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tolerance is how far webhook-timestamp may be from the receiver's clock.
// A captured request cannot be replayed later than this.
const Tolerance = 5 * time.Minute

// Verify checks that a delivery was signed by webhook-outbox with one of
// secrets (the "whsec_..." strings of target.signing_secret) within
// Tolerance of now. body is the request body exactly as received: verify
// before parsing it.
func Verify(h http.Header, body []byte, now time.Time, secrets ...string) error {
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now", d.Round(time.Second))
	}
	for _, secret := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			return fmt.Errorf("the secret is not whsec_ followed by base64: %w", err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		want := mac.Sum(nil)
		// One signature per signing secret, space-separated, while outbox
		// rotates them: any one that matches will do.
		for _, sig := range strings.Fields(h.Get("webhook-signature")) {
			got, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "v1,"))
			if strings.HasPrefix(sig, "v1,") && err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errors.New("no webhook-signature matches")
}

// Process does the service's work for one event, once per key: it records
// the key in the same database transaction as the work, and reports
// duplicate when the key was recorded before (the work is already done).
type Process func(ctx context.Context, key string, body []byte) (duplicate bool, err error)

// Handler receives deliveries. It verifies each one, deduplicates it on
// X-Outbox-Key through process, and answers so that outbox does the right
// thing: 2xx once the work is done or was done before; 503 with Retry-After
// when the service cannot do it now (outbox waits that long without using
// an attempt); 401 for a request outbox did not sign (permanent: outbox
// makes it a dead letter).
func Handler(process Process, secrets ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// At least the route's max_body_bytes (1 MiB by default).
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "cannot read the body", http.StatusBadRequest)
			return
		}
		if err := Verify(r.Header, body, time.Now(), secrets...); err != nil {
			http.Error(w, "not signed by webhook-outbox: "+err.Error(), http.StatusUnauthorized)
			return
		}
		duplicate, err := process(r.Context(), r.Header.Get("X-Outbox-Key"), body)
		if err != nil {
			w.Header().Set("Retry-After", "30")
			http.Error(w, "cannot take it now; try again later", http.StatusServiceUnavailable)
			return
		}
		if duplicate {
			w.WriteHeader(http.StatusOK) // done before: a 2xx, or outbox retries
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
