package handler

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// authenticator checks one request against a route's auth mode. It returns
// "" when the request is authentic, else why not, in words safe to show the
// sender: never the expected secret.
type authenticator interface {
	check(h http.Header, body []byte, now time.Time) string
}

func newAuthenticator(a *config.Auth) (authenticator, error) {
	switch {
	case a.None:
		return noAuth{}, nil
	case a.Basic != nil:
		return &basicAuth{username: []byte(a.Basic.Username), passwords: toBytes(config.Secrets(a.Basic.Password, a.Basic.Passwords))}, nil
	case a.Header != nil:
		return &headerAuth{name: http.CanonicalHeaderKey(a.Header.Name), values: toBytes(config.Secrets(a.Header.Value, a.Header.Values))}, nil
	case a.HMAC != nil:
		h := a.HMAC
		newHash := sha256.New
		if h.Algorithm == "sha1" {
			newHash = sha1.New
		}
		return &hmacAuth{header: http.CanonicalHeaderKey(h.Header), secrets: toBytes(config.Secrets(h.Secret, h.Secrets)),
			newHash: newHash, prefix: h.Prefix, base64: h.Encoding == "base64"}, nil
	case a.StandardWebhooks != nil:
		s := a.StandardWebhooks
		var keys [][]byte
		for _, secret := range config.Secrets(s.Secret, s.Secrets) {
			key, err := whsig.DecodeSecret(secret)
			if err != nil {
				return nil, err
			}
			keys = append(keys, key)
		}
		return &standardWebhooksAuth{keys: keys, tolerance: s.Tolerance.D()}, nil
	}
	return nil, fmt.Errorf("no auth mode configured")
}

func toBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// equalAny compares got with every candidate in constant time: it hashes
// both sides first, so neither the length nor the position of a mismatch
// leaks, and it never stops early.
func equalAny(got []byte, candidates [][]byte) bool {
	gotSum := sha256.Sum256(got)
	match := 0
	for _, c := range candidates {
		sum := sha256.Sum256(c)
		match |= subtle.ConstantTimeCompare(gotSum[:], sum[:])
	}
	return match == 1
}

type noAuth struct{}

func (noAuth) check(http.Header, []byte, time.Time) string { return "" }

type basicAuth struct {
	username  []byte
	passwords [][]byte
}

func (a *basicAuth) check(h http.Header, _ []byte, _ time.Time) string {
	r := http.Request{Header: h}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "send HTTP Basic credentials in the Authorization header"
	}
	userOK := equalAny([]byte(user), [][]byte{a.username})
	passOK := equalAny([]byte(pass), a.passwords)
	if !userOK || !passOK {
		return "wrong username or password"
	}
	return ""
}

type headerAuth struct {
	name   string
	values [][]byte
}

func (a *headerAuth) check(h http.Header, _ []byte, _ time.Time) string {
	got, ok := h[a.name]
	if !ok || len(got) == 0 {
		return fmt.Sprintf("the %s header is missing", a.name)
	}
	if len(got) > 1 || !equalAny([]byte(got[0]), a.values) {
		return fmt.Sprintf("the %s header does not hold a valid token", a.name)
	}
	return ""
}

type hmacAuth struct {
	header  string
	secrets [][]byte
	newHash func() hash.Hash
	prefix  string
	base64  bool
}

func (a *hmacAuth) check(h http.Header, body []byte, _ time.Time) string {
	got := h.Get(a.header)
	if got == "" {
		return fmt.Sprintf("the %s signature header is missing", a.header)
	}
	encoded, ok := strings.CutPrefix(got, a.prefix)
	if !ok {
		return fmt.Sprintf("the %s header must start with %q", a.header, a.prefix)
	}
	var sig []byte
	var err error
	if a.base64 {
		sig, err = base64.StdEncoding.DecodeString(encoded)
	} else {
		sig, err = hex.DecodeString(encoded)
	}
	if err != nil {
		enc := "hex"
		if a.base64 {
			enc = "base64"
		}
		return fmt.Sprintf("the %s header is not a %s signature", a.header, enc)
	}
	match := false
	for _, secret := range a.secrets {
		mac := hmac.New(a.newHash, secret)
		mac.Write(body)
		if hmac.Equal(sig, mac.Sum(nil)) {
			match = true
		}
	}
	if !match {
		return fmt.Sprintf("the %s signature does not match the body", a.header)
	}
	return ""
}

type standardWebhooksAuth struct {
	keys      [][]byte
	tolerance time.Duration
}

func (a *standardWebhooksAuth) check(h http.Header, body []byte, now time.Time) string {
	id, ts, sigs := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), h.Get("Webhook-Signature")
	if id == "" || ts == "" || sigs == "" {
		return "the webhook-id, webhook-timestamp and webhook-signature headers are all required"
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "webhook-timestamp is not a Unix time in seconds"
	}
	// Compared without subtracting secs, which could overflow.
	tol := int64(a.tolerance / time.Second)
	if unix := now.Unix(); secs < unix-tol || secs > unix+tol {
		skew := math.Abs(float64(unix) - float64(secs))
		return fmt.Sprintf("webhook-timestamp is %.0fs away from this server's clock, more than the %s tolerance", skew, a.tolerance)
	}
	match := false
	for _, key := range a.keys {
		want := whsig.Sign(key, id, ts, body)
		for _, versioned := range strings.Fields(sigs) {
			version, encoded, ok := strings.Cut(versioned, ",")
			if !ok || version != "v1" {
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(encoded)
			if err == nil && hmac.Equal(sig, want) {
				match = true
			}
		}
	}
	if !match {
		return "no v1 signature in webhook-signature matches the body"
	}
	return ""
}
