package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"golang.org/x/time/rate"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// maxRateWait is the longest a delivery waits for the route's rate limit
// while holding a worker slot. Past it, the delivery is snoozed instead, so
// that a slow rate_limit does not tie up the route's concurrency.
const maxRateWait = time.Second

// newRateLimiter returns a limiter for rate_limit deliveries per second, or
// nil for no limit. Its burst is one: deliveries start evenly spaced, even
// after an idle spell.
func newRateLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), 1)
}

// admit decides whether a delivery may be sent now. It returns a granted
// permit, which the caller settles with the outcome, or the job's result:
// a snooze while the route's circuit is open or its rate limit is used up
// (a snooze does not use an attempt), or a cancellation once the event's
// give_up_after deadline has passed with the circuit still open.
func (d *Deliverer) admit(ctx context.Context, log *slog.Logger, job *river.Job[outbox.DeliverArgs], r *route) (*permit, error) {
	now := d.now()
	deadline := giveUpAt(job, r.cfg)
	p := d.breakers.get(r.cfg.Name).allow(now)
	if !p.ok {
		if !now.Before(deadline) {
			st := p.b.status()
			msg := fmt.Sprintf("gave up: not delivered within give_up_after (%s) of intake; the circuit breaker for route %s is %s after the target failed repeatedly; last failure: %s",
				r.cfg.Retry.GiveUpAfter.D(), r.cfg.Name, st.State, st.LastError)
			log.Warn("delivery deadline passed while the circuit is open; cancelled", "breaker", st.State)
			return nil, river.JobCancel(errors.New(msg))
		}
		wait := max(min(p.wait, deadline.Sub(now)), minSnooze)
		log.Debug("circuit breaker holds the delivery back; snoozing without using an attempt", "snooze", wait.String())
		return nil, river.JobSnooze(wait)
	}
	if p.probe {
		log.Info("sending this delivery as the circuit breaker's probe")
	}
	if r.limiter == nil {
		return p, nil
	}
	res := r.limiter.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if delay > maxRateWait {
		res.CancelAt(now)
		p.release()
		wait := max(min(delay, deadline.Sub(now)), minSnooze)
		log.Debug("route rate limit reached; snoozing without using an attempt", "snooze", wait.String())
		return nil, river.JobSnooze(wait)
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			res.CancelAt(d.now())
			p.release()
			return nil, ctx.Err()
		}
	}
	return p, nil
}
