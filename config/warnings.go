package config

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Warnings lists settings that are valid but weaken security, each as one
// sentence that says what to do. serve logs them at startup and
// `outbox config check` prints them. (A route with auth none: true is
// reported by intake and config check themselves.)
func (c *Config) Warnings() []string {
	var out []string
	if c.TLS == nil && len(c.TrustedProxies) == 0 && !IsLoopback(c.Listen) {
		out = append(out, fmt.Sprintf("listen %s is reachable from other hosts over plain HTTP, with no tls and no trusted_proxies: the admin token and senders' credentials would cross the network in cleartext; set tls, or put a TLS-terminating proxy in front and list it in trusted_proxies", c.Listen))
	}
	for _, r := range c.Routes {
		for i, s := range r.IdempotencyKey {
			if s.Header == "" {
				continue
			}
			name := http.CanonicalHeaderKey(s.Header)
			switch {
			case r.Auth.HMAC != nil:
				out = append(out, fmt.Sprintf("route %s: idempotency_key[%d] reads the %s header, which the hmac signature does not cover: whoever captures one signed request can send it again under new keys, and each is stored and delivered; take the key from the body (json, composite or body_sha256), which the signature covers", r.Name, i, name))
			case r.Auth.StandardWebhooks != nil && name != "Webhook-Id":
				out = append(out, fmt.Sprintf("route %s: idempotency_key[%d] reads the %s header, which the Standard Webhooks signature does not cover: whoever captures one signed request can send it again under new keys until its timestamp expires; use webhook-id, which the signature covers", r.Name, i, name))
			}
		}
	}
	return out
}

// IsLoopback reports whether the listen address addr (host:port) accepts
// connections from this host only: a loopback IP address, or localhost. An
// empty host listens on every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.Unmap().IsLoopback()
}
