package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// The capacity phase (issue 12) delivers a queued backlog to a target with
// a capacity: it answers in base + k × its requests in flight, and refuses
// with 503 past its capacity, as a service with a small database pool does.
// It compares a fixed width (adaptive_concurrency: false) with the adaptive
// limit, both with the same concurrency ceiling.
//
// With -capacity-compare-binary it also measures the drain of a fast sink
// side by side: this tree's binary (fleet leases, adaptive on and off)
// against another build (today's main, say), alternating runs on fresh
// databases of the same Postgres, and reports the medians.

// capacityOptions are the phase's flags.
type capacityOptions struct {
	events      int
	concurrency int
	base, perIn time.Duration
	capacity    int
	// compareBinary, when set, is the other outbox binary of the drain
	// comparison; drainEvents and rounds size it.
	compareBinary string
	drainEvents   int
	rounds        int
}

// capacityFlags registers the phase's flags.
func capacityFlags(c *capacityOptions) {
	flag.IntVar(&c.events, "capacity-events", 400, "queued events in the capacity phase (0: only the drain comparison)")
	flag.IntVar(&c.concurrency, "capacity-concurrency", 32, "the capacity route's concurrency (the adaptive limit's ceiling)")
	flag.DurationVar(&c.base, "capacity-base", 20*time.Millisecond, "the capacity target's latency with nothing else in flight, less one k")
	flag.DurationVar(&c.perIn, "capacity-k", 10*time.Millisecond, "the capacity target's added latency per request in flight")
	flag.IntVar(&c.capacity, "capacity-max", 6, "the capacity target refuses with 503 past this many in flight")
	flag.StringVar(&c.compareBinary, "capacity-compare-binary", "", "another outbox binary (today's main, say) whose drain to a fast sink is measured side by side with this tree's")
	flag.IntVar(&c.drainEvents, "capacity-drain-events", 20_000, "events in each run of the drain comparison")
	flag.IntVar(&c.rounds, "capacity-rounds", 3, "runs of each configuration in the drain comparison")
}

// capacityOnly runs just the capacity phase, prints and saves it.
func capacityOnly(ctx context.Context, o options, bin, base, root string) error {
	res := Result{When: time.Now().UTC(), Commit: gitCommit(root), Machine: machine(), Clients: o.clients}
	var err error
	if res.Capacity, err = capacityPhase(ctx, o, o.capacity, bin, base, root); err != nil {
		return err
	}
	printCapacity(os.Stdout, res.Capacity)
	return save(root, &res)
}

// CapacityResult is what the capacity phase measured.
type CapacityResult struct {
	Target string `json:"target"`
	Events int    `json:"events"`
	// IdealSeconds is the drain at the target's best throughput without
	// refusals: capacity in flight, each taking base + k × capacity.
	IdealSeconds float64       `json:"ideal_seconds"`
	Runs         []CapacityRun `json:"runs"`
	// Drain is the side-by-side drain comparison, when asked for.
	Drain []DrainRun `json:"drain,omitempty"`
}

// CapacityRun is one drain of the capacity target.
type CapacityRun struct {
	Mode        string  `json:"mode"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"deliveries_per_sec"`
	Requests    int64   `json:"requests"`
	Refused     int64   `json:"refused"`
	RefusedPct  float64 `json:"refused_pct"`
	PeakFlight  int64   `json:"peak_in_flight"`
	DeadLetters int64   `json:"dead_letters"`
	Drained     bool    `json:"drained"`
}

// DrainRun is one configuration of the drain comparison: its median and
// every run's deliveries per second.
type DrainRun struct {
	Binary       string    `json:"binary"`
	Mode         string    `json:"mode"`
	Events       int       `json:"events"`
	MedianPerSec float64   `json:"median_per_sec"`
	PerSec       []float64 `json:"per_sec"`
}

// capTarget is the capacity target.
type capTarget struct {
	base, perIn time.Duration
	capacity    int64
	inflight    atomic.Int64
	peak        atomic.Int64
	requests    atomic.Int64
	refused     atomic.Int64
}

func (c *capTarget) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	c.requests.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	if n > c.capacity {
		c.refused.Add(1)
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	time.Sleep(c.base + time.Duration(n)*c.perIn)
	w.WriteHeader(http.StatusNoContent)
}

