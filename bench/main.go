// Command bench measures webhook-outbox end to end on this machine: the real
// `outbox serve`, a real Postgres, a fast local sink as the target, and a load
// generator, against two pgbench baselines on the same Postgres at the same
// client count. It prints one table and writes it as JSON under
// bench/results/.
//
// Run it with `make bench`. BENCH_DATABASE_URL names a server where it may
// create the database outbox_bench; without it, scripts/devdb.sh provides
// one.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

type options struct {
	clients     int
	duration    time.Duration
	openRate    int
	backlog     int
	dupShare    float64
	concurrency int
	quick       bool
	sustain     time.Duration
	rounds      int
	partitions  int
	// withOrdering runs the ordering phase after the others.
	withOrdering bool
	// retentionOnly runs only the retention phase.
	retentionOnly bool
	// drainOnly runs only the drain, for profiling the delivery path.
	drainOnly bool
	// sustainedOnly runs only the sustained open loop.
	sustainedOnly bool
	// The ordering phase (bench/ordering.go).
	ordering       bool
	orderingKeys   int
	orderingEvents int
	// The capacity phase (bench/capacity.go).
	capacityOnly bool
	capacity     capacityOptions
}

func main() {
	var o options
	flag.IntVar(&o.clients, "clients", 64, "closed-loop connections, and pgbench clients")
	flag.DurationVar(&o.duration, "duration", 15*time.Second, "length of each load phase")
	flag.IntVar(&o.openRate, "rate", 1500, "the sustained open loop's requests per second")
	flag.DurationVar(&o.sustain, "sustain", 60*time.Second, "length of the sustained open loop")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of the closed loop against both pgbench baselines; the medians are reported")
	flag.IntVar(&o.partitions, "partitions", 35, "events partitions in the second half of the retention phase")
	flag.BoolVar(&o.withOrdering, "with-ordering", false, "run the ordering phase too, at the end (about 7 minutes)")
	flag.BoolVar(&o.retentionOnly, "retention-only", false, "only the retention phase: intake with few partitions, then with -partitions")
	flag.IntVar(&o.backlog, "backlog", 100_000, "events in the drain test")
	flag.BoolVar(&o.sustainedOnly, "sustained-only", false, "only the sustained open loop (-rate for -sustain), with its CPU per event")
	flag.BoolVar(&o.drainOnly, "drain-only", false, "only the drain of -backlog events, for profiling deliveries")
	flag.Float64Var(&o.dupShare, "duplicates", 0.05, "share of requests that repeat an earlier key")
	flag.IntVar(&o.concurrency, "concurrency", 64, "the bench route's delivery concurrency")
	flag.BoolVar(&o.quick, "quick", false, "only the closed-loop phases, for comparing settings")
	flag.BoolVar(&o.ordering, "ordering", false, "only the ordering phase: an ordered route with many keys against an unordered one")
	flag.IntVar(&o.orderingKeys, "ordering-keys", 1000, "active ordering keys in the ordering phase")
	flag.IntVar(&o.orderingEvents, "ordering-events", 50_000, "events in each drain of the ordering phase")
	flag.BoolVar(&o.capacityOnly, "capacity", false, "only the capacity phase (bench/capacity.go)")
	capacityFlags(&o.capacity)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Result is what one bench run measured. Every number is measured in the
// run; none is assumed.
type Result struct {
	When     time.Time `json:"when"`
	Commit   string    `json:"commit"`
	Machine  string    `json:"machine"`
	Clients  int       `json:"clients"`
	Duration string    `json:"phase_duration"`

	ClosedLoop Phase `json:"closed_loop"`
	// IntakeAlone is the closed loop with the route paused, so no delivery
	// competes for the database.
	IntakeAlone Phase `json:"closed_loop_deliveries_paused"`
	OpenLoop    Phase `json:"open_loop"`
	// OpenAlone is the open loop with the route paused.
	OpenAlone Phase `json:"open_loop_deliveries_paused"`

	DeliveriesPerSecDuringBurst float64 `json:"deliveries_per_sec_during_burst"`
	DrainEvents                 int     `json:"drain_events"`
	DrainSeconds                float64 `json:"drain_seconds"`
	DrainPerSec                 float64 `json:"drain_deliveries_per_sec"`
	PeakRSSMiB                  float64 `json:"peak_rss_mib"`
	IdleCPUPercent              float64 `json:"idle_cpu_percent"`

	PgbenchOutboxTx float64 `json:"pgbench_outbox_tx_per_sec"`
	PgbenchInsert   float64 `json:"pgbench_bare_insert_per_sec"`
	RatioOutboxTx   float64 `json:"ratio_to_outbox_tx"`
	RatioInsert     float64 `json:"ratio_to_bare_insert"`
	// The same ratios for the closed loop with deliveries paused.
	RatioOutboxTxAlone float64 `json:"ratio_to_outbox_tx_deliveries_paused"`
	RatioInsertAlone   float64 `json:"ratio_to_bare_insert_deliveries_paused"`

	// Rounds are the closed loop (deliveries running) and both pgbench
	// baselines, side by side; the Median fields are over them, and the
	// ratios above are the medians'.
	Rounds              []Round `json:"rounds"`
	MedianAccepted      float64 `json:"median_accepted_per_sec"`
	MedianOutboxTx      float64 `json:"median_pgbench_outbox_tx_per_sec"`
	MedianInsert        float64 `json:"median_pgbench_bare_insert_per_sec"`
	MedianRatioOutboxTx float64 `json:"median_ratio_to_outbox_tx"`
	MedianRatioInsert   float64 `json:"median_ratio_to_bare_insert"`
	// Retention is intake with 6 events partitions against 35.
	Retention *Retention `json:"retention,omitempty"`
	// Sustained is the 60 s open loop with deliveries running, with the
	// backlog over time and the CPU per event.
	Sustained *Sustained `json:"sustained,omitempty"`

	// Ordering compares an ordered route with many keys to an unordered
	// one (bench/ordering.go).
	Ordering *OrderingResult `json:"ordering,omitempty"`
	// Capacity is the capacity phase (bench/capacity.go).
	Capacity *CapacityResult `json:"capacity,omitempty"`
}

// Phase is one load phase's outcome.
type Phase struct {
	Target      string         `json:"target"`
	Sent        int64          `json:"sent"`
	AcceptedPS  float64        `json:"accepted_per_sec"`
	P50ms       float64        `json:"p50_ms"`
	P99ms       float64        `json:"p99_ms"`
	P999ms      float64        `json:"p999_ms"`
	ByStatus    map[string]int `json:"by_status"`
	TransportEr int64          `json:"transport_errors"`

	elapsed time.Duration
}

func run(ctx context.Context, o options) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	base := os.Getenv("BENCH_DATABASE_URL")
	if base == "" {
		out, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", "devdb.sh")).Output()
		if err != nil {
			return fmt.Errorf("cannot get a Postgres from scripts/devdb.sh: %w", err)
		}
		base = strings.TrimSpace(string(out))
	}
	dbURL, err := freshDatabase(ctx, base, "outbox_bench")
	if err != nil {
		return err
	}
	logf("database %s", redact(dbURL))

	bin := filepath.Join(root, "bin", "outbox-bench")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/outbox").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}

	if o.capacityOnly {
		return capacityOnly(ctx, o, bin, base, root)
	}

	sink := newSink()
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sinkSrv := &http.Server{Handler: sink}
	go func() { _ = sinkSrv.Serve(sinkLn) }()
	defer sinkSrv.Close()

	port, err := freePort()
	if err != nil {
		return err
	}
	outboxURL := "http://127.0.0.1:" + port
	cfgPath := filepath.Join(os.TempDir(), "outbox-bench.yaml")
	token := "bench-admin-token-0123456789abcdef0123456789"
	cfg := fmt.Sprintf(`listen: "127.0.0.1:%s"
database_url: %q
admin_token: %s
log_level: warn
event_retention: 840h
dead_letter_retention: 840h
routes:
  - name: bench
    auth: {header: {name: X-Webhook-Token, value: bench-token}}
    idempotency_key:
      - json: /id
      - composite: [/topicName, /eventBody/conversationId, /eventBody/participantId, /eventBody/sessionId, /eventBody/eventTime]
    target: {url: "http://%s/sink", timeout: 10s}
    retry: {max_attempts: 5, initial_backoff: 1s}
    concurrency: %d
%s`, port, dbURL, token, sinkLn.Addr(), o.concurrency, orderingRoutes(sinkLn.Addr().String(), o.concurrency))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	var serveLog bytes.Buffer
	serve := exec.CommandContext(ctx, bin, "serve", "--migrate", "--config", cfgPath)
	serve.Stdout, serve.Stderr = &serveLog, &serveLog
	serve.Env = append(os.Environ(), "OUTBOX_DEBUG_LISTEN="+os.Getenv("BENCH_PPROF_LISTEN"),
		"OUTBOX_INTAKE_BATCH_WORKERS="+os.Getenv("BENCH_BATCH_WORKERS"), "OUTBOX_COMPLETER_WORKERS="+os.Getenv("BENCH_COMPLETER_WORKERS"))
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { _ = serve.Process.Signal(syscall.SIGTERM); _ = serve.Wait() }()
	if err := waitReady(ctx, outboxURL); err != nil {
		return fmt.Errorf("%w\n%s", err, serveLog.String())
	}
	rss := newRSSSampler(serve.Process.Pid)
	defer rss.stop()

	gen := newGenerator(root, outboxURL, o)
	res := Result{When: time.Now().UTC(), Commit: gitCommit(root), Machine: machine(), Clients: o.clients, Duration: o.duration.String()}

	// Warm up connections, the pool and the plan caches.
	logf("warming up")
	gen.closedLoop(ctx, o.clients, 3*time.Second)
	if o.ordering {
		if res.Ordering, err = orderingPhase(ctx, o, outboxURL, token, dbURL, sink, root); err != nil {
			return err
		}
		printOrdering(os.Stdout, res.Ordering)
		return save(root, &res)
	}

	pause := func() error { return admin(ctx, outboxURL, token, "/admin/v1/routes/bench/pause") }
	resume := func() error { return admin(ctx, outboxURL, token, "/admin/v1/routes/bench/resume") }
	if o.retentionOnly {
		if res.Retention, err = retentionPhase(ctx, o, gen, dbURL, pause, resume, o.partitions, 2000); err != nil {
			return err
		}
		printCost(os.Stdout, &res)
		return save(root, &res)
	}

	if o.sustainedOnly {
		if res.Sustained, err = sustainedPhase(ctx, gen, dbURL, serve.Process.Pid, sink, o.openRate, o.sustain); err != nil {
			return err
		}
		res.OpenLoop = res.Sustained.Phase
		res.PeakRSSMiB = rss.peakMiB()
		printTable(os.Stdout, &res)
		printCost(os.Stdout, &res)
		return save(root, &res)
	}
	if o.drainOnly {
		if err := drain(ctx, o, gen, dbURL, sink, pause, resume, &res); err != nil {
			return err
		}
		res.PeakRSSMiB = rss.peakMiB()
		printTable(os.Stdout, &res)
		return save(root, &res)
	}

	// The closed loop with deliveries running against both pgbench
	// baselines, in rounds; each ratio is the rounds' median.
	if res.Rounds, err = rounds(ctx, o, gen, dbURL, sink, max(o.rounds, 1)); err != nil {
		return err
	}
	res.ClosedLoop = res.Rounds[0].phase
	res.DeliveriesPerSecDuringBurst = roundMedian(res.Rounds, func(r Round) float64 { return r.DeliveriesPS })
	res.MedianAccepted = roundMedian(res.Rounds, func(r Round) float64 { return r.AcceptedPS })
	res.MedianOutboxTx = roundMedian(res.Rounds, func(r Round) float64 { return r.PgbenchOutboxTx })
	res.MedianInsert = roundMedian(res.Rounds, func(r Round) float64 { return r.PgbenchInsert })
	res.MedianRatioOutboxTx = roundMedian(res.Rounds, func(r Round) float64 { return r.RatioOutboxTx })
	res.MedianRatioInsert = roundMedian(res.Rounds, func(r Round) float64 { return r.RatioInsert })
	res.PgbenchOutboxTx, res.PgbenchInsert = res.MedianOutboxTx, res.MedianInsert
	res.RatioOutboxTx, res.RatioInsert = res.MedianRatioOutboxTx, res.MedianRatioInsert

	logf("closed loop with deliveries paused: %d connections for %s", o.clients, o.duration)
	if err := pause(); err != nil {
		return err
	}
	res.IntakeAlone = gen.closedLoop(ctx, o.clients, o.duration)
	res.IntakeAlone.Target += ", deliveries paused"
	res.RatioOutboxTxAlone = res.IntakeAlone.AcceptedPS / res.PgbenchOutboxTx
	res.RatioInsertAlone = res.IntakeAlone.AcceptedPS / res.PgbenchInsert
	if err := resume(); err != nil {
		return err
	}
	if err := waitDrained(ctx, dbURL, 10*time.Minute); err != nil {
		return err
	}
	if o.quick {
		printTable(os.Stdout, &res)
		printCost(os.Stdout, &res)
		return save(root, &res)
	}

	if res.Sustained, err = sustainedPhase(ctx, gen, dbURL, serve.Process.Pid, sink, o.openRate, o.sustain); err != nil {
		return err
	}
	res.OpenLoop = res.Sustained.Phase

	logf("idle CPU over 10 s")
	res.IdleCPUPercent, err = idleCPU(serve.Process.Pid, 10*time.Second)
	if err != nil {
		return err
	}

	if err := drain(ctx, o, gen, dbURL, sink, pause, resume, &res); err != nil {
		return err
	}
	res.PeakRSSMiB = rss.peakMiB()

	// Last, since it leaves the database with many partitions.
	if res.Retention, err = retentionPhase(ctx, o, gen, dbURL, pause, resume, o.partitions, 2000); err != nil {
		return err
	}
	res.PeakRSSMiB = rss.peakMiB()

	if o.withOrdering {
		if res.Ordering, err = orderingPhase(ctx, o, outboxURL, token, dbURL, sink, root); err != nil {
			return err
		}
	}
	if res.Capacity, err = capacityPhase(ctx, o, o.capacity, bin, base, root); err != nil {
		return err
	}
	printTable(os.Stdout, &res)
	printCost(os.Stdout, &res)
	if res.Ordering != nil {
		printOrdering(os.Stdout, res.Ordering)
	}
	printCapacity(os.Stdout, res.Capacity)
	return save(root, &res)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func repoRoot() (string, error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		wd, _ := os.Getwd()
		return wd, nil
	}
	return strings.TrimSpace(string(out)), nil
}

