package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// CredentialHeaders are request headers that carry credentials or
// signatures. Intake never stores them, and none can be an idempotency key:
// a key is stored, logged, shown in River UI and sent to the target.
var CredentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Webhook-Signature", "Stripe-Signature", "X-Shopify-Hmac-Sha256", "X-Twilio-Signature"}

// CredentialHeaderPrefixes are header name prefixes treated like
// CredentialHeaders.
var CredentialHeaderPrefixes = []string{"X-Hub-Signature"}

// CredentialHeaderPatterns are the parts of a header name, in lower case,
// that mark it as a likely credential (X-Gitlab-Token, X-Api-Key,
// X-Auth-Secret, Set-Cookie...). Such headers are not stored unless the
// route lists them in keep_headers.
var CredentialHeaderPatterns = []string{"token", "secret", "signature", "api-key", "apikey", "api_key", "auth", "cookie", "hmac", "password", "passwd"}

// signingHeaders are the Standard Webhooks headers outbox sets on a signed
// delivery.
var signingHeaders = []string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"}

// IsCredentialHeader reports whether name is one of CredentialHeaders,
// starts with one of CredentialHeaderPrefixes, or contains one of
// CredentialHeaderPatterns.
func IsCredentialHeader(name string) bool {
	name = http.CanonicalHeaderKey(name)
	if slices.Contains(CredentialHeaders, name) {
		return true
	}
	for _, p := range CredentialHeaderPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	lower := strings.ToLower(name)
	for _, p := range CredentialHeaderPatterns {
		if strings.Contains(lower, p) {
			return true
		}
	}
	return false
}

// AuthHeaders are the request headers the route's auth mode reads its
// credential or signature from, in canonical form. They are never stored,
// whatever keep_headers says.
func (a *Auth) AuthHeaders() []string {
	switch {
	case a.Basic != nil:
		return []string{"Authorization"}
	case a.Header != nil:
		return []string{http.CanonicalHeaderKey(a.Header.Name)}
	case a.HMAC != nil:
		return []string{http.CanonicalHeaderKey(a.HMAC.Header)}
	case a.StandardWebhooks != nil:
		return []string{"Webhook-Signature"}
	}
	return nil
}

// StoresHeader reports whether intake stores the request header name with
// the route's events: every header but the route's own auth header and
// credential-looking ones (IsCredentialHeader), unless keep_headers lists
// them.
func (r *Route) StoresHeader(name string) bool {
	name = http.CanonicalHeaderKey(name)
	if slices.Contains(r.Auth.AuthHeaders(), name) {
		return false
	}
	if !IsCredentialHeader(name) {
		return true
	}
	return slices.ContainsFunc(r.KeepHeaders, func(k string) bool { return strings.EqualFold(k, name) })
}

// AllowDemoTokensEnv, set to 1, lets serve and config check accept
// DemoTokens, as `make run` does. Everywhere else they are refused.
const AllowDemoTokensEnv = "OUTBOX_ALLOW_DEMO_TOKENS"

// DemoTokens are secrets published with webhook-outbox's demos: the admin
// token docker-compose.yml used to default to, and the sender token of
// `make run` and the README's curl lines. Anyone can read them.
var DemoTokens = []string{"compose-demo-admin-token-change-me-0123456789abcdef", "dev-genesys-token"}

