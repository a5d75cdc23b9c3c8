package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The soak's timings. Retention runs every soakMaintenance over partitions
// of soakPartition, with event_retention 1m (the least the config takes):
// the seeded events' partitions expire in the first seconds of the load,
// while their deliveries run, and those the senders filled first expire
// about 65 s in.
const (
	soakLoad        = 60 * time.Second
	soakSeeds       = 300
	soakDrain       = 60 * time.Second
	soakPartition   = 5 * time.Second
	soakMaintenance = 3 * time.Second
	soakAdminToken  = "soak-admin-token-0123456789abcdef0123456789"
)

// TestConcurrencySoak runs, all at once, for soakLoad: senders posting, a
// flaky target (500s, 503s with Retry-After, hangs past the timeout),
// bulk dead-letter retries through the CLI and the admin API, replays of
// one window through the CLI and the API at the same moment, pauses and
// resumes, and retention expiring partitions every few seconds, starting
// with those of soakSeeds events received a minute before the run and not
// yet delivered, whose survivors it moves while they are being delivered.
// After the backlog drains, its ledger checks that:
//   - every event is delivered or a dead letter, and none has vanished but
//     those retention removed after the target acknowledged them;
//   - no delivery job has vanished;
//   - no disk partition is orphaned: every events_p* table is attached;
//   - duplicates stay within the bound for a run without a crash, which is
//     none: each 2xx at the target is one completed delivery job, or an
//     attempt its job recorded as unanswered (a 2xx after target.timeout);
//     a second job of one event comes only from a replay, by design, and
//     never while another job of that event is open.
func TestConcurrencySoak(t *testing.T) {
	suite(t)
	dbURL := shared(t).database(t, "soak")
	tg := newTarget(t, flaky)
	tg.retryAfter = "1"
	port := freePort(t)
	// A fixed limit: the soak stresses correctness under concurrency. The
	// adaptive limit would, by design, hold a target that fails a fifth of
	// its requests at one request at a time (the fleet cases test that),
	// and the drain would outlast soakDrain.
	cfg := config{dbURL: dbURL, port: port, replica: "a", adminToken: soakAdminToken,
		top: "event_retention: 1m\ndead_letter_retention: forever\n",
		routes: route("hooks", "/hooks", "1s", `    retry: {max_attempts: 3, initial_backoff: 100ms, max_backoff: 500ms}
    concurrency: 8
    adaptive_concurrency: false
    circuit_breaker: {failures: 10, cooldown: 1s, max_cooldown: 2s}`)}
	cfgPath := cfg.write(t, tg.srv.URL)
	migrate(t, cfgPath)
	p := pool(t, dbURL)
	// The migration made empty partitions of a day from yesterday on;
	// the soak's partitions of seconds would only overlap them.
	if _, err := p.Exec(context.Background(), `DO $$ DECLARE p text; BEGIN
		FOR p IN SELECT name FROM outbox_live_partitions() LOOP EXECUTE format('DROP TABLE %I', p); END LOOP; END $$`); err != nil {
		t.Fatal(err)
	}
	seed(t, p)
	srv := startServeEnv(t, "serve", cfgPath, port, []string{
		"OUTBOX_TEST_PARTITION_INTERVAL=" + soakPartition.String(),
		"OUTBOX_TEST_MAINTENANCE_INTERVAL=" + soakMaintenance.String(),
	})
	ops := &operator{t: t, base: srv.base, cfgPath: cfgPath}
	seen := newSightings()
	seen.look(p)

	start := time.Now()
	l := newLedger()
	ctx, stopLoad := context.WithTimeout(context.Background(), soakLoad)
	defer stopLoad()
	load := senders(ctx, l, 6, 1_000_000, "soak", 40*time.Millisecond, func(int, int) string { return srv.base })
	var wg sync.WaitGroup
	wg.Go(func() { // bulk retries of dead letters, by CLI and by API in turn
		for i := 0; ctx.Err() == nil; i++ {
			ops.retry(i%2 == 0)
			sleep(ctx, 4*time.Second)
		}
	})
	wg.Go(func() { // the same window replayed by CLI and API at once
		for sleep(ctx, 8*time.Second); ctx.Err() == nil; sleep(ctx, 8*time.Second) {
			now := time.Now()
			since, until := now.Add(-10*time.Second).UTC().Format(time.RFC3339), now.Add(-4*time.Second).UTC().Format(time.RFC3339)
			var both sync.WaitGroup
			both.Go(func() { ops.replay(true, since, until) })
			both.Go(func() { ops.replay(false, since, until) })
			both.Wait()
		}
	})
	wg.Go(func() { // pauses and resumes
		for i := 0; ctx.Err() == nil; i++ {
			sleep(ctx, 6*time.Second)
			ops.pause(i%2 == 0, "pause")
			time.Sleep(1500 * time.Millisecond)
			ops.pause(i%2 == 1, "resume")
		}
	})
	wg.Go(func() { // what the database holds, to find anything that vanishes
		for ctx.Err() == nil {
			seen.look(p)
			sleep(ctx, 2*time.Second)
		}
	})
	load.Wait()
	wg.Wait()
	loadEnded := time.Now()
	ops.pause(false, "resume") // whatever the last pause did

	// Drain: every delivery job ends delivered or dead.
	waitUntil(t, soakDrain, "every delivery job to finish (completed, discarded or cancelled)", func() bool {
		var open int
		err := p.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'deliver'
			AND state NOT IN ('completed', 'discarded', 'cancelled')`).Scan(&open)
		return err == nil && open == 0
	})
	drained := time.Now()
	seen.look(p)

	// 1. Every acknowledged event, and every event ever seen, is delivered
	// or a dead letter; one that is gone was removed by retention after
	// the target acknowledged it.
	final, err := events(context.Background(), p, "hooks")
	if err != nil {
		t.Fatal(err)
	}
	keys := l.keys()
	all := seen.eventKeys(keys)
	var delivered, dead, expired int
	var problems []string
	for _, k := range all {
		s, ok := final[k]
		switch {
		case ok && s.delivered:
			delivered++
		case ok && s.dead:
			dead++
		case ok:
			problems = append(problems, k+" is stored, but neither delivered nor a dead letter")
		case len(tg.deliveredBy(k)) > 0:
			expired++
		default:
			problems = append(problems, k+" vanished from events, and the target never acknowledged it")
		}
	}
	// 2. No delivery job has vanished: completed ones are kept a day, dead
	// letters forever.
	jobIDs, err := deliverJobIDs(p)
	if err != nil {
		t.Fatal(err)
	}
	var vanishedJobs []int64
	for id := range seen.jobs {
		if !jobIDs[id] {
			vanishedJobs = append(vanishedJobs, id)
		}
	}
	slices.Sort(vanishedJobs)
	if len(vanishedJobs) > 0 {
		problems = append(problems, fmt.Sprintf("%d delivery jobs vanished, e.g. %v", len(vanishedJobs), vanishedJobs[:min(5, len(vanishedJobs))]))
	}
	// 3. No partition is orphaned. Retention may be between a detach and
	// its drop at any instant: wait for a moment when none is.
	var orphans []string
	waitUntil(t, 30*time.Second, "every events_p* table to be attached to events_live", func() bool {
		orphans, err = orphanPartitions(p)
		return err == nil && len(orphans) == 0
	})
	serveLog := srv.log()
	dropped := strings.Count(serveLog, "dropped expired events partition")
	if dropped == 0 || expired == 0 {
		problems = append(problems, fmt.Sprintf("retention dropped %d partitions and removed %d delivered events during the run; the soak must see partitions expire", dropped, expired))
	}
	// 4. Duplicates: each 2xx the target sent is one completed delivery
	// job, and no two jobs of one event were open at once.
	jobs, err := jobsByKey(p)
	if err != nil {
		t.Fatal(err)
	}
	lateByKey, err := unanswered(context.Background(), p, "hooks")
	if err != nil {
		t.Fatal(err)
	}
	var sends, replaySends, lateSends, unrecorded int
	for _, k := range all {
		got, js := len(tg.deliveredBy(k)), jobs[k]
		completed := 0
		for i, j := range js {
			if j.state == "completed" {
				completed++
			}
			if i > 0 && j.createdAt.Before(js[i-1].finalizedAt) {
				problems = append(problems, fmt.Sprintf("%s: delivery jobs %d and %d were open at once (created %s, before %d finished at %s); its jobs: %s",
					k, js[i-1].id, j.id, j.createdAt.Format(time.RFC3339Nano), js[i-1].id, js[i-1].finalizedAt.Format(time.RFC3339Nano), describeJobs(js)))
			}
		}
		sends += got
		replaySends += max(completed-1, 0)
		// A 2xx outbox never got (after target.timeout) is retried: it is
		// one more 2xx than completions, and its job recorded the attempt
		// as unanswered.
		late := min(max(got-completed, 0), lateByKey[k])
		lateSends += late
		switch {
		case got < completed:
			problems = append(problems, fmt.Sprintf("%s: the target acknowledged %d deliveries, but %d delivery jobs completed", k, got, completed))
		case got-completed > late:
			unrecorded += got - completed - late
			problems = append(problems, fmt.Sprintf("%s: the target acknowledged %d deliveries, but %d delivery jobs completed and %d attempts went unanswered: %s",
				k, got, completed, lateByKey[k], describeJobs(js)))
		}
	}
	l.checkContract(t)
	ops.check()
	if len(problems) > 0 {
		t.Errorf("%d problems; without a crash no event is lost and none is delivered twice except by a replay (%s), e.g.:\n  %s",
			len(problems), crashBound(8, 0), strings.Join(problems[:min(15, len(problems))], "\n  "))
	}

	var requests int
	for _, r := range tg.log() {
		if r.route == "hooks" {
			requests++
		}
	}
	figure(t, "%s of load: %d events acknowledged (%d seen in all), %d target requests, %d 2xx; drained %s after the load",
		round(loadEnded.Sub(start)), len(keys), len(all), requests, sends, round(drained.Sub(loadEnded)))
	figure(t, "at the end: %d delivered and stored, %d delivered and removed by retention (%d partitions dropped, %d survivors moved), %d dead letters",
		delivered, expired, dropped, survivorsMoved(serveLog), dead)
	figure(t, "deliveries recorded only after retrying (their rows were held): %d; recorded by a later run without sending again: %d",
		strings.Count(serveLog, "delivered; recorded after retrying"), strings.Count(serveLog, "recording a delivery the target acknowledged in an earlier run"))
	figure(t, "operator actions: %s", ops.summary())
	figure(t, "duplicate 2xx: %d sent by replays (by design), %d answered after target.timeout, %d beyond the bound (bound 0: no crash)", replaySends, lateSends, unrecorded)
}

// survivorsMoved adds up what retention's log says it moved to
// events_retained.
func survivorsMoved(log string) int {
	total := 0
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "dropped expired events partition") {
			continue
		}
		if _, after, ok := strings.Cut(line, "survivors_retained="); ok {
			var n int
			if _, err := fmt.Sscan(after, &n); err == nil {
				total += n
			}
		}
	}
	return total
}

// seed stores soakSeeds events received 65 to 55 s ago, in partitions of
// soakPartition, each with a delivery job waiting, as intake would have:
// their partitions expire as soon as the run starts.
func seed(t *testing.T, p *pgxpool.Pool) {
	t.Helper()
	_, err := p.Exec(context.Background(), fmt.Sprintf(`
		SELECT outbox_ensure_partitions(now() - interval '70 seconds', now(), interval '%d seconds');
		WITH ev AS (
			INSERT INTO events (route, key, content_type, body, received_at)
			SELECT 'hooks', 'seed-' || g, 'application/json', convert_to(format('{"id":"seed-%%s"}', g), 'UTF8'),
			       now() - interval '65 seconds' + g * (interval '10 seconds' / %[2]d)
			FROM generate_series(0, %[2]d - 1) AS g
			RETURNING id, key, received_at),
		keys AS (INSERT INTO event_keys (route, key, event_id, received_at) SELECT 'hooks', key, id, received_at FROM ev)
		INSERT INTO river_job (args, kind, max_attempts, queue, state)
		SELECT jsonb_build_object('event_id', id, 'route', 'hooks', 'key', key, 'received_at', received_at), 'deliver', 3, 'hooks', 'available'
		FROM ev`, int(soakPartition.Seconds()), soakSeeds))
	if err != nil {
		t.Fatalf("cannot seed events: %v", err)
	}
}

// flaky is the soak's target: mostly 200, and otherwise a 500, a 503 with
// Retry-After, or a hang that is never processed (outbox gives up at the
// route's 1 s timeout, and the target never acts on it).
func flaky(*http.Request) (int, <-chan struct{}) {
	switch n := rand.IntN(100); {
	case n < 1:
		return 0, make(chan struct{}) // hang; never processed
	case n < 8:
		return http.StatusServiceUnavailable, nil // with Retry-After: 1
	case n < 20:
		return http.StatusInternalServerError, nil
	}
	return http.StatusOK, nil
}

// operator runs the operator's actions against serve, through the CLI
// binary or the admin API, and keeps what each answered.
type operator struct {
	t       *testing.T
	base    string
	cfgPath string

	mu       sync.Mutex
	counts   map[string]int
	failures []string
}

func (o *operator) done(what string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.counts == nil {
		o.counts = map[string]int{}
	}
	o.counts[what]++
	if err != nil {
		o.failures = append(o.failures, fmt.Sprintf("%s: %v", what, err))
	}
}

// cli runs the outbox binary with the soak's config.
func (o *operator) cli(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append(args, "--config", o.cfgPath)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("outbox %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// api calls the admin API and decodes a 200's JSON answer into out.
func (o *operator) api(path string, body, out any) error {
	raw, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, o.base+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+soakAdminToken)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (o *operator) retry(byCLI bool) {
	if byCLI {
		_, err := o.cli("dlq", "retry", "--route", "hooks", "--json")
		o.done("dlq retry (CLI)", err)
		return
	}
	o.done("dlq retry (API)", o.api("/admin/v1/dead-letters/retry", map[string]string{"route": "hooks"}, nil))
}

func (o *operator) replay(byCLI bool, since, until string) {
	if byCLI {
		_, err := o.cli("replay", "--route", "hooks", "--since", since, "--until", until, "--json")
		o.done("replay (CLI)", err)
		return
	}
	o.done("replay (API)", o.api("/admin/v1/events/replay", map[string]string{"route": "hooks", "since": since, "until": until}, nil))
}

func (o *operator) pause(byCLI bool, action string) {
	if byCLI {
		_, err := o.cli("routes", action, "hooks")
		o.done("routes "+action+" (CLI)", err)
		return
	}
	o.done("routes "+action+" (API)", o.api("/admin/v1/routes/hooks/"+action, nil, nil))
}

// check fails the test for every action that failed.
func (o *operator) check() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.failures) > 0 {
		o.t.Errorf("%d operator actions failed, e.g.:\n  %s", len(o.failures), strings.Join(o.failures[:min(10, len(o.failures))], "\n  "))
	}
}

func (o *operator) summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var parts []string
	for what, n := range o.counts {
		parts = append(parts, fmt.Sprintf("%s ×%d", what, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// sightings is every event key and delivery job id the database has held
// during the run, read every few seconds.
type sightings struct {
	mu     sync.Mutex
	events map[string]bool
	jobs   map[int64]bool
}

func newSightings() *sightings {
	return &sightings{events: map[string]bool{}, jobs: map[int64]bool{}}
}

func (s *sightings) look(p *pgxpool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evs, err := events(ctx, p, "hooks")
	if err != nil {
		return // the next look sees them
	}
	ids, err := deliverJobIDs(p)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range evs {
		s.events[k] = true
	}
	for id := range ids {
		s.jobs[id] = true
	}
}

// eventKeys is every key seen, and those of keys.
func (s *sightings) eventKeys(keys []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := map[string]bool{}
	for _, k := range keys {
		all[k] = true
	}
	for k := range s.events {
		all[k] = true
	}
	out := make([]string, 0, len(all))
	for k := range all {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func deliverJobIDs(p *pgxpool.Pool) (map[int64]bool, error) {
	rows, err := p.Query(context.Background(), `SELECT id FROM river_job WHERE kind = 'deliver'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ids := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	return ids, rows.Err()
}

type jobRow struct {
	id                     int64
	state                  string
	createdAt, finalizedAt time.Time
	attempt                int
	metadata, errors       string
}

func describeJobs(js []jobRow) string {
	var parts []string
	for _, j := range js {
		parts = append(parts, fmt.Sprintf("[%d %s attempt %d created %s finalized %s metadata %s errors %s]", j.id, j.state, j.attempt,
			j.createdAt.Format("15:04:05.000000"), j.finalizedAt.Format("15:04:05.000000"), j.metadata, j.errors))
	}
	return strings.Join(parts, " ")
}

// jobsByKey returns each key's delivery jobs, oldest first.
func jobsByKey(p *pgxpool.Pool) (map[string][]jobRow, error) {
	rows, err := p.Query(context.Background(), `SELECT args->>'key', id, state::text, created_at, coalesce(finalized_at, 'infinity'),
		       attempt, metadata::text, coalesce(array_to_string(errors, ' | '), '')
		FROM river_job WHERE kind = 'deliver' ORDER BY args->>'key', created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]jobRow{}
	for rows.Next() {
		var k string
		var j jobRow
		if err := rows.Scan(&k, &j.id, &j.state, &j.createdAt, &j.finalizedAt, &j.attempt, &j.metadata, &j.errors); err != nil {
			return nil, err
		}
		out[k] = append(out[k], j)
	}
	return out, rows.Err()
}

// orphanPartitions lists events partitions on disk that are attached to
// nothing: their rows would be invisible to every query.
func orphanPartitions(p *pgxpool.Pool) ([]string, error) {
	rows, err := p.Query(context.Background(), `SELECT c.relname FROM pg_class c
		WHERE c.relname LIKE 'events\_p%' AND c.relkind = 'r'
		  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
