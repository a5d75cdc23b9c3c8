package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// BenchmarkAcceptBatchOrdering measures intake transactions of 32 events
// spread over 1,000 conversations, unordered and ordered, from one writer
// and from four concurrent ones: the second shows what the ordering locks,
// held to the commit, cost when concurrent transactions share keys. Run it
// with: go test ./store -run '^$' -bench AcceptBatchOrdering -benchtime 3s
func BenchmarkAcceptBatchOrdering(b *testing.B) {
	for _, writers := range []int{1, 4} {
		for _, ordered := range []bool{false, true} {
			b.Run(fmt.Sprintf("writers=%d/ordered=%v", writers, ordered), func(b *testing.B) {
				pool, _ := testdb.Pool(b)
				client, err := jobs.NewInsertOnlyClient(pool, quiet)
				if err != nil {
					b.Fatal(err)
				}
				intake := store.NewIntake(store.New(pool), client)
				var seq atomic.Int64
				batch := func() []*outbox.NewEvent {
					evs := make([]*outbox.NewEvent, 32)
					for i := range evs {
						n := seq.Add(1)
						evs[i] = newEvent(fmt.Sprint("k", n))
						if ordered {
							evs[i].OrderingKey = fmt.Sprint("conv-", n*7919%1000)
						}
					}
					return evs
				}
				b.ResetTimer()
				var wg sync.WaitGroup
				var next atomic.Int64
				for range writers {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							if _, err := intake.AcceptBatch(context.Background(), batch()); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
