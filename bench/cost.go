package main

// The per-event cost phases (issue 15): intake against the pgbench
// baselines in three interleaved rounds, intake with 35 events partitions
// against 6, a sustained open loop with deliveries running, and the CPU
// that outbox and Postgres spent per accepted-and-delivered event.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
)

// Rounds is one round of the side-by-side comparison.
type Round struct {
	AcceptedPS      float64 `json:"accepted_per_sec"`
	P99ms           float64 `json:"p99_ms"`
	PgbenchOutboxTx float64 `json:"pgbench_outbox_tx_per_sec"`
	PgbenchInsert   float64 `json:"pgbench_bare_insert_per_sec"`
	RatioOutboxTx   float64 `json:"ratio_to_outbox_tx"`
	RatioInsert     float64 `json:"ratio_to_bare_insert"`
	// DeliveriesPS is the deliveries/s during the closed loop.
	DeliveriesPS float64 `json:"deliveries_per_sec_during_closed_loop"`

	phase Phase
}

// Retention is intake with few and many events partitions.
type Retention struct {
	PartitionsBefore int     `json:"partitions_before"`
	PartitionsAfter  int     `json:"partitions_after"`
	RowsPerOldPart   int     `json:"rows_per_added_partition"`
	AcceptedBefore   float64 `json:"accepted_per_sec_before"`
	AcceptedAfter    float64 `json:"accepted_per_sec_after"`
	Change           float64 `json:"change"` // after / before - 1
	// Buffer pages read and statement time per inserted event of intake's
	// insert statement (pg_stat_statements), before and after: the work,
	// which other load on the machine does not change as it does the rate.
	BlocksBefore float64 `json:"insert_blocks_per_event_before,omitempty"`
	BlocksAfter  float64 `json:"insert_blocks_per_event_after,omitempty"`
	StmtUsBefore float64 `json:"insert_us_per_event_before,omitempty"`
	StmtUsAfter  float64 `json:"insert_us_per_event_after,omitempty"`
}

// Sustained is the long open loop with deliveries running.
type Sustained struct {
	Phase
	// Backlog is the delivery jobs waiting or running, every 5 s.
	Backlog []BacklogSample `json:"backlog"`
	// DrainedAfterSeconds is how long after the last request the backlog
	// reached zero.
	DrainedAfterSeconds float64 `json:"drained_after_seconds"`
	Events              int64   `json:"events_accepted_and_delivered"`
	OutboxCPUus         float64 `json:"outbox_cpu_us_per_event"`
	PostgresCPUus       float64 `json:"postgres_cpu_us_per_event"`
	PostgresStmtUs      float64 `json:"postgres_statement_us_per_event,omitempty"`
	TopStatements       []Stmt  `json:"top_statements,omitempty"`
}

// BacklogSample is the backlog at one moment of the sustained phase.
type BacklogSample struct {
	AtSeconds float64 `json:"at_s"`
	Jobs      int64   `json:"jobs"`
}

// Stmt is one statement's share of Postgres's time (pg_stat_statements).
type Stmt struct {
	Query      string  `json:"query"`
	Calls      int64   `json:"calls"`
	TotalMs    float64 `json:"total_ms"`
	UsPerEvent float64 `json:"us_per_event"`
}

