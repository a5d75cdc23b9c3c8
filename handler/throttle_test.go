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
	adm := th.admit(key)
	if adm.wait > 0 {
		return adm.wait
	}
	th.fail(key)
	return 0
}

// TestThrottleBurstThenRefill: an address may fail Burst times in a row;
// after that it still gets LockedTries checks per Every (the operator's
// chance when a guesser shares the address), then it must wait. Tokens and
// tries come back with time.
func TestThrottleBurstThenRefill(t *testing.T) {
	t.Parallel()
	th, clock := newTestThrottle(FailureLimit{})
	attacker := throttleKey(netip.MustParseAddr("203.0.113.9"))
	operator := throttleKey(netip.MustParseAddr("198.51.100.7"))
	for i := range DefaultAdminFailureBurst {
		if adm := th.admit(attacker); adm.wait != 0 || adm.locked {
			t.Fatalf("failure %d was refused or locked (%+v) within the burst", i+1, adm)
		}
		th.fail(attacker)
	}
	for i := range DefaultAdminLockedTries {
		adm := th.admit(attacker)
		if adm.wait != 0 || !adm.locked {
			t.Fatalf("locked try %d: %+v", i+1, adm)
		}
		th.fail(attacker)
	}
	tryEvery := DefaultAdminFailureEvery / DefaultAdminLockedTries
	if wait := guess(th, attacker); wait != tryEvery {
		t.Fatalf("after the burst and the locked tries: wait %s, want %s", wait, tryEvery)
	}
	// Another address is not affected.
	if adm := th.admit(operator); adm.wait != 0 || adm.locked {
		t.Errorf("operator: %+v", adm)
	}
	th.succeed(operator)
	// Half of that later: still blocked, for the rest.
	clock.add(tryEvery / 2)
	if wait := guess(th, attacker); wait != tryEvery-tryEvery/2 {
		t.Errorf("half way: wait %s", wait)
	}
	// Then one more locked try, and no second.
	clock.add(tryEvery - tryEvery/2)
	if adm := th.admit(attacker); adm.wait != 0 || !adm.locked {
		t.Errorf("after refill: %+v", adm)
	} else {
		th.fail(attacker)
	}
	if wait := guess(th, attacker); wait == 0 {
		t.Error("a second attempt was let through")
	}
	// The right token in a locked try forgets the address.
	clock.add(tryEvery)
	if adm := th.admit(attacker); adm.wait != 0 || !adm.locked {
		t.Fatalf("%+v", adm)
	}
	th.succeed(attacker)
	if th.size() != 0 {
		t.Errorf("%d addresses remembered after the success", th.size())
	}
}

// TestThrottleReservesOnFirstSight: concurrent requests reserve their token
// before the check, from an address's very first request on, so no more
// than the burst and the locked tries get through however many arrive at
// once.
func TestThrottleReservesOnFirstSight(t *testing.T) {
	t.Parallel()
	th, _ := newTestThrottle(FailureLimit{Burst: 5})
	key := throttleKey(netip.MustParseAddr("203.0.113.9"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	through := 0
	for range 200 {
		wg.Go(func() {
			if adm := th.admit(key); adm.wait == 0 {
				mu.Lock()
				through++
				mu.Unlock()
				th.fail(key)
			}
		})
	}
	wg.Wait()
	if want := 5 + DefaultAdminLockedTries; through != want {
		t.Errorf("%d concurrent guesses from a new address got through, want %d (burst 5, %d locked tries)", through, want, DefaultAdminLockedTries)
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
	if adm := th.admit(throttleKey(netip.MustParseAddr("198.51.100.7"))); adm.wait != 0 || adm.locked {
		t.Errorf("operator refused after a flood: %+v", adm)
	}
	// IPv6 addresses in one /64 share a bucket: a host cannot rotate
	// through its own /64 to escape it.
	th6, _ := newTestThrottle(FailureLimit{})
	for i := range DefaultAdminFailureBurst + DefaultAdminLockedTries {
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
