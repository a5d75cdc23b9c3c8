package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The suite's processes and clusters, set up by TestMain.
var (
	binary   string // the real outbox binary
	repoRoot string
	tmpRoot  string // clusters' data directories; reachable by the postgres user

	clustersMu sync.Mutex
	clusters   []*cluster

	sharedOnce    sync.Once
	sharedCluster *cluster
	sharedErr     error

	figuresMu sync.Mutex
	figures   []string
)

func TestMain(m *testing.M) {
	if os.Getenv("OUTBOX_FAULTS") != "1" {
		// The tests skip themselves and say how to run them.
		os.Exit(m.Run())
	}
	var err error
	repoRoot, err = filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stopStaleClusters()
	tmpRoot, err = os.MkdirTemp("", fmt.Sprintf("outbox-faults-%d-", os.Getpid()))
	if err == nil {
		// initdb and postgres run as an unprivileged user when we are
		// root: it must reach the data directories below.
		err = os.Chmod(tmpRoot, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(tmpRoot, "outbox")
	build := exec.Command("go", "build", "-o", binary, "./cmd/outbox")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot build outbox:", err)
		os.Exit(1)
	}
	code := m.Run()
	clustersMu.Lock()
	for _, c := range clusters {
		if _, err := c.devdb("stop", "fast"); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	clustersMu.Unlock()
	if len(figures) > 0 {
		fmt.Println("\nfault-injection figures:")
		for _, f := range figures {
			fmt.Println("  " + f)
		}
	}
	_ = os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// stopStaleClusters stops the clusters of earlier runs whose process died
// before it could (a CI timeout, say), and removes their directories.
func stopStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "outbox-faults-*-*"))
	for _, dir := range dirs {
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(dir), "outbox-faults-%d-", &pid); err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // that run is still going
		}
		versions, _ := filepath.Glob(filepath.Join(dir, "*", "PG_VERSION"))
		for _, v := range versions {
			c := &cluster{dir: filepath.Dir(v)}
			if _, err := c.devdb("stop", "immediate"); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}
		_ = os.RemoveAll(dir)
	}
}

// suite skips the test unless the fault suite was asked for.
func suite(t *testing.T) {
	t.Helper()
	suiteAlone(t)
	t.Parallel()
}

// suiteAlone is suite for a case whose claim is about timing under a
// load it makes itself (the adaptive limit's reaction to a slower
// target): it runs before the parallel cases start, alone, so that the
// other cases' processes do not stand in for the target's latency.
func suiteAlone(t *testing.T) {
	t.Helper()
	if os.Getenv("OUTBOX_FAULTS") != "1" {
		t.Skip("the fault-injection suite runs with OUTBOX_FAULTS=1: use `make test-faults`")
	}
}

// figure logs a measured figure and keeps it for the summary at the end.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("%s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log("figure: " + line)
	figuresMu.Lock()
	figures = append(figures, line)
	figuresMu.Unlock()
}

// crashBound states the documented at-least-once bound, for assertion
// messages: the target sees an event twice only when a crash lands between
// its 2xx and the commit that records it, and a replica holds a route's
// delivery slot from the request until its outcome is recorded, so each
// crashed replica repeats at most the route's concurrency. Not counted: a
// 2xx outbox never got because it came after target.timeout (the attempt
// is recorded as unanswered and retried), and replays, which re-send by
// design.
func crashBound(concurrency, crashes int) string {
	return fmt.Sprintf("the bound is %d: only a crash repeats a delivery outbox got a 2xx for, and each crashed replica repeats at most the "+
		"route's concurrency (%d) of deliveries it had sent and not yet recorded (%d crash(es) here); "+
		"2xx answers that came after target.timeout are not counted", concurrency*crashes, concurrency, crashes)
}

// waitUntil polls cond every interval until it holds, failing the test
// after timeout with what it was waiting for.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster is a private Postgres cluster the suite starts, crashes and
// restarts, through scripts/devdb.sh.
type cluster struct {
	dir string
	url string // its "outbox" database
	// firstPort is the first port devdb.sh tries for a new cluster.
	firstPort int
}