// rounds runs n rounds of: the closed loop with deliveries running, then
// both pgbench baselines, so that each ratio compares measurements taken
// minutes apart on the same database. Deliveries drain between rounds.
func rounds(ctx context.Context, o options, gen *generator, dbURL string, s *sink, n int) ([]Round, error) {
	var out []Round
	for i := range n {
		logf("round %d of %d: closed loop, then pgbench outbox tx and bare insert, %s each", i+1, n, o.duration)
		delivered := s.count.Load()
		t0 := time.Now()
		p := gen.closedLoop(ctx, o.clients, o.duration)
		deliveriesPS := float64(s.count.Load()-delivered) / time.Since(t0).Seconds()
		if err := waitDrained(ctx, dbURL, 10*time.Minute); err != nil {
			return nil, err
		}
		r := Round{AcceptedPS: p.AcceptedPS, P99ms: p.P99ms, DeliveriesPS: deliveriesPS, phase: p}
		var err error
		if r.PgbenchOutboxTx, err = pgbench(ctx, dbURL, o.clients, o.duration, outboxTxScript); err != nil {
			return nil, err
		}
		if r.PgbenchInsert, err = pgbench(ctx, dbURL, o.clients, o.duration, bareInsertScript); err != nil {
			return nil, err
		}
		r.RatioOutboxTx, r.RatioInsert = r.AcceptedPS/r.PgbenchOutboxTx, r.AcceptedPS/r.PgbenchInsert
		out = append(out, r)
	}
	return out, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func roundMedian(rs []Round, f func(Round) float64) float64 {
	xs := make([]float64, len(rs))
	for i, r := range rs {
		xs[i] = f(r)
	}
	return median(xs)
}

// retentionPhase measures intake (deliveries paused) with the partitions
// there are, then adds old daily partitions, each with rows, until there
// are `target`, and measures again. The bench's event_retention keeps them.
func retentionPhase(ctx context.Context, o options, gen *generator, dbURL string, pause, resume func() error, target, rowsPer int) (*Retention, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	count := func() (int, error) {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox_live_partitions()`).Scan(&n)
		return n, err
	}
	res := &Retention{RowsPerOldPart: rowsPer}
	if res.PartitionsBefore, err = count(); err != nil {
		return nil, err
	}
	if err := pause(); err != nil {
		return nil, err
	}
	defer func() { _ = resume() }()
	// The first loop after a pause or a fresh start measures slower (the
	// pool grows, plans are made): one unmeasured loop first, so the two
	// measured ones differ only in the partitions.
	logf("retention: warm-up loop, deliveries paused")
	gen.closedLoop(ctx, o.clients, o.duration)
	_, _ = conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
	insertCost := func() (blocks, us float64) {
		_ = conn.QueryRow(ctx, `SELECT coalesce(sum(shared_blks_hit + shared_blks_read) / nullif(sum(rows), 0), 0)::float8,
			coalesce(sum(total_exec_time) * 1000 / nullif(sum(rows), 0), 0)::float8
			FROM pg_stat_statements WHERE query LIKE '-- name: InsertEvents%'`).Scan(&blocks, &us)
		_, _ = conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
		return blocks, us
	}
	insertCost()
	logf("retention: closed loop with %d partitions, deliveries paused", res.PartitionsBefore)
	res.AcceptedBefore = gen.closedLoop(ctx, o.clients, o.duration).AcceptedPS
	res.BlocksBefore, res.StmtUsBefore = insertCost()

	add := target - res.PartitionsBefore
	if add > 0 {
		logf("retention: adding %d old partitions of %d rows each", add, rowsPer)
		var oldest time.Time
		if err := conn.QueryRow(ctx, `SELECT min(range_start) FROM outbox_live_partitions()`).Scan(&oldest); err != nil {
			return nil, err
		}
		from := oldest.Add(-time.Duration(add) * 24 * time.Hour)
		if _, err := conn.Exec(ctx, `SELECT outbox_ensure_partitions($1, $2, interval '1 day')`, from, oldest); err != nil {
			return nil, err
		}
		// Delivered events, as retention would find them, with their keys.
		if _, err := conn.Exec(ctx, `
			WITH ins AS (
				INSERT INTO events (route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts)
				SELECT 'bench', 'old-' || d || '-' || i, ts + (i * interval '1 second'), 'application/json', '{}',
				       convert_to(repeat('x', 800), 'UTF8'), ts + (i * interval '1 second'), 1
				FROM generate_series(0, $2::int - 1) AS d,
				     LATERAL (SELECT $1::timestamptz + d * interval '1 day' AS ts) AS t,
				     generate_series(1, $3::int) AS i
				RETURNING id, route, key, received_at)
			INSERT INTO event_keys (route, key, event_id, received_at) SELECT route, key, id, received_at FROM ins`,
			from, add, rowsPer); err != nil && !strings.Contains(err.Error(), "event_keys") {
			return nil, err
		} else if err != nil {
			// A schema without the key table (an older commit): the
			// events alone.
			if _, err := conn.Exec(ctx, `
				INSERT INTO events (route, key, received_at, content_type, headers, body, delivered_at, delivery_attempts)
				SELECT 'bench', 'old-' || d || '-' || i, ts + (i * interval '1 second'), 'application/json', '{}',
				       convert_to(repeat('x', 800), 'UTF8'), ts + (i * interval '1 second'), 1
				FROM generate_series(0, $2::int - 1) AS d,
				     LATERAL (SELECT $1::timestamptz + d * interval '1 day' AS ts) AS t,
				     generate_series(1, $3::int) AS i`, from, add, rowsPer); err != nil {
				return nil, err
			}
		}
		// Vacuumed and analysed now, so autovacuum does not visit the 30
		// new partitions during the measurement.
		if _, err := conn.Exec(ctx, `VACUUM (ANALYZE) events`); err != nil {
			return nil, err
		}
		_, _ = conn.Exec(ctx, `VACUUM (ANALYZE) event_keys`) // none before migration 000022
	}
	insertCost()
	if res.PartitionsAfter, err = count(); err != nil {
		return nil, err
	}
	logf("retention: closed loop with %d partitions, deliveries paused", res.PartitionsAfter)
	res.AcceptedAfter = gen.closedLoop(ctx, o.clients, o.duration).AcceptedPS
	res.BlocksAfter, res.StmtUsAfter = insertCost()
	res.Change = res.AcceptedAfter/res.AcceptedBefore - 1
	return res, nil
}

// sustainedPhase sends rate requests/s for d with deliveries running,
// samples the backlog every 5 s, waits for the drain, and divides the CPU
// outbox and Postgres spent from the start to the drain by the events
// accepted (each of which was then delivered).
func sustainedPhase(ctx context.Context, gen *generator, dbURL string, outboxPID int, s *sink, rate int, d time.Duration) (*Sustained, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return nil, err
	}
	postmaster, err := parentPID(backend)
	if err != nil {
		return nil, err
	}
	pgss := true
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		pgss = false
	} else if _, err := conn.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		pgss = false
	}
	if !pgss {
		logf("pg_stat_statements is not loaded (shared_preload_libraries): Postgres's cost comes from /proc only")
	}

	res := &Sustained{}
	outbox0, _ := cpuTicks(outboxPID)
	pg0 := clusterTicks(postmaster)
	delivered0 := s.count.Load()
	start := time.Now()
	sampleDone := make(chan struct{})
	sampler := make(chan []BacklogSample, 1)
	go func() {
		var samples []BacklogSample
		c, err := pgx.Connect(ctx, dbURL)
		if err == nil {
			defer c.Close(ctx)
		}
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sampleDone:
				sampler <- samples
				return
			case <-tick.C:
				var n int64
				if err == nil {
					_ = c.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'deliver' AND queue <> 'pgbench' AND state IN ('available', 'pending', 'running', 'retryable', 'scheduled')`).Scan(&n)
				}
				samples = append(samples, BacklogSample{AtSeconds: time.Since(start).Round(time.Second).Seconds(), Jobs: n})
			}
		}
	}()
	logf("sustained: open loop at %d requests/s for %s, deliveries running", rate, d)
	res.Phase = gen.openLoop(ctx, rate, d)
	end := time.Now()
	if err := waitDrained(ctx, dbURL, 10*time.Minute); err != nil {
		return nil, err
	}
	res.DrainedAfterSeconds = time.Since(end).Seconds()
	close(sampleDone)
	res.Backlog = <-sampler
	outbox1, _ := cpuTicks(outboxPID)
	pg1 := clusterTicks(postmaster)
	accepted := int64(res.ByStatus["200"])
	res.Events = min(accepted, s.count.Load()-delivered0)
	if res.Events == 0 {
		return res, nil
	}
	const usPerTick = 1e6 / 100 // USER_HZ
	res.OutboxCPUus = float64(outbox1-outbox0) * usPerTick / float64(res.Events)
	res.PostgresCPUus = float64(pg1-pg0) * usPerTick / float64(res.Events)
	if pgss {
		rows, err := conn.Query(ctx, `SELECT regexp_replace(query, '\s+', ' ', 'g'), calls::bigint, total_exec_time
			FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			  -- Not the bench's own backlog counts.
			  AND query NOT LIKE '%queue <> %'
			ORDER BY total_exec_time DESC`)
		if err != nil {
			return nil, err
		}
		var total float64
		for rows.Next() {
			var st Stmt
			if err := rows.Scan(&st.Query, &st.Calls, &st.TotalMs); err != nil {
				return nil, err
			}
			total += st.TotalMs
			st.UsPerEvent = st.TotalMs * 1000 / float64(res.Events)
			if len(res.TopStatements) < 8 {
				if len(st.Query) > 120 {
					st.Query = st.Query[:120] + "…"
				}
				res.TopStatements = append(res.TopStatements, st)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
		res.PostgresStmtUs = total * 1000 / float64(res.Events)
	}
	return res, nil
}

// parentPID reads a process's parent from /proc.
func parentPID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read Postgres's processes (is the server on this machine?): %w", err)
	}
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	return strconv.Atoi(strings.Fields(rest)[1])
}

