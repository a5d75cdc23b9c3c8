package jobs

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEchoedSecretsAreRedacted: a target that echoes the request (a
// debugging endpoint, a verbose error page) does not get the route's
// target.headers values, signatures, Basic password, URL query tokens or a
// whsec_ signing secret into last_error; a secret cut by the 200-byte limit
// is hidden too.
func TestEchoedSecretsAreRedacted(t *testing.T) {
	t.Parallel()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://elsewhere.example/?token="+r.URL.Query().Get("token"))
		status := http.StatusBadRequest
		if r.URL.Path == "/redirect" {
			status = http.StatusFound
		}
		w.WriteHeader(status)
		var b bytes.Buffer
		if n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/pad/")); err == nil {
			b.WriteString(strings.Repeat(".", n))
		}
		for _, h := range []string{"Authorization", "X-Api-Key", "Webhook-Signature", "X-Partner"} {
			b.WriteString(h[:3] + "=" + r.Header.Get(h) + " ")
		}
		b.WriteString("q=" + r.URL.Query().Get("token") + " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
		_, _ = w.Write(b.Bytes())
	}))
	defer target.Close()
	secrets := []string{"internal-bearer-token-1", "api-key-value-2", "v1,c2lnbmF0dXJlLTM=", "c2lnbmF0dXJlLTM=", "partner-pass-4", "query-token-5", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	send := func(path string) Outcome {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, target.URL+path+"?token=query-token-5", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer internal-bearer-token-1")
		req.Header.Set("X-Api-Key", "api-key-value-2")
		req.Header.Set("Webhook-Signature", "v1,c2lnbmF0dXJlLTM=")
		req.Header.Set("X-Partner", "Basic "+base64.StdEncoding.EncodeToString([]byte("partner:partner-pass-4")))
		req.Header.Set("X-Outbox-Key", "evt-1")
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		head := make([]byte, maxErrorBody)
		n, _ := io.ReadFull(resp.Body, head)
		return classifyResponse(resp, head[:n], time.Millisecond, time.Now())
	}
	// Paddings put the cut at 200 bytes inside the query token, the whsec_
	// secret, and the Bearer token.
	for _, path := range []string{"/", "/redirect", "/pad/40", "/pad/50", "/pad/185"} {
		out := send(path)
		for _, secret := range secrets {
			if strings.Contains(out.Message, secret) || strings.Contains(out.Message, secret[:len(secret)*2/3]) {
				t.Errorf("%s: last_error shows %q: %s", path, secret, out.Message)
			}
		}
		if !strings.Contains(out.Message, redacted) || !strings.HasPrefix(out.Message, "target answered ") {
			t.Errorf("%s: %s", path, out.Message)
		}
		t.Logf("%s", out.Message)
	}
	// What is no secret stays readable.
	if out := send("/"); !strings.Contains(out.Message, "X-A=[redacted] ") || !strings.Contains(out.Message, "whsec_[redacted]") {
		t.Errorf("%s", out.Message)
	}
}

// TestRedactSecretsCutShort: the start of a secret at the end of a body cut
// at maxErrorBody is hidden; an uncut body's ending is left alone.
func TestRedactSecretsCutShort(t *testing.T) {
	t.Parallel()
	secrets := []string{"internal-bearer-token-1"}
	if got := redactSecrets("token was internal-bea", secrets, true); got != "token was "+redacted {
		t.Errorf("cut: %q", got)
	}
	if got := redactSecrets("token was internal-bea", secrets, false); got != "token was internal-bea" {
		t.Errorf("not cut: %q", got)
	}
}
