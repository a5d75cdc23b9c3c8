package fleet_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs/adaptive"
	"github.com/webhook-outbox/webhook-outbox/jobs/fleet"
	"github.com/webhook-outbox/webhook-outbox/store"
)

func countedStore(b *testing.B) (*store.Store, *testdb.StatementCounter) {
	pool, c, _ := testdb.CountedPool(b)
	return store.New(pool), c
}

// BenchmarkAcquireRelease is the cost per delivery of the chosen design:
// the place is taken and given back in memory, under the cap the fleet
// lease sets; the lease renews in the background (every 2 s, and at once
// when the demand changes). statements/op is the Postgres statements per
// delivery, renewals included.
func BenchmarkAcquireRelease(b *testing.B) {
	st, c := countedStore(b)
	lim := adaptive.New(adaptive.Config{Ceiling: 32})
	lease := fleet.NewLease(fleet.LeaseConfig{Store: st, Route: "r", Holder: "bench", Ceiling: 32, Limiter: lim})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lease.Run(ctx)
	if _, ok := lim.Acquire(ctx, time.Minute); !ok { // the first renewal
		b.Fatal("no place within a minute")
	}
	start := c.Count()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok, ok := lim.Acquire(ctx, time.Minute)
			if !ok {
				b.Error("no place within a minute")
				return
			}
			lim.Release(tok, time.Millisecond, adaptive.Answered)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(c.Count()-start)/float64(b.N), "statements/op")
}

// BenchmarkAcquireReleaseRoundTrip is the design not taken, for
// comparison: a round trip to Postgres to take the place and another to
// give it back, for every delivery.
func BenchmarkAcquireReleaseRoundTrip(b *testing.B) {
	st, c := countedStore(b)
	ctx := context.Background()
	var holders atomic.Int64
	b.SetParallelism(8) // as many as a route's workers would be
	start := c.Count()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		holder := "bench-" + string(rune('a'+holders.Add(1)))
		for pb.Next() {
			g, err := st.RenewFleetLease(ctx, store.LeaseRequest{Route: "r", Holder: holder, Want: 1, Ceiling: 1 << 20, TTL: time.Minute})
			if err != nil || g.Slots != 1 {
				b.Errorf("acquire: %+v, %v", g, err)
				return
			}
			if _, err := st.RenewFleetLease(ctx, store.LeaseRequest{Route: "r", Holder: holder, Ceiling: 1 << 20, TTL: time.Minute}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(c.Count()-start)/float64(b.N), "statements/op")
}

// BenchmarkRenewFleetLease is one renewal's round trip.
func BenchmarkRenewFleetLease(b *testing.B) {
	st, _ := countedStore(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := st.RenewFleetLease(ctx, store.LeaseRequest{Route: "r", Holder: "bench", Want: 8, Ceiling: 8, RateLimit: 50, TTL: time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBreakerHealthy is the fleet breaker's cost per delivery on a
// healthy route: Allow and Record decide from the local copy.
func BenchmarkBreakerHealthy(b *testing.B) {
	st, c := countedStore(b)
	ctx := context.Background()
	br := fleet.NewBreaker(st, "bench", map[string]fleet.Settings{"r": {
		BreakerSettings: store.BreakerSettings{Failures: 5, Cooldown: time.Second, MaxCooldown: time.Minute}, ProbeTTL: time.Minute,
	}}, nil, nil)
	start := c.Count()
	for b.Loop() {
		p := br.Allow(ctx, "r")
		br.Record(ctx, p, false, "")
	}
	b.ReportMetric(float64(c.Count()-start)/float64(b.N), "statements/op")
}
