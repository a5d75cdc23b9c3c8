package jobs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// Verdict is what a delivery attempt's result means for the job.
type Verdict int

const (
	// Delivered: the target answered 2xx.
	Delivered Verdict = iota
	// Retry: a transient failure; retry with backoff, using an attempt.
	Retry
	// Snooze: the target asked us to come back later (429 or 503 with
	// Retry-After); wait that long without using an attempt.
	Snooze
	// Permanent: retrying cannot help (a 4xx such as 400, 401 or 410).
	Permanent
)

func (v Verdict) String() string {
	switch v {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case Snooze:
		return "snoozed"
	case Permanent:
		return "cancelled"
	}
	return "unknown"
}

// Outcome is one classified delivery attempt.
type Outcome struct {
	Verdict Verdict
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// RetryAfter is the target's Retry-After, for Snooze.
	RetryAfter time.Duration
	// Message says what happened in words an operator reads in the
	// dead-letter view, for example "target answered 503 Service
	// Unavailable after 212ms: database is down".
	Message string
	// CutOff: no answer came because this replica ended the request (a
	// shutdown, or the delivery job's own deadline) before target.timeout.
	// It is not the target's failure, and the circuit breaker ignores it.
	CutOff bool
	// Duration is how long the request took, for the adaptive limiter.
	Duration time.Duration
}

// maxErrorBody is how much of a failing answer's body goes into the error.
const maxErrorBody = 200

// classifyResponse classifies an answer. body is at most the first
// maxErrorBody bytes of it.
func classifyResponse(resp *http.Response, body []byte, elapsed time.Duration, now time.Time) Outcome {
	o := Outcome{Status: resp.StatusCode}
	code := resp.StatusCode
	o.Message = fmt.Sprintf("target answered %d %s after %s", code, statusText(code), roundDuration(elapsed))
	secrets := sentSecrets(resp.Request)
	cut := len(body) >= maxErrorBody
	if snippet := bodySnippet(redactSecrets(string(body), secrets, cut), cut); snippet != "" {
		o.Message += ": " + snippet
	}
	switch {
	case code >= 200 && code < 300:
		o.Verdict = Delivered
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			o.Verdict = Snooze
			o.RetryAfter = d
		} else {
			o.Verdict = Retry
		}
	case code == http.StatusRequestTimeout || code == http.StatusTooEarly || code >= 500:
		o.Verdict = Retry
	case code >= 300 && code < 400:
		o.Verdict = Permanent
		o.Message += fmt.Sprintf(" (redirect to %q: outbox does not follow redirects, point target.url at the final address)", redactSecrets(resp.Header.Get("Location"), secrets, false))
	default:
		o.Verdict = Permanent
	}
	return o
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "(unknown status)"
}

// publicHeaders are the request headers outbox sets whose values are no
// secret. Every other header of a delivery is a target.headers value or a
// signature, which an error message must not repeat.
var publicHeaders = map[string]bool{
	"Content-Type": true, "Content-Length": true, "User-Agent": true, "Accept-Encoding": true,
	"X-Outbox-Route": true, "X-Outbox-Key": true, "X-Outbox-Attempt": true,
	"Webhook-Id": true, "Webhook-Timestamp": true,
}

// redacted replaces a secret in an error message.
const redacted = "[redacted]"

// minSecretLen is the shortest piece of a header value treated as a secret
// on its own; shorter words ("Bearer", "v1") are too common to hide.
const minSecretLen = 8

