package handler

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
)

// clientAddrs finds the address a request comes from (see clientAddr), and
// warns once when a peer that is not a trusted proxy sends X-Forwarded-For:
// that is usually a reverse proxy missing from trusted_proxies, and then
// every client behind it shares the proxy's address, its admin failure
// throttle and its intake budget.
type clientAddrs struct {
	trusted []netip.Prefix
	logger  *slog.Logger
	part    string // "intake" or "admin", for the warning
	warned  atomic.Bool
}

func newClientAddrs(trusted []netip.Prefix, logger *slog.Logger, part string) *clientAddrs {
	return &clientAddrs{trusted: trusted, logger: logger, part: part}
}

// of returns the address r comes from.
func (c *clientAddrs) of(r *http.Request) netip.Addr {
	if _, forwarded := r.Header["X-Forwarded-For"]; forwarded && !c.warned.Load() {
		if peer := peerAddr(r); peer.IsValid() && !isTrusted(peer, c.trusted) && c.warned.CompareAndSwap(false, true) {
			c.logger.Warn("a peer that is not in trusted_proxies sent X-Forwarded-For; if it is your reverse proxy, list it in trusted_proxies, or every client behind it shares one address (one admin failure throttle, one intake budget). Logged once.",
				"peer", peer.String(), "part", c.part)
		}
	}
	return clientAddr(r, c.trusted)
}

// peerAddr is the address of the connection's other end.
func peerAddr(r *http.Request) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return peer.Addr().Unmap()
}

// clientAddr returns the address a request comes from. It is the peer's
// address, unless the peer is one of the trusted reverse proxies: then it is
// the nearest address in X-Forwarded-For, read from the right, that is not a
// trusted proxy. Entries further left were written by the client itself and
// are never believed. It returns the zero Addr when the peer's address
// cannot be parsed.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := peer.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		entries := strings.Split(hops[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			hop, ok := parseHop(entries[j])
			if !ok {
				// A trusted proxy wrote something unreadable: stop at
				// the last hop that was readable.
				return addr
			}
			addr = hop
			if !isTrusted(hop, trusted) {
				return hop
			}
		}
	}
	return addr
}

// parseHop parses one X-Forwarded-For entry: an address, possibly with a
// port or in brackets.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// throttleKey groups addresses the way they are handed out: one IPv4
// address, or one IPv6 /64 (a single host often holds a whole /64).
func throttleKey(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// ClientAddr is the address a request comes from, as the admin guard and
// the logs see it: the peer, or the nearest untrusted X-Forwarded-For hop
// behind trusted proxies.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr { return clientAddr(r, trusted) }
