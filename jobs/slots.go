package jobs

import (
	"context"
	"math/rand/v2"
	"time"
)

// WorkersPerSlot is how many River workers a route runs for each of its
// `concurrency` delivery slots. Extra workers load their events and wait
// for a slot while others send, so the slots stay busy.
//
// A slot is held from the request until its outcome is recorded (or the
// job gives up recording it). The target so never sees more than
// `concurrency` requests from one replica at once, and no more than
// `concurrency` deliveries per replica are ever acknowledged by the target
// but not yet recorded: the most a crash of that replica can repeat.
const WorkersPerSlot = 4

// maxSlotWait bounds how long a delivery waits for a slot in its worker
// before it snoozes instead (which uses no attempt).
const maxSlotWait = 5 * time.Second

// slots is a route's delivery slots: at most cap(slots) requests to its
// target in flight on this replica.
type slots chan struct{}

func newSlots(n int) slots { return make(slots, max(n, 1)) }

// acquire takes a slot, waiting at most wait. It reports whether it got
// one; the caller must then release it.
func (s slots) acquire(ctx context.Context, wait time.Duration) bool {
	select {
	case s <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case s <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (s slots) release() { <-s }

// slotWait is how long a delivery of a route with this target timeout
// waits for a slot: about one request's worth, at most maxSlotWait.
func slotWait(targetTimeout time.Duration) time.Duration {
	return min(targetTimeout, maxSlotWait)
}

// busySnooze is how long a delivery that found every slot busy waits
// before it is tried again: short, and jittered so waiting deliveries do
// not come back together.
func busySnooze() time.Duration {
	return time.Second + rand.N(time.Second)
}
