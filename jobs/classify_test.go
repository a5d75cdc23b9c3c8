package jobs

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{" 0 ", 0, true},
		{"007", 7 * time.Second, true},
		{"Sat, 28 Nov 2026 12:01:00 GMT", time.Minute, true},
		{"Sat, 28 Nov 2026 11:00:00 GMT", 0, true}, // in the past: now
		{"Sunday, 28-Nov-27 12:00:00 GMT", maxRetryAfter, true},
		{"Fri, 31 Dec 9999 23:59:59 GMT", maxRetryAfter, true},
		// A very long time, not "no Retry-After".
		{"31536000", maxRetryAfter, true},
		{"31536001", maxRetryAfter, true},
		{"9223372036854775807", maxRetryAfter, true},
		{"99999999999999999999", maxRetryAfter, true},
		{"99999999999999999999999999999999999999999", maxRetryAfter, true},
		{"-5", 0, false},
		{"+5", 0, false},
		{"1.5", 0, false},
		{"1e9", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"   ", 0, false},
	}
	for _, c := range cases {
		got, ok := parseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %s %v, want %s %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestClassifyResponse(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		status     int
		header     http.Header
		body       string
		verdict    Verdict
		retryAfter time.Duration
		message    string // the whole message, or its start when it ends in "…"
	}{
		{status: 200, verdict: Delivered, message: "target answered 200 OK after 12ms"},
		{status: 201, verdict: Delivered, message: "target answered 201 Created after 12ms"},
		{status: 204, verdict: Delivered, message: "target answered 204 No Content after 12ms"},
		{status: 299, verdict: Delivered, message: "target answered 299 (unknown status) after 12ms"},
		{status: 301, header: http.Header{"Location": {"https://elsewhere/x"}}, verdict: Permanent,
			message: `target answered 301 Moved Permanently after 12ms (redirect to "https://elsewhere/x": outbox does not follow redirects, point target.url at the final address)`},
		{status: 304, verdict: Permanent, message: `target answered 304 Not Modified after 12ms (redirect to "": …`},
		{status: 400, body: "bad field\n  x", verdict: Permanent, message: "target answered 400 Bad Request after 12ms: bad field x"},
		{status: 401, verdict: Permanent, message: "target answered 401 Unauthorized after 12ms"},
		{status: 404, verdict: Permanent, message: "target answered 404 Not Found after 12ms"},
		{status: 408, verdict: Retry, message: "target answered 408 Request Timeout after 12ms"},
		{status: 410, verdict: Permanent, message: "target answered 410 Gone after 12ms"},
		{status: 418, verdict: Permanent, message: "target answered 418 I'm a teapot after 12ms"},
		{status: 425, verdict: Retry, message: "target answered 425 Too Early after 12ms"},
		{status: 429, verdict: Retry, message: "target answered 429 Too Many Requests after 12ms"},
		{status: 429, header: http.Header{"Retry-After": {"20"}}, verdict: Snooze, retryAfter: 20 * time.Second,
			message: "target answered 429 Too Many Requests after 12ms"},
		{status: 429, header: http.Header{"Retry-After": {"Sat, 28 Nov 2026 12:00:30 GMT"}}, verdict: Snooze, retryAfter: 30 * time.Second,
			message: "target answered 429 Too Many Requests after 12ms"},
		{status: 429, header: http.Header{"Retry-After": {"whenever"}}, verdict: Retry, message: "target answered 429 Too Many Requests after 12ms"},
		{status: 500, body: "database is down", verdict: Retry, message: "target answered 500 Internal Server Error after 12ms: database is down"},
		{status: 502, verdict: Retry, message: "target answered 502 Bad Gateway after 12ms"},
		{status: 503, verdict: Retry, message: "target answered 503 Service Unavailable after 12ms"},
		{status: 503, header: http.Header{"Retry-After": {"99999999999999999999"}}, verdict: Snooze, retryAfter: maxRetryAfter,
			message: "target answered 503 Service Unavailable after 12ms"},
		{status: 503, header: http.Header{"Retry-After": {"-1"}}, verdict: Retry, message: "target answered 503 Service Unavailable after 12ms"},
		{status: 504, verdict: Retry, message: "target answered 504 Gateway Timeout after 12ms"},
		{status: 599, verdict: Retry, message: "target answered 599 (unknown status) after 12ms"},
		// Retry-After is honoured on 429 and 503 only.
		{status: 500, header: http.Header{"Retry-After": {"20"}}, verdict: Retry, message: "target answered 500 Internal Server Error after 12ms"},
		{status: 500, body: strings.Repeat("é", maxErrorBody/2), verdict: Retry,
			message: "target answered 500 Internal Server Error after 12ms: " + strings.Repeat("é", maxErrorBody/2) + "…"},
		{status: 500, body: "\xff\xfe oops", verdict: Retry, message: "target answered 500 Internal Server Error after 12ms: \uFFFD oops"},
	}
	for _, c := range cases {
		header := c.header
		if header == nil {
			header = http.Header{}
		}
		body := []byte(c.body)
		if len(body) > maxErrorBody {
			body = body[:maxErrorBody]
		}
		got := classifyResponse(&http.Response{StatusCode: c.status, Header: header}, body, 12*time.Millisecond, now)
		if got.Verdict != c.verdict || got.Status != c.status || got.RetryAfter != c.retryAfter || got.CutOff {
			t.Errorf("%d %v: verdict %s status %d retry-after %s cut-off %v, want %s %d %s false",
				c.status, c.header, got.Verdict, got.Status, got.RetryAfter, got.CutOff, c.verdict, c.status, c.retryAfter)
		}
		if prefix, ok := strings.CutSuffix(c.message, "…"); ok && !strings.HasSuffix(c.message, "é…") {
			if !strings.HasPrefix(got.Message, prefix) {
				t.Errorf("%d: message %q, want it to start %q", c.status, got.Message, prefix)
			}
		} else if got.Message != c.message {
			t.Errorf("%d: message %q, want %q", c.status, got.Message, c.message)
		}
	}
}
