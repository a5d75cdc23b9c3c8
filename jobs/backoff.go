package jobs

import (
	"math/rand/v2"
	"time"
)

// Backoff returns how long to wait after the attempt-th failed attempt:
// initial × 2^(attempt-1), capped at maxBackoff, with jitter of at most ±10%
// so that events which failed together do not retry together. The jittered
// value never exceeds maxBackoff.
func Backoff(initial, maxBackoff time.Duration, attempt int) time.Duration {
	d := initial
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	return min(d+jitter, maxBackoff)
}