// sentSecrets lists what a target could echo back of the credentials
// outbox sent it: each target.headers value and signature, whole and by
// its space- or comma-separated parts (the token of "Bearer <token>"), the
// password of Basic credentials, and the target URL's password and query
// values.
func sentSecrets(req *http.Request) []string {
	if req == nil {
		return nil
	}
	var out []string
	add := func(v string) {
		if v = strings.TrimSpace(v); len(v) >= 4 {
			out = append(out, v)
		}
	}
	for name, values := range req.Header {
		if publicHeaders[name] {
			continue
		}
		for _, v := range values {
			add(v)
			for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' }) {
				if len(part) >= minSecretLen {
					add(part)
				}
				if plain, err := base64.StdEncoding.DecodeString(part); err == nil && strings.HasPrefix(strings.ToLower(v), "basic ") {
					_, pass, _ := strings.Cut(string(plain), ":")
					add(string(plain))
					add(pass)
				}
			}
			// A signature's value without its "v1," or "sha256=" label.
			if _, sig, ok := strings.Cut(v, ","); ok && len(sig) >= minSecretLen {
				add(sig)
			}
		}
	}
	if u := req.URL; u != nil {
		if pass, ok := u.User.Password(); ok {
			add(pass)
		}
		for _, values := range u.Query() {
			for _, v := range values {
				add(v)
			}
		}
	}
	// Longest first, so that a value is hidden whole before its parts.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// whsecPattern matches a Standard Webhooks signing secret, which a target
// that verifies outbox's signatures holds and might print.
var whsecPattern = regexp.MustCompile(`whsec_[A-Za-z0-9+/=]+`)

// redactSecrets replaces every secret in s, and any whsec_ secret, with
// [redacted]. When s was cut short, a secret's beginning at its very end
// is hidden too.
func redactSecrets(s string, secrets []string, cut bool) string {
	for _, secret := range secrets {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	s = whsecPattern.ReplaceAllString(s, "whsec_"+redacted)
	if cut {
		for _, secret := range secrets {
			for n := len(secret) - 1; n >= 4; n-- {
				if strings.HasSuffix(s, secret[:n]) {
					return s[:len(s)-n] + redacted
				}
			}
		}
	}
	return s
}

// bodySnippet makes the start of an answer's body fit for a one-line error;
// cut says there was more.
func bodySnippet(text string, cut bool) string {
	s := strings.ToValidUTF8(text, "\uFFFD")
	s = strings.Join(strings.Fields(s), " ")
	if cut {
		// Cut at a rune boundary and say that there was more.
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return s
}

// maxRetryAfter caps a Retry-After: a target's "come back in a century"
// means "a very long time", and the caller caps it again at max_backoff
// and the event's give_up_after deadline.
const maxRetryAfter = 365 * 24 * time.Hour

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP-date. A
// number of seconds too large for any clock is as long as maxRetryAfter,
// not absent: the target asked for a long wait, and a retry storm is what
// it asked not to get.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true // out of range: only digits, so too large
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// isDigits reports whether s is all ASCII digits: delay-seconds has no
// sign, no fraction and no exponent (RFC 9110, section 10.2.3).
func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// classifyError classifies an attempt that got no answer.
func classifyError(err error, target *url.URL, timeout, elapsed time.Duration) Outcome {
	o := Outcome{Verdict: Retry}
	host := target.Host
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostnameErr x509.HostnameError
	switch {
	case errors.Is(err, errTargetTimeout) || outbox.IsTimeout(err):
		o.Message = fmt.Sprintf("no answer within %s", timeout)
	case errors.As(err, &dnsErr):
		o.Message = fmt.Sprintf("cannot resolve host %s: %s", target.Hostname(), dnsErrText(dnsErr))
	case errors.Is(err, syscall.ECONNREFUSED):
		o.Message = fmt.Sprintf("connection refused by %s", host)
	case errors.Is(err, syscall.ECONNRESET):
		o.Message = fmt.Sprintf("connection reset by %s after %s", host, roundDuration(elapsed))
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		o.Message = fmt.Sprintf("no route to %s", host)
	case errors.As(err, &certErr) || errors.As(err, &unknownAuthority) || errors.As(err, &hostnameErr):
		o.Message = fmt.Sprintf("TLS certificate of %s not accepted: %s", host, innermost(err))
	default:
		o.Message = fmt.Sprintf("request to %s failed after %s: %s", host, roundDuration(elapsed), innermost(err))
	}
	return o
}

func dnsErrText(e *net.DNSError) string {
	if e.IsNotFound {
		return "no such host"
	}
	return e.Err
}

// innermost drops url.Error's "Post \"http://...\": " wrapping, which repeats
// what the message already says.
func innermost(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
