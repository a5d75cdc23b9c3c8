package store

import (
	"context"
	"sync"
	"time"
)

// groupCommit shares transactions between concurrent callers. Each of its
// workers takes whatever calls are waiting, up to a cap, runs them through
// commit as one batch (one transaction), and answers each caller with its
// own result. It adds no waiting: an idle worker takes a lone call at once,
// and calls that arrive while a commit is under way form the next batch. A
// commit's cost is so shared by as many calls as arrived during the
// previous one, which is what lets one Postgres fsync serve many webhooks.
type groupCommit[In, Out any] struct {
	commit  func(ctx context.Context, batch []In) ([]Out, error)
	queue   chan *pendingCall[In, Out]
	max     int
	timeout time.Duration
	// observe, when set, is told each batch's size and how long its oldest
	// call waited in the queue, before the batch is committed.
	observe func(n int, wait time.Duration)
	wg      sync.WaitGroup
	stop    chan struct{}
}

type pendingCall[In, Out any] struct {
	ctx    context.Context
	queued time.Time
	in     In
	done   chan callResult[Out]
}

type callResult[Out any] struct {
	out Out
	err error
}

// closedError answers calls still queued when a groupCommit closes.
type closedError struct{}

func (closedError) Error() string { return "shutting down" }

var errBatcherClosed error = closedError{}

func newGroupCommit[In, Out any](workers, maxBatch int, timeout time.Duration, commit func(context.Context, []In) ([]Out, error)) *groupCommit[In, Out] {
	g := &groupCommit[In, Out]{
		commit:  commit,
		queue:   make(chan *pendingCall[In, Out], maxBatch*workers),
		max:     maxBatch,
		timeout: timeout,
		stop:    make(chan struct{}),
	}
	for range workers {
		g.wg.Go(g.work)
	}
	return g
}

// do queues in for the next batch and waits for its commit. If ctx ends
// first, it returns ctx's error; the call may still be committed by its
// batch.
func (g *groupCommit[In, Out]) do(ctx context.Context, in In) (Out, error) {
	var zero Out
	p := &pendingCall[In, Out]{ctx: ctx, queued: time.Now(), in: in, done: make(chan callResult[Out], 1)}
	select {
	case g.queue <- p:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-g.stop:
		return zero, errBatcherClosed
	}
	select {
	case r := <-p.done:
		return r.out, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// close stops taking calls and waits for the batches under way. Calls still
// queued are answered with an error.
func (g *groupCommit[In, Out]) close() {
	close(g.stop)
	g.wg.Wait()
	for {
		select {
		case p := <-g.queue:
			p.done <- callResult[Out]{err: errBatcherClosed}
		default:
			return
		}
	}
}

func (g *groupCommit[In, Out]) work() {
	batch := make([]*pendingCall[In, Out], 0, g.max)
	ins := make([]In, 0, g.max)
	for {
		batch, ins = batch[:0], ins[:0]
		select {
		case p := <-g.queue:
			batch = append(batch, p)
		case <-g.stop:
			return
		}
	fill:
		for len(batch) < g.max {
			select {
			case p := <-g.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		// Calls whose caller gave up while queued are not committed.
		live := batch[:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.done <- callResult[Out]{err: err}
				continue
			}
			live = append(live, p)
			ins = append(ins, p.in)
		}
		if len(live) == 0 {
			continue
		}
		if g.observe != nil {
			// The queue is first in, first out: the first call taken
			// waited longest.
			g.observe(len(live), time.Since(batch[0].queued))
		}
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		outs, err := g.commit(ctx, ins)
		cancel()
		for i, p := range live {
			if err != nil {
				p.done <- callResult[Out]{err: err}
			} else {
				p.done <- callResult[Out]{out: outs[i]}
			}
		}
	}
}
