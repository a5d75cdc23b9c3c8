package handler

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// intakeGate bounds the webhook requests intake handles at once, so that
// no anonymous client can take the capacity that authenticated senders
// need.
//
// Every request holds one of max_inflight_requests slots while it is
// handled. A request whose sender is not yet authenticated while its body
// is read (a route with auth none: true, or hmac and standard_webhooks,
// which need the body to check the signature) also holds an anonymous
// slot until its body is in and checked. Anonymous slots are bounded three
// ways: half of max_inflight_requests in all, a quarter on one route, and a
// sixteenth from one client address on one route. So anonymous clients
// leave half the capacity to senders authenticated by their headers (basic,
// header), a flood on one route leaves room on the others, and one address
// cannot fill a route. Requests authenticated by their headers are checked
// before they take a slot, so a client without credentials never holds one
// on such a route.
type intakeGate struct {
	max      int64
	inflight atomic.Int64

	anonMax, anonRouteMax, anonClientMax int

	mu         sync.Mutex
	anon       int
	anonRoute  map[string]int
	anonClient map[anonKey]int
}

type anonKey struct {
	route  string
	client netip.Prefix
}

// Which anonymous budget is full, for the 429's message.
const (
	anonAdmitted = iota
	anonFullEverywhere
	anonFullRoute
	anonFullClient
)

func newIntakeGate(maxInflight int) *intakeGate {
	return &intakeGate{
		max:           int64(maxInflight),
		anonMax:       max(1, maxInflight/2),
		anonRouteMax:  max(1, maxInflight/4),
		anonClientMax: max(1, maxInflight/16),
		anonRoute:     map[string]int{},
		anonClient:    map[anonKey]int{},
	}
}

// enter takes a slot, or reports false when all are taken.
func (g *intakeGate) enter() bool {
	if g.inflight.Add(1) > g.max {
		g.inflight.Add(-1)
		return false
	}
	return true
}

func (g *intakeGate) leave() { g.inflight.Add(-1) }

// enterAnon takes an anonymous slot for a request to route from client. It
// returns anonAdmitted and the function that gives the slot back, or which
// budget is full.
func (g *intakeGate) enterAnon(route string, client netip.Prefix) (int, func()) {
	key := anonKey{route, client}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.anon >= g.anonMax:
		return anonFullEverywhere, nil
	case g.anonRoute[route] >= g.anonRouteMax:
		return anonFullRoute, nil
	case g.anonClient[key] >= g.anonClientMax:
		return anonFullClient, nil
	}
	g.anon++
	g.anonRoute[route]++
	g.anonClient[key]++
	released := false
	return anonAdmitted, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if released {
			return
		}
		released = true
		g.anon--
		// Entries at zero are deleted, so the maps hold only what is in
		// flight.
		if g.anonRoute[route]--; g.anonRoute[route] == 0 {
			delete(g.anonRoute, route)
		}
		if g.anonClient[key]--; g.anonClient[key] == 0 {
			delete(g.anonClient, key)
		}
	}
}