func gitCommit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func machine() string {
	cpus := 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = strings.Count(string(b), "processor\t:")
	}
	return fmt.Sprintf("%d CPUs", cpus)
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "?"
	}
	p.User = nil
	return p.String()
}

// freshDatabase drops and creates a database next to base.
func freshDatabase(ctx context.Context, base, name string) (string, error) {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("cannot connect to %s: %w", redact(base), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

func waitReady(ctx context.Context, base string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("outbox did not become ready")
}

func admin(ctx context.Context, base, token, path string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return nil
}

// waitDrained waits until no delivery job waits or runs.
func waitDrained(ctx context.Context, dbURL string, limit time.Duration) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(limit)
	for {
		// EXISTS, not count(*): counting a 100,000-job backlog every
		// poll took a Postgres backend's whole core from the drain it
		// measured.
		var waiting bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = 'deliver' AND queue <> 'pgbench' AND state IN ('available', 'pending', 'running', 'retryable', 'scheduled'))`).Scan(&waiting); err != nil {
			return err
		}
		if !waiting {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("deliveries still waiting after %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sink is the fast target: it counts deliveries and answers 204.
type sink struct{ count atomic.Int64 }

func newSink() *sink { return &sink{} }

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	s.count.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// rssSampler tracks the outbox process's peak resident memory.
type rssSampler struct {
	pid  int
	peak atomic.Int64
	done chan struct{}
}

func newRSSSampler(pid int) *rssSampler {
	s := &rssSampler{pid: pid, done: make(chan struct{})}
	go func() {
		for {
			if kb := procStatusKB(pid, "VmHWM:"); kb > s.peak.Load() {
				s.peak.Store(kb)
			}
			select {
			case <-s.done:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() { close(s.done) }

func (s *rssSampler) peakMiB() float64 {
	if kb := procStatusKB(s.pid, "VmHWM:"); kb > s.peak.Load() {
		s.peak.Store(kb)
	}
	return float64(s.peak.Load()) / 1024
}

func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// idleCPU measures the process's CPU use over d, as a percentage of one
// core.
func idleCPU(pid int, d time.Duration) (float64, error) {
	t0, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	t1, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	const ticksPerSec = 100 // USER_HZ on Linux
	return float64(t1-t0) / ticksPerSec / d.Seconds() * 100, nil
}

func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime, nil
}

const outboxTxScript = `\set k random(1, 2000000000)
BEGIN;
INSERT INTO events (route, key, content_type, headers, body) VALUES ('pgbench', 'pgb-' || :k || '-' || :client_id, 'application/json', '{"User-Agent":["pgbench"]}', convert_to(repeat('x', 500), 'UTF8'));
INSERT INTO river_job (args, kind, max_attempts, queue, state, scheduled_at) VALUES ('{"event_id": 1, "route": "pgbench", "key": "k"}', 'deliver', 10, 'pgbench', 'available', now());
COMMIT;
`

const bareInsertScript = `\set k random(1, 2000000000)
INSERT INTO events (route, key, content_type, headers, body) VALUES ('pgbench', 'pgi-' || :k || '-' || :client_id, 'application/json', '{"User-Agent":["pgbench"]}', convert_to(repeat('x', 500), 'UTF8'));
`

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbench runs script with prepared statements on dbURL and returns its
// transactions per second. The rows it inserts go to route and queue
// "pgbench", which no worker runs.
func pgbench(ctx context.Context, dbURL string, clients int, d time.Duration, script string) (float64, error) {
	bin, err := exec.LookPath("pgbench")
	if err != nil {
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
		slices.Sort(matches)
		if len(matches) == 0 {
			return 0, fmt.Errorf("pgbench not found: install the Postgres client tools")
		}
		bin = matches[len(matches)-1]
	}
	f, err := os.CreateTemp("", "outbox-pgbench-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(script); err != nil {
		return 0, err
	}
	f.Close()
	cmd := exec.CommandContext(ctx, bin, "-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(d.Seconds())), "-f", f.Name(), dbURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	// Its jobs belong to no worker: remove them, so that they neither
	// count as backlog nor weigh on River's queries.
	if conn, err := pgx.Connect(ctx, dbURL); err == nil {
		_, _ = conn.Exec(ctx, `DELETE FROM river_job WHERE queue = 'pgbench'`)
		conn.Close(ctx)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps:\n%s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func printTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "webhook-outbox bench\t%s, commit %s, %s\n", r.When.Format(time.RFC3339), r.Commit, r.Machine)
	for _, p := range []*Phase{&r.ClosedLoop, &r.IntakeAlone, &r.OpenLoop, &r.OpenAlone} {
		if p.Target == "" {
			continue
		}
		fmt.Fprintf(tw, "%s\t\n", p.Target)
		fmt.Fprintf(tw, "  accepted/s\t%.0f\n", p.AcceptedPS)
		fmt.Fprintf(tw, "  ack latency p50 / p99 / p99.9\t%.2f / %.2f / %.2f ms\n", p.P50ms, p.P99ms, p.P999ms)
		fmt.Fprintf(tw, "  answers by status\t%s\n", statuses(p))
	}
	fmt.Fprintf(tw, "deliveries/s during the closed-loop burst\t%.0f\n", r.DeliveriesPerSecDuringBurst)
	fmt.Fprintf(tw, "drain of %d queued events, no intake\t%.1f s (%.0f deliveries/s)\n", r.DrainEvents, r.DrainSeconds, r.DrainPerSec)
	fmt.Fprintf(tw, "outbox peak RSS\t%.0f MiB\n", r.PeakRSSMiB)
	fmt.Fprintf(tw, "outbox idle CPU\t%.1f%% of a core\n", r.IdleCPUPercent)
	fmt.Fprintf(tw, "pgbench, per-request outbox tx (%d clients, prepared)\t%.0f tx/s\n", r.Clients, r.PgbenchOutboxTx)
	fmt.Fprintf(tw, "pgbench, bare single-row insert (%d clients, prepared)\t%.0f tx/s\n", r.Clients, r.PgbenchInsert)
	fmt.Fprintf(tw, "accepted/s ÷ outbox tx baseline\t%.2f× (%.2f× with deliveries paused)\n", r.RatioOutboxTx, r.RatioOutboxTxAlone)
	fmt.Fprintf(tw, "accepted/s ÷ bare insert baseline\t%.2f× (%.2f× with deliveries paused)\n", r.RatioInsert, r.RatioInsertAlone)
	_ = tw.Flush()
}

func statuses(p *Phase) string {
	keys := make([]string, 0, len(p.ByStatus))
	for k := range p.ByStatus {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, p.ByStatus[k]))
	}
	if p.TransportEr > 0 {
		parts = append(parts, fmt.Sprintf("transport errors: %d", p.TransportEr))
	}
	return strings.Join(parts, ", ")
}

func save(root string, r *Result) error {
	dir := filepath.Join(root, "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, r.When.Format("20060102T150405Z")+"-"+r.Commit+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	logf("wrote %s", path)
	return nil
}

// drain queues o.backlog events while the route is paused, then resumes it
// and times their delivery to the fast sink with no intake running.
func drain(ctx context.Context, o options, gen *generator, dbURL string, sink *sink, pause, resume func() error, res *Result) error {
	logf("drain: %d events queued while the route is paused, then resumed", o.backlog)
	if err := pause(); err != nil {
		return err
	}
	gen.fill(ctx, o.clients, o.backlog)
	before := sink.count.Load()
	t0 := time.Now()
	if err := resume(); err != nil {
		return err
	}
	logf("drain: %d events queued, route resumed", o.backlog)
	if err := waitDrained(ctx, dbURL, 10*time.Minute); err != nil {
		return err
	}
	res.DrainSeconds = time.Since(t0).Seconds()
	res.DrainEvents = int(sink.count.Load() - before)
	res.DrainPerSec = float64(res.DrainEvents) / res.DrainSeconds
	return nil
}