// clusterTicks sums the CPU ticks of a Postgres cluster: its postmaster,
// with the children it has reaped, and its live children.
func clusterTicks(postmaster int) int64 {
	total := int64(0)
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", postmaster)); err == nil {
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
			n, _ := strconv.ParseInt(f[i], 10, 64)
			total += n
		}
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		b, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid != postmaster {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + s
	}
	return total
}

func printCost(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(r.Rounds) > 0 {
		fmt.Fprintf(tw, "side by side, %d rounds\tclosed loop accepted/s | pgbench outbox tx/s | bare insert tx/s | ratios\n", len(r.Rounds))
		for i, x := range r.Rounds {
			fmt.Fprintf(tw, "  round %d\t%.0f | %.0f | %.0f | %.2f× / %.2f×\n", i+1, x.AcceptedPS, x.PgbenchOutboxTx, x.PgbenchInsert, x.RatioOutboxTx, x.RatioInsert)
		}
		fmt.Fprintf(tw, "  median\t%.0f | %.0f | %.0f | %.2f× / %.2f×\n", r.MedianAccepted, r.MedianOutboxTx, r.MedianInsert, r.MedianRatioOutboxTx, r.MedianRatioInsert)
	}
	if x := r.Retention; x != nil {
		fmt.Fprintf(tw, "intake, deliveries paused, %d vs %d partitions\t%.0f vs %.0f accepted/s (%+.1f%%)\n", x.PartitionsBefore, x.PartitionsAfter, x.AcceptedBefore, x.AcceptedAfter, x.Change*100)
		if x.BlocksBefore > 0 {
			fmt.Fprintf(tw, "  intake's insert statement per event\t%.1f vs %.1f buffer pages, %.0f vs %.0f µs (pg_stat_statements)\n", x.BlocksBefore, x.BlocksAfter, x.StmtUsBefore, x.StmtUsAfter)
		}
	}
	if x := r.Sustained; x != nil {
		fmt.Fprintf(tw, "%s, 60 s\t\n", x.Target)
		fmt.Fprintf(tw, "  ack latency p50 / p99 / p99.9\t%.2f / %.2f / %.2f ms\n", x.P50ms, x.P99ms, x.P999ms)
		fmt.Fprintf(tw, "  answers by status\t%s\n", statuses(&x.Phase))
		var b strings.Builder
		for _, s := range x.Backlog {
			fmt.Fprintf(&b, "%.0fs:%d ", s.AtSeconds, s.Jobs)
		}
		fmt.Fprintf(tw, "  backlog (jobs waiting or running)\t%s\n", strings.TrimSpace(b.String()))
		fmt.Fprintf(tw, "  drained after the last request\t%.1f s\n", x.DrainedAfterSeconds)
		fmt.Fprintf(tw, "  CPU per accepted-and-delivered event\toutbox %.0f µs, Postgres %.0f µs (/proc)\n", x.OutboxCPUus, x.PostgresCPUus)
		if x.PostgresStmtUs > 0 {
			fmt.Fprintf(tw, "  Postgres statement time per event\t%.0f µs (pg_stat_statements)\n", x.PostgresStmtUs)
			for _, s := range x.TopStatements {
				fmt.Fprintf(tw, "    %.0f µs/event, %d calls\t%s\n", s.UsPerEvent, s.Calls, s.Query)
			}
		}
	}
	_ = tw.Flush()
}
