package config

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// CredentialHeaders are request headers that carry credentials or
// signatures. Intake never stores them, and none can be an idempotency key:
// a key is stored, logged, shown in River UI and sent to the target.
var CredentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Webhook-Signature", "Stripe-Signature", "X-Shopify-Hmac-Sha256", "X-Twilio-Signature"}

// CredentialHeaderPrefixes are header name prefixes treated like
// CredentialHeaders.
var CredentialHeaderPrefixes = []string{"X-Hub-Signature"}

// signingHeaders are the Standard Webhooks headers outbox sets on a signed
// delivery.
var signingHeaders = []string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}

// IsCredentialHeader reports whether name is one of CredentialHeaders or
// starts with one of CredentialHeaderPrefixes.
func IsCredentialHeader(name string) bool {
	name = http.CanonicalHeaderKey(name)
	for _, h := range CredentialHeaders {
		if name == h {
			return true
		}
	}
	for _, p := range CredentialHeaderPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// authHeader is the header a route's auth mode reads its secret from, or "".
func (a *Auth) authHeader() string {
	switch {
	case a.Header != nil:
		return a.Header.Name
	case a.HMAC != nil:
		return a.HMAC.Header
	}
	return ""
}

// validateSecurity checks the settings that keep secrets where they belong:
// TLS files, trusted proxies, outbound signing secrets, and key sources that
// would copy a credential into the key.
func (c *Config) validateSecurity(p *problems) {
	if c.TLS != nil {
		switch {
		case c.TLS.CertFile == "" || c.TLS.KeyFile == "":
			if c.TLS.CertFile == "" {
				p.add("tls.cert_file", "is required when tls is set (a PEM certificate, with its chain)")
			}
			if c.TLS.KeyFile == "" {
				p.add("tls.key_file", "is required when tls is set (the PEM private key of cert_file)")
			}
		default:
			regular := true
			for _, f := range []struct{ field, path string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
				// A device or a pipe would be read forever.
				if fi, err := os.Stat(f.path); err == nil && !fi.Mode().IsRegular() {
					p.add(f.field, "%s is not a regular file", f.path)
					regular = false
				}
			}
			if !regular {
				break
			}
			if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
				p.add("tls", "cannot load cert_file %s with key_file %s: %v", c.TLS.CertFile, c.TLS.KeyFile, err)
			}
		}
	}
	for i, s := range c.TrustedProxies {
		if _, err := parsePrefix(s); err != nil {
			p.add(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not an IP address or a CIDR range such as 10.0.0.0/8", s)
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		field := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			field = fmt.Sprintf("routes[%d] (%s)", i, r.Name)
		}
		t := &r.Target
		if t.SigningSecret != "" && len(t.SigningSecrets) > 0 {
			p.add(field+".target", "set signing_secret or signing_secrets, not both")
		}
		for j, secret := range append([]string{t.SigningSecret}, t.SigningSecrets...) {
			if j == 0 && secret == "" {
				continue
			}
			name := field + ".target.signing_secret"
			if j > 0 {
				name = fmt.Sprintf("%s.target.signing_secrets[%d]", field, j-1)
			}
			if _, err := whsig.DecodeSecret(secret); err != nil {
				p.add(name, "%v (for example: echo whsec_$(openssl rand -base64 32))", err)
			}
		}
		if len(t.SigningKeys()) > 0 {
			for name := range t.Headers {
				for _, h := range signingHeaders {
					if strings.EqualFold(name, h) {
						p.add(field+".target.headers", "%s is set by webhook-outbox on every signed delivery and cannot be overridden", h)
					}
				}
			}
		}
		authHeader := r.Auth.authHeader()
		for j, s := range r.IdempotencyKey {
			if s.Header == "" {
				continue
			}
			if IsCredentialHeader(s.Header) || strings.EqualFold(s.Header, authHeader) {
				p.add(fmt.Sprintf("%s.idempotency_key[%d].header", field, j), "%s carries a credential or a signature; it cannot be an idempotency key, which is stored, logged and sent to the target", http.CanonicalHeaderKey(s.Header))
			}
		}
	}
}

// SigningKeys returns the decoded outbound signing secrets, none when the
// target is not signed. The config is validated, so every secret decodes.
func (t *Target) SigningKeys() [][]byte {
	var keys [][]byte
	for _, s := range Secrets(t.SigningSecret, t.SigningSecrets) {
		if key, err := whsig.DecodeSecret(s); err == nil {
			keys = append(keys, key)
		}
	}
	return keys
}

// TrustedProxyPrefixes returns trusted_proxies as address ranges; a single
// address is a range of one.
func (c *Config) TrustedProxyPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// RedactURL returns s with the password of any user:password@ part replaced,
// for showing a target URL in messages, the CLI and the admin API.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		if _, hasPassword := u.User.Password(); hasPassword {
			return u.Redacted()
		}
		return s
	}
	// Not an absolute URL (a mistake the config check reports): hide
	// everything between the scheme (if any) and the last @.
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "//"); i >= 0 && i < at {
		start = i + 2
	}
	return s[:start] + "xxxxx" + s[at:]
}
