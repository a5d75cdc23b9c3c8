package jobs

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithinJitterAndCap(t *testing.T) {
	t.Parallel()
	initial, maxBackoff := 2*time.Second, time.Hour
	for attempt := 1; attempt <= 20; attempt++ {
		base := initial << (attempt - 1)
		if attempt > 12 || base > maxBackoff {
			base = maxBackoff
		}
		lo, hi := time.Duration(float64(base)*0.9), min(time.Duration(float64(base)*1.1), maxBackoff)
		var sawLow, sawHigh bool
		for range 2000 {
			d := Backoff(initial, maxBackoff, attempt)
			if d < lo || d > hi {
				t.Fatalf("attempt %d: backoff %s outside [%s, %s]", attempt, d, lo, hi)
			}
			sawLow = sawLow || d < base
			sawHigh = sawHigh || d > base
		}
		if !sawLow || (!sawHigh && base < maxBackoff) {
			t.Errorf("attempt %d: no jitter seen around %s", attempt, base)
		}
	}
}

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
		{"Sat, 28 Nov 2026 12:01:00 GMT", time.Minute, true},
		{"Sat, 28 Nov 2026 11:00:00 GMT", 0, true}, // in the past: now
		{"-5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, c := range cases {
		got, ok := parseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %s %v, want %s %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
