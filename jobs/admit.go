package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/webhook-outbox/webhook-outbox/jobs/fleet"
)

// maxRateWait is the longest a delivery waits for the route's rate limit
// while holding a place under its concurrency limit. Past it, the delivery
// is snoozed instead, so that a slow rate_limit does not tie up the
// route's places.
const maxRateWait = time.Second

// admit decides whether a delivery may be sent now, once it holds a place
// under the route's limit. It returns the fleet circuit breaker's granted
// permit, which the caller settles with the outcome, or the job's result:
// a snooze while the route's circuit is open or its share of the rate
// limit is used up (a snooze does not use an attempt), or a cancellation
// once the event's give_up_after deadline has passed with the circuit
// still open.
func (d *Deliverer) admit(ctx context.Context, log *slog.Logger, r *route, deadline time.Time) (fleet.Permit, error) {
	now := d.now()
	p := d.limits.breaker.Allow(ctx, r.cfg.Name)
	if !p.OK {
		if !now.Before(deadline) {
			c := d.limits.breaker.State(r.cfg.Name)
			msg := fmt.Sprintf("gave up: not delivered within give_up_after (%s) of intake; the circuit breaker for route %s is %s after the target failed repeatedly; last failure: %s",
				r.cfg.Retry.GiveUpAfter.D(), r.cfg.Name, c.State, c.LastError)
			log.Warn("delivery deadline passed while the circuit is open; cancelled", "breaker", c.State)
			return p, river.JobCancel(errors.New(msg))
		}
		wait := max(min(p.Wait, deadline.Sub(now)), minSnooze)
		log.Debug("circuit breaker holds the delivery back; snoozing without using an attempt", "snooze", wait.String())
		return p, river.JobSnooze(wait)
	}
	if p.Probe {
		log.Info("sending this delivery as the fleet circuit breaker's probe")
	}
	limiter := r.limits.lease.RateLimiter()
	if limiter == nil {
		return p, nil
	}
	res := limiter.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if !res.OK() {
		// The replica has no share of the rate yet (its lease is being
		// renewed, or the others hold it all for a moment).
		delay = fleet.ShortWait()
	}
	if delay > maxRateWait || !res.OK() {
		res.CancelAt(now)
		d.limits.breaker.Release(ctx, p)
		wait := max(min(delay, deadline.Sub(now)), minSnooze)
		log.Debug("route rate limit reached; snoozing without using an attempt", "snooze", wait.String())
		return fleet.Permit{}, river.JobSnooze(wait)
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			res.CancelAt(d.now())
			d.limits.breaker.Release(context.WithoutCancel(ctx), p)
			return fleet.Permit{}, ctx.Err()
		}
	}
	return p, nil
}