func (c *capTarget) reset() {
	c.peak.Store(0)
	c.requests.Store(0)
	c.refused.Store(0)
}

// benchServe is one outbox serve process of the phase, on its own fresh
// database.
type benchServe struct {
	url, dbURL string
	cmd        *exec.Cmd
	log        bytes.Buffer
}

const capacityToken = "bench-admin-token-0123456789abcdef0123456789"

// startBenchServe starts bin on a fresh database named db, with one route
// named route (routeYAML is its settings under the name).
func startBenchServe(ctx context.Context, bin, base, db, route, targetURL, routeYAML string) (*benchServe, error) {
	dbURL, err := freshDatabase(ctx, base, db)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`listen: "127.0.0.1:%s"
database_url: %q
admin_token: %s
log_level: warn
routes:
  - name: %s
    auth: {header: {name: X-Webhook-Token, value: bench-token}}
    idempotency_key: [{json: /id}]
    target: {url: %q, timeout: 10s}
%s
`, port, dbURL, capacityToken, route, targetURL, routeYAML)
	cfgPath := filepath.Join(os.TempDir(), "outbox-bench-"+db+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	s := &benchServe{url: "http://127.0.0.1:" + port, dbURL: dbURL}
	s.cmd = exec.CommandContext(ctx, bin, "serve", "--migrate", "--config", cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitReady(ctx, s.url); err != nil {
		s.stop()
		return nil, fmt.Errorf("%w\n%s", err, s.log.String())
	}
	return s, nil
}

func (s *benchServe) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
}

// queuedDrain pauses route, queues n events, resumes it, and returns how
// long the drain took once resumed (or limit, with false, if it did not
// finish by then).
func queuedDrain(ctx context.Context, root string, s *benchServe, route string, n int, o options, limit time.Duration) (time.Duration, bool, error) {
	if err := admin(ctx, s.url, capacityToken, "/admin/v1/routes/"+route+"/pause"); err != nil {
		return 0, false, err
	}
	gen := newGenerator(root, s.url, o)
	gen.url = s.url + "/webhooks/" + route
	gen.dupShare = 0
	gen.fill(ctx, min(o.clients, 32), n)
	t0 := time.Now()
	if err := admin(ctx, s.url, capacityToken, "/admin/v1/routes/"+route+"/resume"); err != nil {
		return 0, false, err
	}
	if err := waitDrained(ctx, s.dbURL, limit); err != nil {
		if ctx.Err() != nil {
			return 0, false, err
		}
		return time.Since(t0), false, nil
	}
	return time.Since(t0), true, nil
}

