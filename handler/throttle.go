package handler

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// FailureLimit tunes how failed admin authentications are slowed down. Each
// client address has a bucket of Burst failures that refills by one every
// Every. While an address's bucket is empty, its admin requests are
// answered 429 with Retry-After before their credentials are looked at, so
// a blocked guesser learns nothing. Other addresses are not affected.
type FailureLimit struct {
	// Burst is how many failures an address may make in a row.
	Burst int
	// Every is how long it takes to earn one more attempt.
	Every time.Duration
	// MaxAddresses bounds memory: past it, the address that failed least
	// recently is forgotten.
	MaxAddresses int
}

// Defaults of FailureLimit: ten wrong tokens in a row, then one every ten
// seconds, per address; at most 10 000 addresses remembered (about 1 MB).
const (
	DefaultAdminFailureBurst   = 10
	DefaultAdminFailureEvery   = 10 * time.Second
	DefaultAdminFailureMaxAddr = 10_000
)

func (l FailureLimit) withDefaults() FailureLimit {
	if l.Burst <= 0 {
		l.Burst = DefaultAdminFailureBurst
	}
	if l.Every <= 0 {
		l.Every = DefaultAdminFailureEvery
	}
	if l.MaxAddresses <= 0 {
		l.MaxAddresses = DefaultAdminFailureMaxAddr
	}
	return l
}

// failureThrottle counts failed authentications per address in token
// buckets, in bounded memory.
//
// An address with no failures is not tracked, so the operator's own
// requests cost nothing. Once an address has failed, each of its requests
// that carries credentials reserves a token before it is checked, and a
// success forgets the address; so many concurrent guesses from a known
// guesser cannot slip past the bucket.
type failureThrottle struct {
	limit FailureLimit
	now   func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]*list.Element
	lru     *list.List // of *bucket; front is the most recently used
}

type bucket struct {
	key    netip.Prefix
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newFailureThrottle(limit FailureLimit) *failureThrottle {
	return &failureThrottle{
		limit:   limit.withDefaults(),
		now:     time.Now,
		entries: map[netip.Prefix]*list.Element{},
		lru:     list.New(),
	}
}

// refill brings b's tokens up to now.
func (t *failureThrottle) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(float64(t.limit.Burst), b.tokens+float64(elapsed)/float64(t.limit.Every))
	}
	b.at = now
}

// admit is called for a request that carries credentials, before they are
// checked. It returns wait > 0 when key has no attempts left, and reserved
// when it took one of key's tokens.
func (t *failureThrottle) admit(key netip.Prefix) (reserved bool, wait time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.entries[key]
	if !ok {
		return false, 0
	}
	b := el.Value.(*bucket)
	now := t.now()
	t.refill(b, now)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(t.limit.Every))
	}
	b.tokens--
	t.lru.MoveToFront(el)
	return true, 0
}

// fail records a failed authentication from key. reserved says whether
// admit took its token already. It reports whether key has just run out.
func (t *failureThrottle) fail(key netip.Prefix, reserved bool) (exhausted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	el, ok := t.entries[key]
	if !ok {
		b := &bucket{key: key, tokens: float64(t.limit.Burst), at: now}
		el = t.lru.PushFront(b)
		t.entries[key] = el
		for t.lru.Len() > t.limit.MaxAddresses {
			oldest := t.lru.Back()
			delete(t.entries, oldest.Value.(*bucket).key)
			t.lru.Remove(oldest)
		}
	}
	b := el.Value.(*bucket)
	t.refill(b, now)
	if !ok || !reserved { // a reservation is lost if its bucket was forgotten
		b.tokens--
	}
	t.lru.MoveToFront(el)
	return b.tokens < 1
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