// newCluster creates and starts a cluster in its own data directory.
func newCluster(name string) (*cluster, error) {
	c := &cluster{dir: filepath.Join(tmpRoot, name), firstPort: clusterPorts()}
	clustersMu.Lock() // one port search at a time
	defer clustersMu.Unlock()
	// Above the ports of the clusters started before, even one crashed
	// now: it must get its port back when it restarts.
	for _, other := range clusters {
		if u, err := url.Parse(other.url); err == nil {
			if p, err := strconv.Atoi(u.Port()); err == nil && p >= c.firstPort {
				c.firstPort = p + 1
			}
		}
	}
	u, err := c.devdb("start", "")
	if err != nil {
		return nil, err
	}
	c.url = u
	clusters = append(clusters, c)
	return c, nil
}

// shared returns the cluster the cases that never stop Postgres share, each
// in a database of its own.
func shared(t *testing.T) *cluster {
	t.Helper()
	sharedOnce.Do(func() { sharedCluster, sharedErr = newCluster("shared") })
	if sharedErr != nil {
		t.Fatalf("cannot start the shared Postgres cluster: %v", sharedErr)
	}
	return sharedCluster
}

func (c *cluster) devdb(cmd, stopMode string) (string, error) {
	run := exec.Command(filepath.Join(repoRoot, "scripts", "devdb.sh"), cmd)
	first := c.firstPort
	if first == 0 {
		first = clusterPorts()
	}
	run.Env = append(os.Environ(), "DEVDB_DIR="+c.dir, fmt.Sprintf("DEVDB_PORT=%d", first), "DEVDB_STOP_MODE="+stopMode)
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Run(); err != nil {
		return "", fmt.Errorf("scripts/devdb.sh %s (DEVDB_DIR=%s): %v\n%s", cmd, c.dir, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// clusterPorts is the first port tried for the suite's clusters: just below
// the kernel's ephemeral range. A port in that range can be handed to any
// socket (the suite's own listeners and connections included) while a
// crashed cluster is down, and the cluster must come back on its port.
func clusterPorts() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var low, high int
		if _, err := fmt.Sscan(string(b), &low, &high); err == nil && low > 2048 {
			return low - 200
		}
	}
	return 54440
}

// crash stops Postgres the way a power cut would: no checkpoint, every
// connection dropped.
func (c *cluster) crash(t *testing.T) {
	t.Helper()
	if _, err := c.devdb("stop", "immediate"); err != nil {
		t.Fatal(err)
	}
}

// start starts a stopped cluster again, on the same port.
func (c *cluster) start(t *testing.T) {
	t.Helper()
	u, err := c.devdb("start", "")
	if err != nil {
		t.Fatal(err)
	}
	if u != c.url {
		t.Fatalf("Postgres came back at %s, not %s: its port was taken while it was down", u, c.url)
	}
}

// database creates an empty database for one case and returns its URL.
func (c *cluster) database(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name = pgx.Identifier{"faults_" + name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(c.url)
	u.Path = "/" + strings.Trim(name, `"`)
	return u.String()
}

// pool opens a pool for the test's own queries.
func pool(t *testing.T, dbURL string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// config describes one outbox process's config file.
type config struct {
	dbURL   string
	port    string
	replica string // sent to the target as X-Replica
	// top is extra top-level YAML; routes is the routes list's YAML, with
	// %[1]s standing for the target URL and %[2]s for the replica name.
	top    string
	routes string
	// adminToken turns the admin API on with this token; it is off
	// without one.
	adminToken string
}

// write writes the config file and returns its path.
func (c config) write(t *testing.T, targetURL string) string {
	t.Helper()
	admin := "disable_admin: true"
	if c.adminToken != "" {
		admin = fmt.Sprintf("admin_token: %q", c.adminToken)
	}
	doc := fmt.Sprintf(`listen: "127.0.0.1:%s"
database_url: %q
%s
intake_timeout: 2s
intake_retry_after: 5s
shutdown_timeout: 5s
%s
routes:
`, c.port, c.dbURL, admin, c.top) + fmt.Sprintf(c.routes, targetURL, c.replica)
	path := filepath.Join(t.TempDir(), "outbox-"+c.replica+".yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// route is the YAML of one route named name, for config.routes, delivering
// to targetPath on the target with a timeout.
func route(name, targetPath, timeout, extra string) string {
	return fmt.Sprintf(`  - name: %s
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: "%%[1]s%s", timeout: %s, headers: {X-Replica: "%%[2]s"}}
%s
`, name, targetPath, timeout, extra)
}

// migrate runs `outbox migrate up` with the config.
func migrate(t *testing.T, cfgPath string) {
	t.Helper()
	out, err := exec.Command(binary, "migrate", "up", "--config", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("outbox migrate up: %v\n%s", err, out)
	}
}

// serve is one running `outbox serve` process.
type serve struct {
	name    string
	base    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startServe starts `outbox serve` and waits until /readyz answers 200.
// The process is killed when the test ends, and its log's tail is shown if
// the test failed.
func startServe(t *testing.T, name, cfgPath, port string) *serve {
	t.Helper()
	return startServeEnv(t, name, cfgPath, port, nil)
}

// startServeEnv is startServe with extra environment variables (NAME=value).
func startServeEnv(t *testing.T, name, cfgPath, port string, env []string) *serve {
	t.Helper()
	s := &serve{name: name, base: "http://127.0.0.1:" + port, done: make(chan struct{})}
	s.logPath = filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(binary, "serve", "--config", cfgPath, "--log-format", "text")
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("last lines of %s's log:\n%s", name, s.logTail(40))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("%s exited before it was ready:\n%s", name, s.logTail(40))
		default:
		}
		if resp, err := http.Get(s.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not ready after 60s:\n%s", name, s.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *serve) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

func (s *serve) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func (s *serve) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.log(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// readyz returns /readyz's status, or 0 when no answer came.
func (s *serve) readyz() int {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// answer is what a behaviour makes the target do with one request: answer
// with status, or, with status 0, never answer until the caller hangs up.
type behaviour func(r *http.Request) (status int, hold <-chan struct{})

// request is one request the target received.
type request struct {
	at       time.Time
	took     time.Duration
	route    string
	key      string
	replica  string
	attempt  string
	status   int  // what the target answered (or processed, if the caller was gone); 0 if it never did
	hungUpOn bool // the caller hung up before the answer was written
}

// target is the internal service outbox delivers to: a real HTTP server
// whose behaviour the test switches, recording every request.
type target struct {
	srv       *httptest.Server
	behave    atomic.Pointer[behaviour]
	inflight  atomic.Int64
	peak      atomic.Int64
	closing   chan struct{}
	mu        sync.Mutex
	requests  []request
	delivered map[string][]string // key -> replicas that got a 2xx for it
	active    map[string]string   // key -> replica, for requests in progress
	// retryAfter, if set before requests come, is sent as Retry-After
	// with every 429 and 503.
	retryAfter string
}

func newTarget(t *testing.T, b behaviour) *target {
	t.Helper()
	tg := &target{closing: make(chan struct{}), delivered: map[string][]string{}, active: map[string]string{}}
	tg.set(b)
	tg.srv = httptest.NewServer(http.HandlerFunc(tg.serveHTTP))
	t.Cleanup(func() {
		close(tg.closing)
		tg.srv.Close()
	})
	return tg
}

func (tg *target) set(b behaviour) { tg.behave.Store(&b) }

func (tg *target) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	n := tg.inflight.Add(1)
	defer tg.inflight.Add(-1)
	for {
		p := tg.peak.Load()
		if n <= p || tg.peak.CompareAndSwap(p, n) {
			break
		}
	}
	_, _ = io.Copy(io.Discard, r.Body)
	rec := request{at: start, route: r.Header.Get("X-Outbox-Route"), key: r.Header.Get("X-Outbox-Key"),
		replica: r.Header.Get("X-Replica"), attempt: r.Header.Get("X-Outbox-Attempt")}
	tg.mu.Lock()
	tg.active[rec.key] = rec.replica
	tg.mu.Unlock()
	status, hold := (*tg.behave.Load())(r)
	// A request the target holds is processed only if it is released
	// before the caller hangs up; any other is processed on arrival, as a
	// real service commits before it answers, even if the caller is gone
	// by the time the answer is written.
	processed := true
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			processed = false
		case <-tg.closing:
			processed = false
		}
	}
	rec.hungUpOn = r.Context().Err() != nil
	if processed && status != 0 {
		if tg.retryAfter != "" && (status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable) {
			w.Header().Set("Retry-After", tg.retryAfter)
		}
		w.WriteHeader(status)
		rec.status = status
	}
	rec.took = time.Since(start)
	tg.mu.Lock()
	delete(tg.active, rec.key)
	tg.requests = append(tg.requests, rec)
	if rec.status >= 200 && rec.status < 300 {
		tg.delivered[rec.key] = append(tg.delivered[rec.key], rec.replica)
	}
	tg.mu.Unlock()
}

func (tg *target) log() []request {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return slices.Clone(tg.requests)
}

// activeKeys returns the keys of the requests in progress, and the replica
// that sent each.
func (tg *target) activeKeys() map[string]string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return maps.Clone(tg.active)
}

// deliveredBy returns the replicas that got a 2xx for key.
func (tg *target) deliveredBy(key string) []string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return slices.Clone(tg.delivered[key])
}

// unanswered counts, per key, the delivery attempts outbox sent and got no
// answer to in time: cut off at target.timeout (or the job's deadline), or
// a connection reset. The target may have acted on each one and answered
// 2xx too late, so each may add a duplicate without any crash: the one
// case of at-least-once that is not a crash. It reads the errors recorded
// on the route's delivery jobs.
func unanswered(ctx context.Context, p *pgxpool.Pool, routeName string) (map[string]int, error) {
	rows, err := p.Query(ctx, `
		SELECT j.args->>'key', count(*)
		FROM river_job j, unnest(j.errors) AS e
		WHERE j.kind = 'deliver' AND j.queue = $1
		  AND (e->>'error' LIKE 'no answer within %' OR e->>'error' LIKE 'connection reset by %'
		       OR e->>'error' LIKE 'request to %' OR e->>'error' LIKE 'delivery timed out: %')
		GROUP BY 1`, routeName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}

// duplicatesBeyond splits the 2xx answers beyond the first, per key, into
// those an unanswered attempt of that key explains (late) and the others
// (extra), which only a crash may cause; keys lists the keys of the others.
func (tg *target) duplicatesBeyond(t *testing.T, p *pgxpool.Pool, routeName string) (extra, late int, keys []string) {
	t.Helper()
	var lateByKey map[string]int
	waitUntil(t, 60*time.Second, "the database to answer", func() bool {
		var err error
		lateByKey, err = unanswered(context.Background(), p, routeName)
		return err == nil
	})
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for k, replicas := range tg.delivered {
		d := len(replicas) - 1
		if d <= 0 {
			continue
		}
		explained := min(d, lateByKey[k])
		late += explained
		if d > explained {
			extra += d - explained
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return extra, late, keys
}

func ok(*http.Request) (int, <-chan struct{}) { return http.StatusOK, nil }

// ledger records what senders were told: every key acknowledged with a
// 2xx, and every other answer, for the case's checks.
type ledger struct {
	mu        sync.Mutex
	acked     map[string]time.Time
	statuses  map[int]int
	latencies map[int][]time.Duration
	netErrors int
	hangs     int // no answer within the sender's 5s timeout
	problems  []string
	lastAckAt time.Time
}

func newLedger() *ledger {
	return &ledger{acked: map[string]time.Time{}, statuses: map[int]int{}, latencies: map[int][]time.Duration{}}
}

func (l *ledger) keys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]string, 0, len(l.acked))
	for k := range l.acked {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// observe checks one answer against the contract: 200 with a status and
// the key; 503 and 429 with Retry-After and a JSON error; nothing else.
func (l *ledger) observe(key string, status int, h http.Header, body []byte, took time.Duration, err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			l.hangs++
			l.problems = append(l.problems, fmt.Sprintf("%s: no answer within the sender's 5s timeout", key))
		} else {
			l.netErrors++
		}
		return false
	}
	l.statuses[status]++
	l.latencies[status] = append(l.latencies[status], took)
	var doc map[string]string
	jsonErr := json.Unmarshal(body, &doc)
	switch status {
	case http.StatusOK:
		if jsonErr != nil || (doc["status"] != "accepted" && doc["status"] != "duplicate") || doc["key"] != key {
			l.problems = append(l.problems, fmt.Sprintf("%s: 200 with body %q", key, body))
		}
		l.acked[key] = time.Now()
		l.lastAckAt = time.Now()
		return true
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		if h.Get("Retry-After") == "" || jsonErr != nil || doc["error"] == "" {
			l.problems = append(l.problems, fmt.Sprintf("%s: %d without Retry-After or a JSON error: %q", key, status, body))
		}
	default:
		l.problems = append(l.problems, fmt.Sprintf("%s: %d %q", key, status, body))
	}
	return false
}

// senders posts webhooks from n concurrent clients until ctx ends or each
// has had perClient keys acknowledged. Like a real sender, a client retries
// a key until it is acknowledged, after a network error, a 503 or a 429
// (sooner than Retry-After says, to keep the pressure on). base picks the
// server for each request.
func senders(ctx context.Context, l *ledger, n, perClient int, prefix string, pace time.Duration, base func(client, i int) string) *sync.WaitGroup {
	var wg sync.WaitGroup
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for c := range n {
		wg.Go(func() {
			for i := 0; i < perClient; i++ {
				key := fmt.Sprintf("%s-%02d-%05d", prefix, c, i)
				body := fmt.Appendf(nil, `{"id":%q,"client":%d,"n":%d}`, key, c, i)
				for try := 0; ; try++ {
					if ctx.Err() != nil {
						return
					}
					if post(ctx, httpc, l, base(c, i+try), "hooks", key, body) {
						break
					}
					sleep(ctx, 50*time.Millisecond)
				}
				sleep(ctx, pace)
			}
		})
	}
	return &wg
}

// post sends one webhook and records the answer in l; it reports whether
// the key was acknowledged.
func post(ctx context.Context, httpc *http.Client, l *ledger, base, routeName, key string, body []byte) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhooks/"+routeName, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := httpc.Do(req)
	if ctx.Err() != nil {
		return false // the test stopped sending; this answer is not counted
	}
	if err != nil {
		return l.observe(key, 0, nil, nil, time.Since(start), err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return l.observe(key, 0, nil, nil, took, err)
	}
	return l.observe(key, resp.StatusCode, resp.Header, raw, took, nil)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// eventState is what the database says about one key.
type eventState struct {
	delivered bool
	dead      bool
	attempts  int
}

func events(ctx context.Context, p *pgxpool.Pool, routeName string) (map[string]eventState, error) {
	rows, err := p.Query(ctx, `
		SELECT e.key, e.delivered_at IS NOT NULL, EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = e.id),
		       coalesce(e.delivery_attempts, 0)
		FROM events e WHERE e.route = $1`, routeName)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]eventState{}
	for rows.Next() {
		var k string
		var s eventState
		if err := rows.Scan(&k, &s.delivered, &s.dead, &s.attempts); err != nil {
			return nil, err
		}
		out[k] = s
	}
	return out, rows.Err()
}

// checkNoLoss fails the test for every acknowledged key that is not stored.
// Intake answers 2xx only after the commit, so they must all be there.
func checkNoLoss(t *testing.T, p *pgxpool.Pool, routeName string, keys []string) {
	t.Helper()
	var got map[string]eventState
	waitUntil(t, 60*time.Second, "the database to answer", func() bool {
		var err error
		got, err = events(context.Background(), p, routeName)
		return err == nil
	})
	var lost []string
	for _, k := range keys {
		if _, ok := got[k]; !ok {
			lost = append(lost, k)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged events are not in the events table (lost), e.g. %v", len(lost), len(keys), lost[:min(5, len(lost))])
	}
}

// waitSettled waits until every acknowledged key was delivered or is a dead
// letter, and returns the states and when that was first true.
func waitSettled(t *testing.T, p *pgxpool.Pool, routeName string, keys []string, timeout time.Duration) (map[string]eventState, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := events(context.Background(), p, routeName)
		if err == nil {
			var open []string
			for _, k := range keys {
				if s, ok := got[k]; !ok || (!s.delivered && !s.dead) {
					open = append(open, k)
				}
			}
			if len(open) == 0 {
				return got, time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s, %d of %d acknowledged events are neither delivered nor dead letters, e.g. %v", timeout, len(open), len(keys), open[:min(5, len(open))])
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("cannot read events: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkContract fails the test for any answer a sender must never get.
func (l *ledger) checkContract(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) > 0 {
		t.Errorf("%d answers broke the contract (never a 500, never a hang, 503/429 carry Retry-After), e.g.:\n  %s",
			len(l.problems), strings.Join(l.problems[:min(10, len(l.problems))], "\n  "))
	}
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds)
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}
