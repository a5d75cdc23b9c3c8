package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
)

// keys derives the console's secrets from the admin token: the token that
// every form carries, and the key that signs result messages. Deriving
// them (HMAC-SHA256 under the admin token, one label each) instead of
// drawing them at start keeps a form valid on every replica and across
// restarts; a page that does not know the admin token cannot compute them,
// and they reveal nothing of it.
type keys struct {
	form     string
	flashKey []byte
}

func newKeys(adminToken string) keys {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, []byte(adminToken))
		m.Write([]byte("webhook-outbox console " + label))
		return m.Sum(nil)
	}
	return keys{
		form:     base64.RawURLEncoding.EncodeToString(derive("form token v1")),
		flashKey: derive("flash v1"),
	}
}

func (k keys) formToken() string { return k.form }

// validForm compares a submitted token in constant time.
func (k keys) validForm(got string) bool {
	return hmac.Equal([]byte(got), []byte(k.form))
}

func (k keys) sign(msg string) string {
	m := hmac.New(sha256.New, k.flashKey)
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// withFlash adds a signed result message to target's query. Signing keeps
// a crafted link from showing words of someone else's choosing as the
// console's own.
func (k keys) withFlash(target, msg string) string {
	u, err := url.Parse(target)
	if err != nil {
		return target
	}
	q := u.Query()
	q.Set("flash", msg)
	q.Set("sig", k.sign(msg))
	u.RawQuery = q.Encode()
	return u.String()
}

// flash returns the query's result message if its signature holds.
func (k keys) flash(q url.Values) string {
	msg, sig := q.Get("flash"), q.Get("sig")
	if msg == "" || !hmac.Equal([]byte(sig), []byte(k.sign(msg))) {
		return ""
	}
	return strings.TrimSpace(msg)
}
