package handler_test

import (
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/webhook-outbox/webhook-outbox/handler"
)

// adminFrom sends an admin request as if from client through a trusted
// proxy on 127.0.0.1, with token as Bearer token ("" sends none).
func (b *adminBundle) adminFrom(t *testing.T, client, token, path string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.server.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// TestAdminFailuresAreSlowedDown guesses the admin token from one address
// behind a trusted proxy, with the default limits: ten wrong tokens answer
// 401, then every request from that address, the right token included,
// answers 429 with Retry-After, on /admin/ and /riverui/ alike. The operator
// at another address is not locked out, not even after a flood of guesses
// from hundreds of other addresses.
func TestAdminFailuresAreSlowedDown(t *testing.T) {
	t.Parallel()
	b := setupAdminWith(t, func(o *handler.RouterOptions) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	const attacker, operator = "203.0.113.9", "198.51.100.7"
	wrong := strings.Repeat("x", len(adminToken))
	for i := range handler.DefaultAdminFailureBurst {
		path := "/admin/v1/routes"
		if i%2 == 1 {
			path = "/riverui/api/jobs"
		}
		if status, _, raw := b.adminFrom(t, attacker, wrong, path); status != 401 || !strings.Contains(raw, "the admin token is wrong") {
			t.Fatalf("guess %d: %d %s", i+1, status, raw)
		}
	}
	// Past the burst, the locked tries (checked, but wrong ones answered
	// 429), then every request, the right token included, gets 429
	// before its token is looked at.
	for _, c := range []struct{ token, path string }{
		{wrong, "/admin/v1/routes"}, {wrong, "/riverui/"}, {wrong, "/admin/v1/routes"},
		{adminToken, "/admin/v1/routes"}, {adminToken, "/riverui/api/jobs"},
	} {
		status, header, raw := b.adminFrom(t, attacker, c.token, c.path)
		retry, _ := strconv.Atoi(header.Get("Retry-After"))
		if status != 429 || retry < 1 || retry > 10 || raw != `{"error":"too many failed admin authentications from this address; try again later"}`+"\n" {
			t.Errorf("attacker after the burst, %s: %d Retry-After=%q %s", c.path, status, header.Get("Retry-After"), raw)
		}
	}
	// The operator's token works from another address, with the Bearer
	// scheme in any case.
	req, _ := http.NewRequest(http.MethodGet, b.server.URL+"/admin/v1/routes", nil)
	req.Header.Set("X-Forwarded-For", operator)
	req.Header.Set("Authorization", "bEaReR "+adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("operator with a lower-case scheme: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Without credentials it is not a guess: the login prompt still comes.
	if status, header, _ := b.adminFrom(t, attacker, "", "/riverui/"); status != 401 || header.Get("WWW-Authenticate") == "" {
		t.Errorf("attacker without credentials: %d", status)
	}
	// A flood of guesses from many other addresses (TestThrottleMemoryIsBounded
	// floods the throttle itself with 100 000).
	for i := range 300 {
		client := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}).String()
		if status, _, raw := b.adminFrom(t, client, wrong, "/admin/v1/routes"); status != 401 {
			t.Fatalf("flood guess from %s: %d %s", client, status, raw)
		}
	}
	for _, path := range []string{"/admin/v1/routes", "/riverui/api/jobs"} {
		if status, _, raw := b.adminFrom(t, operator, adminToken, path); status != 200 {
			t.Errorf("operator %s: %d %.200s", path, status, raw)
		}
	}
	// X-Forwarded-For from an untrusted peer is not believed: without
	// trusted proxies, every request counts against 127.0.0.1.
	plain := setupAdmin(t)
	for i := range handler.DefaultAdminFailureBurst + handler.DefaultAdminLockedTries {
		plain.adminFrom(t, "192.0.2."+strconv.Itoa(i), wrong, "/admin/v1/routes")
	}
	if status, _, _ := plain.adminFrom(t, operator, adminToken, "/admin/v1/routes"); status != 429 {
		t.Errorf("a spoofed X-Forwarded-For escaped the throttle: %d", status)
	}
}

// TestRightTokenWinsOverTheThrottle: an operator who shares an address with
// a guesser (a NAT, or a proxy missing from trusted_proxies) is not locked
// out: once the guesser has used the burst, the next requests from the
// address are still checked (DefaultAdminLockedTries per interval), and the
// right token among them gets in and lifts the slow-down.
func TestRightTokenWinsOverTheThrottle(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t) // every request comes from 127.0.0.1
	wrong := strings.Repeat("x", len(adminToken))
	for i := range handler.DefaultAdminFailureBurst {
		if status, _, raw := b.adminFrom(t, "", wrong, "/admin/v1/routes"); status != 401 {
			t.Fatalf("guess %d: %d %s", i+1, status, raw)
		}
	}
	if status, _, raw := b.adminFrom(t, "", adminToken, "/admin/v1/routes"); status != 200 {
		t.Fatalf("the right token after the guesser's burst: %d %s", status, raw)
	}
	// The address is forgotten: a wrong token is a plain 401 again.
	if status, _, raw := b.adminFrom(t, "", wrong, "/admin/v1/routes"); status != 401 {
		t.Errorf("after the operator's success: %d %s", status, raw)
	}
}
