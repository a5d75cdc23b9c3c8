package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// generator sends Genesys-like webhooks to outbox: the three testdata
// payloads with unique keys, and a share of duplicates of earlier keys.
type generator struct {
	url      string
	client   *http.Client
	payloads [][]byte
	seq      atomic.Int64
	dupShare float64
	// conversations, when set, spreads the payloads' conversation id over
	// that many values (see withConversation).
	conversations int
}

func newGenerator(root, outboxURL string, o options) *generator {
	var payloads [][]byte
	for _, f := range []string{"data-action.json", "eventbridge.json"} {
		b, err := os.ReadFile(filepath.Join(root, "testdata", "genesys", f))
		if err != nil {
			panic(err)
		}
		payloads = append(payloads, b)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = o.clients * 2
	transport.MaxConnsPerHost = 0
	return &generator{
		url:      outboxURL + "/webhooks/bench",
		client:   &http.Client{Transport: transport, Timeout: 30 * time.Second},
		payloads: payloads,
		dupShare: o.dupShare,
	}
}

// Both payloads carry their id in the same place: `"id":"<uuid>"` (with or
// without a space after the colon in the pretty one).
var idPrefixes = [][]byte{[]byte(`"id": "`), []byte(`"id":"`)}

// body returns a payload whose id is key.
func (g *generator) body(key string) []byte {
	p := g.payloads[len(key)%len(g.payloads)]
	for _, prefix := range idPrefixes {
		if i := bytes.Index(p, prefix); i >= 0 {
			start := i + len(prefix)
			end := start + bytes.IndexByte(p[start:], '"')
			out := make([]byte, 0, len(p)+len(key))
			out = append(out, p[:start]...)
			out = append(out, key...)
			return g.withConversation(append(out, p[end:]...), key)
		}
	}
	panic("payload without an id")
}

// nextKey returns a fresh key, or with dupShare probability an earlier one.
func (g *generator) nextKey() string {
	n := g.seq.Add(1)
	if n > 10 && rand.Float64() < g.dupShare {
		n = 1 + rand.Int64N(n-1)
	}
	return "bench-" + strconv.FormatInt(n, 10)
}

// send posts one webhook and returns its status, 0 on a transport error.
func (g *generator) send(ctx context.Context, key string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url, bytes.NewReader(g.body(key)))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "bench-token")
	resp, err := g.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// recorder collects latencies and statuses from many goroutines.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	statuses  map[int]int
}

func newRecorder() *recorder { return &recorder{statuses: map[int]int{}} }

func (r *recorder) add(status int, d time.Duration) {
	r.mu.Lock()
	r.latencies = append(r.latencies, d)
	r.statuses[status]++
	r.mu.Unlock()
}

func (r *recorder) phase(target string, elapsed time.Duration) Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Phase{Target: target, ByStatus: map[string]int{}, elapsed: elapsed}
	slices.Sort(r.latencies)
	pct := func(q float64) float64 {
		if len(r.latencies) == 0 {
			return 0
		}
		i := min(int(q*float64(len(r.latencies))), len(r.latencies)-1)
		return float64(r.latencies[i].Microseconds()) / 1000
	}
	p.P50ms, p.P99ms, p.P999ms = pct(0.50), pct(0.99), pct(0.999)
	for status, n := range r.statuses {
		p.Sent += int64(n)
		if status == 0 {
			p.TransportEr += int64(n)
			continue
		}
		p.ByStatus[strconv.Itoa(status)] = n
	}
	p.AcceptedPS = float64(r.statuses[200]) / elapsed.Seconds()
	return p
}

// closedLoop keeps n requests in flight for d: each connection sends its
// next request when the previous answer arrives.
func (g *generator) closedLoop(ctx context.Context, n int, d time.Duration) Phase {
	rec := newRecorder()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				status := g.send(context.WithoutCancel(ctx), g.nextKey())
				rec.add(status, time.Since(t0))
			}
		})
	}
	wg.Wait()
	return rec.phase(fmt.Sprintf("closed loop, %d connections", n), time.Since(start))
}

// openLoop sends rate requests per second for d, each at its scheduled time
// whatever the previous answers, and measures latency from that scheduled
// time, so that queueing in outbox shows instead of being hidden by a
// generator that slowed down (coordinated omission).
func (g *generator) openLoop(ctx context.Context, rate int, d time.Duration) Phase {
	rec := newRecorder()
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int(d / interval)
	var wg sync.WaitGroup
	for i := range total {
		intended := start.Add(time.Duration(i) * interval)
		if wait := time.Until(intended); wait > 0 {
			time.Sleep(wait)
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			status := g.send(ctx, g.nextKey())
			rec.add(status, time.Since(intended))
		})
	}
	wg.Wait()
	return rec.phase(fmt.Sprintf("open loop, %d requests/s", rate), time.Since(start))
}

// fill sends n fresh events as fast as n connections allow.
func (g *generator) fill(ctx context.Context, conns, n int) {
	var left atomic.Int64
	left.Store(int64(n))
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				key := "drain-" + strconv.FormatInt(g.seq.Add(1), 10)
				for g.send(ctx, key) != 200 && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
}