// RefuseDemoTokens returns an error naming every secret of the config that
// is one of DemoTokens, nil when there is none. serve and config check call
// it unless AllowDemoTokensEnv is 1; the other commands, which serve no
// one, do not.
func (c *Config) RefuseDemoTokens() error {
	var p problems
	demo := func(field, secret string) {
		if slices.Contains(DemoTokens, secret) {
			p.add(field, "is a demo token published with webhook-outbox, which anyone can use: set a secret of your own (for example: openssl rand -hex 32); only `make run` accepts it (%s=1)", AllowDemoTokensEnv)
		}
	}
	if !c.DisableAdmin {
		demo("admin_token", c.AdminToken)
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		field := fmt.Sprintf("routes[%d] (%s).auth", i, r.Name)
		many := func(mode, one, plural, single string, list []string) {
			demo(field+"."+mode+"."+one, single)
			for j, v := range list {
				demo(fmt.Sprintf("%s.%s.%s[%d]", field, mode, plural, j), v)
			}
		}
		a := &r.Auth
		switch {
		case a.Basic != nil:
			many("basic", "password", "passwords", a.Basic.Password, a.Basic.Passwords)
		case a.Header != nil:
			many("header", "value", "values", a.Header.Value, a.Header.Values)
		case a.HMAC != nil:
			many("hmac", "secret", "secrets", a.HMAC.Secret, a.HMAC.Secrets)
		}
	}
	return errors.Join(p.errs...)
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
		own := r.Auth.AuthHeaders()
		for j, name := range r.KeepHeaders {
			f := fmt.Sprintf("%s.keep_headers[%d]", field, j)
			switch {
			case !httpguts.ValidHeaderFieldName(name):
				p.add(f, "%q is not a valid header name", name)
			case slices.Contains(own, http.CanonicalHeaderKey(name)):
				p.add(f, "%s carries this route's own credential or signature, which is never stored", http.CanonicalHeaderKey(name))
			}
		}
		for j, s := range r.IdempotencyKey {
			if s.Header == "" {
				continue
			}
			if !r.StoresHeader(s.Header) {
				p.add(fmt.Sprintf("%s.idempotency_key[%d].header", field, j), "%s carries a credential or a signature; it cannot be an idempotency key, which is stored, logged and sent to the target (list it in keep_headers if it holds no secret)", http.CanonicalHeaderKey(s.Header))
			}
		}
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil {
			p.add("metrics_listen", "%q is not a listen address such as 127.0.0.1:9100", c.MetricsListen)
		} else if c.MetricsListen == c.Listen && port != "0" { // port 0 picks a free port each
			p.add("metrics_listen", "is the same address as listen; leave it out to serve /metrics on listen")
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

// RedactURL returns s fit to show in messages, the CLI and the admin API:
// the password of a user:password@ part, every query value and the
// fragment are replaced with xxxxx, and so is every path segment that looks
// like a token (see looksLikeToken), as in Slack-style
// https://hooks.example/services/T0/B0/<token> URLs.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		var b strings.Builder
		b.WriteString(u.Scheme + "://")
		if u.User != nil {
			b.WriteString(url.PathEscape(u.User.Username()))
			if _, hasPassword := u.User.Password(); hasPassword {
				b.WriteString(":xxxxx")
			}
			b.WriteString("@")
		}
		b.WriteString(u.Host)
		segments := strings.Split(u.EscapedPath(), "/")
		for i, seg := range segments {
			if plain, err := url.PathUnescape(seg); err == nil && looksLikeToken(plain) {
				segments[i] = "xxxxx"
			}
		}
		b.WriteString(strings.Join(segments, "/"))
		if u.RawQuery != "" || u.ForceQuery {
			params := strings.Split(u.RawQuery, "&")
			for i, param := range params {
				if name, value, ok := strings.Cut(param, "="); ok && value != "" {
					params[i] = name + "=xxxxx"
				}
			}
			b.WriteString("?" + strings.Join(params, "&"))
		}
		if u.Fragment != "" {
			b.WriteString("#xxxxx")
		}
		return b.String()
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

// looksLikeToken reports whether a URL path segment looks like a secret
// rather than a name: at least 16 characters of the alphabets tokens are
// written in (hex, base64, base64url, UUIDs), with at least three digits
// and three letters. "events" and "genesys-v2" are names; a UUID, a hex
// digest or a random base64 string is not.
func looksLikeToken(seg string) bool {
	if len(seg) < 16 {
		return false
	}
	digits, letters := 0, 0
	for _, r := range seg {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			letters++
		case strings.ContainsRune("-_.~+=", r):
		default:
			return false
		}
	}
	return digits >= 3 && letters >= 3
}
