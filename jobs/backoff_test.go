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
