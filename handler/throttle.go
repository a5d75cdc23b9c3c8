package handler

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// FailureLimit tunes how failed admin authentications are slowed down. Each
// client address has a bucket of Burst failures that refills by one every
// Every. While an address's bucket is empty, its requests are answered 429
// with Retry-After, except that LockedTries of them per Every are still
// checked: the right token among them is let in (and lifts the slow-down),
// a wrong one gets 429 too. So a guesser who shares the operator's address
// (a NAT, or a proxy missing from trusted_proxies) cannot lock the operator
// out for long, and gains only LockedTries more guesses per Every. Other
// addresses are not affected.
type FailureLimit struct {
	// Burst is how many failures an address may make in a row.
	Burst int
	// Every is how long it takes to earn one more attempt.
	Every time.Duration
	// LockedTries is how many requests of a slowed-down address are still
	// checked per Every, so that the right token gets in.
	LockedTries int
	// MaxAddresses bounds memory: past it, the address seen least recently
	// is forgotten.
	MaxAddresses int
}

// Defaults of FailureLimit: ten wrong tokens in a row, then one every ten
// seconds, plus three checks per ten seconds where the right token wins,
// per address; at most 10 000 addresses remembered (about 1 MB).
const (
	DefaultAdminFailureBurst   = 10
	DefaultAdminFailureEvery   = 10 * time.Second
	DefaultAdminLockedTries    = 3
	DefaultAdminFailureMaxAddr = 10_000
)

func (l FailureLimit) withDefaults() FailureLimit {
	if l.Burst <= 0 {
		l.Burst = DefaultAdminFailureBurst
	}
	if l.Every <= 0 {
		l.Every = DefaultAdminFailureEvery
	}
	if l.LockedTries <= 0 {
		l.LockedTries = DefaultAdminLockedTries
	}
	if l.MaxAddresses <= 0 {
		l.MaxAddresses = DefaultAdminFailureMaxAddr
	}
	return l
}

// failureThrottle counts failed authentications per address in token
// buckets, in bounded memory.
//
// Every request that carries credentials reserves a token before it is
// checked, from its address's first sight on, so that many concurrent
// guesses from a new address cannot slip past the bucket; a success forgets
// the address.
type failureThrottle struct {
	limit FailureLimit
	now   func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element
	lru     *list.List // of *bucket; front is the most recently used
}

type bucket struct {
	key    netip.Prefix
	tokens float64 // failures the address may still make
	locked float64 // checks left while tokens is empty
	at     time.Time
}

// admission is the throttle's verdict on a request about to be checked.
type admission struct {
	// wait > 0: refuse the request without checking it, for this long.
	wait time.Duration
	// locked: the address is slowed down; the request is checked, but a
	// wrong token is answered 429 rather than 401.
	locked bool
}

func newFailureThrottle(limit FailureLimit) *failureThrottle {
	return &failureThrottle{
		limit:   limit.withDefaults(),
		now:     time.Now,
		entries: map[netip.Prefix]*list.Element{},
		lru:     list.New(),
	}
}

// refill brings b's buckets up to now.
func (t *failureThrottle) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		earned := float64(elapsed) / float64(t.limit.Every)
		b.tokens = min(float64(t.limit.Burst), b.tokens+earned)
		b.locked = min(float64(t.limit.LockedTries), b.locked+earned*float64(t.limit.LockedTries))
	}
	b.at = now
}

// entry returns key's bucket, brought up to now, creating it on first
// sight, and marks it the most recently used.
func (t *failureThrottle) entry(key netip.Prefix) *bucket {
	now := t.now()
	el, ok := t.entries[key]
	if !ok {
		b := &bucket{key: key, tokens: float64(t.limit.Burst), locked: float64(t.limit.LockedTries), at: now}
		el = t.lru.PushFront(b)
		t.entries[key] = el
		for t.lru.Len() > t.limit.MaxAddresses {
			oldest := t.lru.Back()
			delete(t.entries, oldest.Value.(*bucket).key)
			t.lru.Remove(oldest)
		}
	}
	t.lru.MoveToFront(el)
	b := el.Value.(*bucket)
	t.refill(b, now)
	return b
}

// admit is called for a request that carries credentials, before they are
// checked. It takes one of key's tokens (the attempt is charged now, and
// refunded by succeed), or one of its locked tries, or says how long to
// wait.
func (t *failureThrottle) admit(key netip.Prefix) admission {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.entry(key)
	// Tokens earned in fractions may fall a rounding error short of 1.
	const whole = 1 - 1e-9
	switch {
	case b.tokens >= whole:
		b.tokens--
		return admission{}
	case b.locked >= whole:
		b.locked--
		return admission{locked: true}
	}
	every := float64(t.limit.Every)
	untilToken := (1 - b.tokens) * every
	untilTry := (1 - b.locked) * every / float64(t.limit.LockedTries)
	return admission{wait: max(time.Duration(min(untilToken, untilTry)), time.Millisecond)}
}

// fail records a failed authentication from key, whose attempt admit has
// charged already. It reports whether key has just run out.
func (t *failureThrottle) fail(key netip.Prefix) (exhausted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, known := t.entries[key]
	b := t.entry(key)
	if !known { // forgotten since admit, with its charge: charge again
		b.tokens--
	}
	return b.tokens < 1-1e-9
}

// succeed forgets key: it proved it holds the token.
func (t *failureThrottle) succeed(key netip.Prefix) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.entries[key]; ok {
		delete(t.entries, key)
		t.lru.Remove(el)
	}
}

// size is how many addresses are remembered.
func (t *failureThrottle) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}