// deadLetters counts the dead letters of the database.
func deadLetters(ctx context.Context, dbURL string) (int64, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int64
	err = conn.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'deliver' AND state IN ('discarded', 'cancelled')`).Scan(&n)
	return n, err
}

// capacityPhase runs the phase with bin, on fresh databases of base.
func capacityPhase(ctx context.Context, o options, c capacityOptions, bin, base, root string) (*CapacityResult, error) {
	tg := &capTarget{base: c.base, perIn: c.perIn, capacity: int64(c.capacity)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: tg}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	ideal := time.Duration(c.events) * (c.base + time.Duration(c.capacity)*c.perIn) / time.Duration(c.capacity)
	res := &CapacityResult{
		Target: fmt.Sprintf("%s + %s × in-flight, 503 past %d", c.base, c.perIn, c.capacity),
		Events: c.events, IdealSeconds: ideal.Seconds(),
	}
	// The same route but for adaptive_concurrency; a short breaker
	// cooldown, so that the fixed width's refusals cost seconds, not
	// minutes, and enough attempts that none becomes a dead letter.
	modes := []string{"fixed", "adaptive"}
	if c.events <= 0 {
		modes = nil // only the drain comparison
	}
	for _, mode := range modes {
		logf("capacity: %d events, concurrency %d %s, target %s", c.events, c.concurrency, mode, res.Target)
		tg.reset()
		settings := fmt.Sprintf(`    concurrency: %d
    adaptive_concurrency: %v
    retry: {max_attempts: 25, initial_backoff: 1s, max_backoff: 5s}
    circuit_breaker: {failures: 5, cooldown: 5s, max_cooldown: 20s}`, c.concurrency, mode == "adaptive")
		s, err := startBenchServe(ctx, bin, base, "outbox_bench_capacity", "capacity", "http://"+ln.Addr().String()+"/capacity", settings)
		if err != nil {
			return nil, err
		}
		took, drained, err := queuedDrain(ctx, root, s, "capacity", c.events, o, 10*time.Minute)
		if err != nil {
			s.stop()
			return nil, err
		}
		dead, err := deadLetters(ctx, s.dbURL)
		s.stop()
		if err != nil {
			return nil, err
		}
		run := CapacityRun{
			Mode: fmt.Sprintf("%s, concurrency %d", mode, c.concurrency), Seconds: took.Seconds(), PerSec: float64(c.events) / took.Seconds(),
			Requests: tg.requests.Load(), Refused: tg.refused.Load(), PeakFlight: tg.peak.Load(), DeadLetters: dead, Drained: drained,
		}
		run.RefusedPct = 100 * float64(run.Refused) / float64(max(run.Requests, 1))
		res.Runs = append(res.Runs, run)
	}
	if c.compareBinary == "" {
		return res, nil
	}
	sk := newSink()
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ssrv := &http.Server{Handler: sk}
	go func() { _ = ssrv.Serve(sl) }()
	defer ssrv.Close()
	type config struct {
		binary, mode, yaml string
	}
	configs := []config{
		{c.compareBinary, "as built", fmt.Sprintf("    concurrency: %d", o.concurrency)},
		{bin, "fleet, adaptive", fmt.Sprintf("    concurrency: %d", o.concurrency)},
		{bin, "fleet, fixed", fmt.Sprintf("    concurrency: %d\n    adaptive_concurrency: false", o.concurrency)},
	}
	runs := make([][]float64, len(configs))
	for round := range c.rounds {
		for i, cf := range configs {
			logf("drain comparison, round %d/%d: %s (%s), %d events", round+1, c.rounds, filepath.Base(cf.binary), cf.mode, c.drainEvents)
			s, err := startBenchServe(ctx, cf.binary, base, "outbox_bench_drain", "drain", "http://"+sl.Addr().String()+"/sink", cf.yaml)
			if err != nil {
				return nil, err
			}
			took, drained, err := queuedDrain(ctx, root, s, "drain", c.drainEvents, o, 10*time.Minute)
			s.stop()
			if err != nil {
				return nil, err
			}
			if !drained {
				return nil, fmt.Errorf("%s (%s) did not drain %d events in 10 minutes", cf.binary, cf.mode, c.drainEvents)
			}
			runs[i] = append(runs[i], float64(c.drainEvents)/took.Seconds())
		}
	}
	for i, cf := range configs {
		res.Drain = append(res.Drain, DrainRun{Binary: cf.binary, Mode: cf.mode, Events: c.drainEvents, MedianPerSec: medianOf(runs[i]), PerSec: runs[i]})
	}
	return res, nil
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printCapacity(w io.Writer, r *CapacityResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\ncapacity: %d queued events, target %s, ideal drain %.1f s\n", r.Events, r.Target, r.IdealSeconds)
	fmt.Fprintln(tw, "mode\tdrain\tdeliveries/s\trequests\trefused\tpeak in flight\tdead letters")
	for _, run := range r.Runs {
		drain := fmt.Sprintf("%.1f s (%.1f × ideal)", run.Seconds, run.Seconds/r.IdealSeconds)
		if !run.Drained {
			drain = fmt.Sprintf("not drained in %.0f s", run.Seconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%d\t%d (%.1f%%)\t%d\t%d\n", run.Mode, drain, run.PerSec, run.Requests, run.Refused, run.RefusedPct, run.PeakFlight, run.DeadLetters)
	}
	if len(r.Drain) > 0 {
		fmt.Fprintf(tw, "\ndrain of a fast sink, side by side (median of %d runs each)\n", len(r.Drain[0].PerSec))
		fmt.Fprintln(tw, "binary\tmode\tevents\tmedian deliveries/s\truns")
		for _, d := range r.Drain {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.0f\n", d.Binary, d.Mode, d.Events, d.MedianPerSec, d.PerSec)
		}
	}
	_ = tw.Flush()
}
