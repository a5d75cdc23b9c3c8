package handler

import (
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestThrottle(limit FailureLimit) (*failureThrottle, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	th := newFailureThrottle(limit)
	th.now = clock.now
	return th, clock
}

// guess runs one wrong attempt the way adminGuard does, and returns the
// wait it was told, or 0 when the attempt was let through (and failed).
func guess(th *failureThrottle, key netip.Prefix) time.Duration {
	reserved, wait := th.admit(key)
	if wait > 0 {
		return wait
	}
	th.fail(key, reserved)
	return 0
}

func TestThrottleBurstThenRefill(t *testing.T) {
	t.Parallel()
	th, clock := newTestThrottle(FailureLimit{})
	attacker := throttleKey(netip.MustParseAddr("203.0.113.9"))
	operator := throttleKey(netip.MustParseAddr("198.51.100.7"))
	for i := range DefaultAdminFailureBurst {
		if wait := guess(th, attacker); wait != 0 {
			t.Fatalf("failure %d was refused (wait %s) within the burst", i+1, wait)
		}
	}
	wait := guess(th, attacker)
	if wait != DefaultAdminFailureEvery {
		t.Fatalf("after the burst: wait %s, want %s", wait, DefaultAdminFailureEvery)
	}
	// Another address is not affected, and its success is not charged.
	if reserved, wait := th.admit(operator); reserved || wait != 0 {
		t.Errorf("operator admitted with reserved=%v wait=%s", reserved, wait)
	}
	// Half the interval later, half a token: still blocked, for the rest.
	clock.add(DefaultAdminFailureEvery / 2)
	if wait := guess(th, attacker); wait != DefaultAdminFailureEvery/2 {
		t.Errorf("half way: wait %s", wait)
	}
	// One interval: exactly one more attempt.
	clock.add(DefaultAdminFailureEvery / 2)
	if wait := guess(th, attacker); wait != 0 {
		t.Errorf("after refill: wait %s", wait)
	}
	if wait := guess(th, attacker); wait == 0 {
		t.Error("a second attempt after one interval was let through")
	}
	// A success forgets the address.
	clock.add(DefaultAdminFailureEvery)
	if _, wait := th.admit(attacker); wait != 0 {
		t.Fatalf("wait %s", wait)
	}
	th.succeed(attacker)
	if th.size() != 0 {
		t.Errorf("%d addresses remembered after the success", th.size())
	}
}

// TestThrottleConcurrentGuesses: once an address has failed, concurrent
// requests reserve their token before the check, so no more than the
// burst get through however many arrive at once.
func TestThrottleConcurrentGuesses(t *testing.T) {
	t.Parallel()
	th, _ := newTestThrottle(FailureLimit{Burst: 5})
	key := throttleKey(netip.MustParseAddr("203.0.113.9"))
	guess(th, key)
	var wg sync.WaitGroup
	var mu sync.Mutex
	through := 0
	for range 200 {
		wg.Go(func() {
			reserved, wait := th.admit(key)
			if wait == 0 {
				mu.Lock()
				through++
				mu.Unlock()
				th.fail(key, reserved)
			}
		})
	}
	wg.Wait()
	if through != 4 {
		t.Errorf("%d concurrent guesses got through, want 4 (burst 5, one used)", through)
	}
}

// TestThrottleMemoryIsBounded floods the throttle with distinct addresses:
// it remembers at most MaxAddresses, and the operator's address, which never
// failed, is never refused.
func TestThrottleMemoryIsBounded(t *testing.T) {
	t.Parallel()
	th, _ := newTestThrottle(FailureLimit{MaxAddresses: 1000})
	for i := range 100_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		guess(th, throttleKey(a))
	}
	if n := th.size(); n != 1000 {
		t.Errorf("%d addresses remembered, want 1000", n)
	}
	if _, wait := th.admit(throttleKey(netip.MustParseAddr("198.51.100.7"))); wait != 0 {
		t.Errorf("operator refused after a flood: wait %s", wait)
	}
	// IPv6 addresses in one /64 share a bucket: a host cannot rotate
	// through its own /64 to escape it.
	th6, _ := newTestThrottle(FailureLimit{})
	for i := range DefaultAdminFailureBurst {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)})
		guess(th6, throttleKey(a))
	}
	if wait := guess(th6, throttleKey(netip.MustParseAddr("2001:db8::ffff:1"))); wait == 0 {
		t.Error("a new address in the same /64 was not slowed down")
	}
	if th6.size() != 1 {
		t.Errorf("%d buckets for one /64", th6.size())
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	cases := []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.9:5555", nil, "203.0.113.9"},
		{"203.0.113.9:5555", []string{"1.2.3.4"}, "203.0.113.9"},                     // untrusted peer: XFF ignored
		{"10.0.0.2:80", []string{"198.51.100.7"}, "198.51.100.7"},                    // one trusted proxy
		{"10.0.0.2:80", []string{"6.6.6.6, 198.51.100.7, 10.0.0.3"}, "198.51.100.7"}, // spoofed left entry ignored
		{"10.0.0.2:80", []string{"6.6.6.6", "198.51.100.7"}, "198.51.100.7"},         // several header lines
		{"10.0.0.2:80", []string{"10.0.0.5"}, "10.0.0.5"},                            // all trusted: the farthest
		{"10.0.0.2:80", []string{"garbage, 10.0.0.5"}, "10.0.0.5"},                   // unreadable: last readable hop
		{"10.0.0.2:80", nil, "10.0.0.2"},
		{"[::1]:80", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"[::ffff:10.0.0.2]:80", []string{"198.51.100.7"}, "198.51.100.7"}, // mapped IPv4 peer
		{"@", nil, "invalid IP"},
	}
	for _, c := range cases {
		r := &http.Request{RemoteAddr: c.remote, Header: http.Header{"X-Forwarded-For": c.xff}}
		if got := clientAddr(r, trusted).String(); got != c.want {
			t.Errorf("%s %q: got %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
}
