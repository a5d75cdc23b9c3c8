package console

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/webhook-outbox/webhook-outbox/store"

	"github.com/webhook-outbox/webhook-outbox/admin"
)

// chartMinutes is the span of the overview's charts.
const chartMinutes = 60

// activityCache keeps the per-minute activity of the last hour. The first
// overview reads the whole hour; later ones read only the minutes since
// the last complete one (and the two before it, for transactions that
// committed late), so an overview costs the deliveries of a few minutes,
// not of an hour.
type activityCache struct {
	rd  Reader
	now func() time.Time

	mu sync.Mutex
	// minutes holds complete minutes: route -> minute -> counts.
	minutes map[string]map[time.Time]store.MinuteActivity
	// through is the end of the last complete minute read.
	through time.Time
}

func newActivityCache(rd Reader, now func() time.Time) *activityCache {
	return &activityCache{rd: rd, now: now, minutes: map[string]map[time.Time]store.MinuteActivity{}}
}

// settle is how long after a minute ends its counts are taken as final.
const settle = 2 * time.Minute

// get returns the activity per route for the chartMinutes minutes up to
// now, the current minute last.
func (a *activityCache) get(ctx context.Context) (map[string][]store.MinuteActivity, time.Time, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	current := now.Truncate(time.Minute)
	first := current.Add(-(chartMinutes - 1) * time.Minute)
	from := first
	if a.through.After(first) {
		from = a.through
	}
	rows, err := a.rd.Activity(ctx, from)
	if err != nil {
		return nil, time.Time{}, err
	}
	fresh := map[string]map[time.Time]store.MinuteActivity{}
	for _, r := range rows {
		m := r.Minute.Truncate(time.Minute)
		if m.Before(first) {
			continue
		}
		if fresh[r.Route] == nil {
			fresh[r.Route] = map[time.Time]store.MinuteActivity{}
		}
		fresh[r.Route][m] = r
	}
	// Keep the minutes that have settled, and forget those older than the
	// chart.
	settled := now.Add(-settle).Truncate(time.Minute)
	for route, byMinute := range fresh {
		for m, r := range byMinute {
			if m.Before(settled) {
				if a.minutes[route] == nil {
					a.minutes[route] = map[time.Time]store.MinuteActivity{}
				}
				a.minutes[route][m] = r
			}
		}
	}
	for _, byMinute := range a.minutes {
		for m := range byMinute {
			if m.Before(first) {
				delete(byMinute, m)
			}
		}
	}
	if settled.After(a.through) {
		a.through = settled
	}
	out := map[string][]store.MinuteActivity{}
	routes := map[string]bool{}
	for r := range a.minutes {
		routes[r] = true
	}
	for r := range fresh {
		routes[r] = true
	}
	for route := range routes {
		series := make([]store.MinuteActivity, chartMinutes)
		for i := range series {
			m := first.Add(time.Duration(i) * time.Minute)
			series[i] = store.MinuteActivity{Route: route, Minute: m}
			if v, ok := fresh[route][m]; ok {
				series[i] = v
			} else if v, ok := a.minutes[route][m]; ok {
				series[i] = v
			}
		}
		out[route] = series
	}
	return out, first, nil
}

// chart is an inline SVG bar chart of one route's hour, drawn on the
// server: deliveries up, failed attempts down, one pair of bars a minute.
type chart struct {
	Width, Height, Mid float64
	Bars               []bar
	MaxDelivered       int64
	MaxFailed          int64
	Label              string
	From, To           time.Time
}

type bar struct {
	X, W       float64
	DY, DH     float64 // delivered: y and height
	FY, FH     float64 // failed
	Title      string
	Delivered  int64
	Failed     int64
	HasFailure bool
}

func newChart(route string, series []store.MinuteActivity, first time.Time) chart {
	c := chart{Width: 600, Height: 90, Mid: 60, From: first, To: first.Add(chartMinutes * time.Minute)}
	var delivered, failed int64
	for _, m := range series {
		c.MaxDelivered = max(c.MaxDelivered, m.Delivered)
		c.MaxFailed = max(c.MaxFailed, m.Failed)
		delivered += m.Delivered
		failed += m.Failed
	}
	up, down := c.Mid-2, c.Height-c.Mid-2 // room for each direction
	slot := c.Width / chartMinutes
	for i, m := range series {
		b := bar{X: float64(i)*slot + 1, W: slot - 2, Delivered: m.Delivered, Failed: m.Failed, HasFailure: m.Failed > 0}
		if c.MaxDelivered > 0 {
			b.DH = up * float64(m.Delivered) / float64(c.MaxDelivered)
			if m.Delivered > 0 {
				b.DH = max(b.DH, 1.5)
			}
		}
		b.DY = c.Mid - b.DH
		if c.MaxFailed > 0 {
			b.FH = down * float64(m.Failed) / float64(c.MaxFailed)
			if m.Failed > 0 {
				b.FH = max(b.FH, 1.5)
			}
		}
		b.FY = c.Mid + 1
		b.Title = fmt.Sprintf("%s UTC: %s delivered, %s failed attempts", m.Minute.UTC().Format("15:04"), formatCount(m.Delivered), formatCount(m.Failed))
		c.Bars = append(c.Bars, b)
	}
	c.Label = fmt.Sprintf("Route %s over the last hour: %s deliveries and %s failed attempts, per minute", route, formatCount(delivered), formatCount(failed))
	return c
}

// routeCard is one route on the overview.
type routeCard struct {
	admin.RouteStatus
	Backlog        int64
	DeliveredHour  int64
	FailedHour     int64
	Chart          chart
	MaxAttempts    int
	GiveUpAfter    time.Duration
	DeadLettersURL string
}

// LimitNow says how many requests the fleet may have in flight to the
// route's target now, out of its concurrency.
func (c routeCard) LimitNow() string {
	if c.Limit.Current == nil {
		return fmt.Sprintf("idle (up to %d)", c.Concurrency)
	}
	return fmt.Sprintf("%d of %d", *c.Limit.Current, c.Concurrency)
}

type overviewData struct {
	Routes []routeCard
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var (
		statuses []admin.RouteStatus
		activity map[string][]store.MinuteActivity
		first    time.Time
		errA     error
		wg       sync.WaitGroup
	)
	// The two reads are independent; run them side by side.
	wg.Go(func() { activity, first, errA = c.activity.get(ctx) })
	statuses, err := c.op.Routes(ctx)
	wg.Wait()
	if err == nil {
		err = errA
	}
	if err != nil {
		c.fail(w, r, err)
		return
	}
	data := overviewData{}
	for _, s := range statuses {
		card := routeCard{RouteStatus: s, DeadLettersURL: Prefix + "/dead-letters?route=" + s.Name}
		card.Backlog = s.Backlog.Available + s.Backlog.Retryable + s.Backlog.Scheduled + s.Backlog.Running
		series := activity[s.Name]
		if series == nil {
			series = make([]store.MinuteActivity, chartMinutes)
			for i := range series {
				series[i].Minute = first.Add(time.Duration(i) * time.Minute)
			}
		}
		for _, m := range series {
			card.DeliveredHour += m.Delivered
			card.FailedHour += m.Failed
		}
		card.Chart = newChart(s.Name, series, first)
		if rc := c.routes[s.Name]; rc != nil {
			card.MaxAttempts, card.GiveUpAfter = rc.Retry.MaxAttempts, rc.Retry.GiveUpAfter.D()
		}
		data.Routes = append(data.Routes, card)
	}
	c.render(w, r, http.StatusOK, "overview", "Overview", data)
}
