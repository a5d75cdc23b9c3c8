// Package whsig is the Standard Webhooks signature scheme
// (https://www.standardwebhooks.com): intake verifies senders' signatures
// with it, deliveries carry outbox's own, and config checks the secrets.
package whsig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
)

// Sign returns the signature of a message: HMAC-SHA256, with the decoded
// secret as key, of "<webhook-id>.<webhook-timestamp>.<body>".
func Sign(key []byte, id, timestamp string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// DecodeSecret decodes a secret: base64, optionally prefixed with whsec_.
// Its error completes a sentence that starts with the secret's config field.
func DecodeSecret(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
	if err != nil || len(b) == 0 {
		return nil, errors.New("is not a Standard Webhooks secret: expected whsec_ followed by base64")
	}
	return b, nil
}
