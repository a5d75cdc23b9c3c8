package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
	"github.com/webhook-outbox/webhook-outbox/config"
	"github.com/webhook-outbox/webhook-outbox/jobs"
	"github.com/webhook-outbox/webhook-outbox/store"
)

// openAdmin connects the CLI to the database named in the config.
func openAdmin(ctx context.Context, configPath string) (*admin.Service, func(), error) {
	cfg, err := config.Load(config.Path(configPath))
	if err != nil {
		return nil, nil, err
	}
	pool, err := store.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	st := store.New(pool)
	st.PartitionInterval = cfg.EventPartitionInterval.D()
	if err := st.CheckSchema(ctx); err != nil {
		pool.Close()
		return nil, nil, err
	}
	client, err := jobs.NewInsertOnlyClient(pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return admin.New(st, client, cfg), pool.Close, nil
}

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("dlq needs list, show or retry")
	}
	switch args[0] {
	case "list":
		return runDLQList(ctx, args[1:], stdout, stderr)
	case "show":
		return runDLQShow(ctx, args[1:], stdout, stderr)
	case "retry":
		return runDLQRetry(ctx, args[1:], stdout, stderr)
	}
	return usagef("unknown dlq command %q: use list, show or retry", args[0])
}

// filterFlags are the dead-letter filter flags list and retry share.
type filterFlags struct {
	route, since, until, errSub *string
}

func addFilterFlags(fs interface {
	String(name, value, usage string) *string
}) filterFlags {
	return filterFlags{
		route:  fs.String("route", "", "only this route"),
		since:  fs.String("since", "", "failed at or after: RFC 3339 time, date, or duration ago (2h)"),
		until:  fs.String("until", "", "failed before: RFC 3339 time, date, or duration ago"),
		errSub: fs.String("error", "", "last error contains this text (case-insensitive)"),
	}
}

func (f filterFlags) set() bool {
	return *f.route != "" || *f.since != "" || *f.until != "" || *f.errSub != ""
}

func (f filterFlags) filter(now time.Time) (outbox.DeadLetterFilter, error) {
	return admin.ParseFilter(*f.route, *f.since, *f.until, *f.errSub, now)
}

func runDLQList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("dlq list", stderr)
	ff := addFilterFlags(fs)
	limit := fs.Int("limit", 50, "show at most this many, newest failure first")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("dlq list takes no arguments, got %q", rest)
	}
	if *limit < 1 {
		return usagef("--limit must be at least 1")
	}
	f, err := ff.filter(time.Now())
	if err != nil {
		return err
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	items, next, err := svc.ListDeadLetters(ctx, f, *limit, "")
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, items)
	}
	if len(items) == 0 {
		fmt.Fprintln(stdout, "no dead letters match")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB ID\tROUTE\tKEY\tFAILED AT\tSTATE\tATTEMPTS\tLAST ERROR")
	for _, d := range items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d/%d\t%s\n", d.JobID, d.Route, clip(d.Key, 40), d.FailedAt.UTC().Format(time.DateTime+"Z"),
			d.State, d.Attempts, d.MaxAttempts, clip(d.LastError, 90))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		total, err := svc.CountDeadLetters(ctx, f)
		if err == nil {
			fmt.Fprintf(stdout, "(%d of %d shown; raise --limit, or narrow with --route, --since, --error)\n", len(items), total)
		}
	}
	return nil
}

// clip shortens s to n runes on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runDLQShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("dlq show", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("dlq show takes one ID: a job id as dlq list prints it, or ROUTE/KEY")
	}
	id, err := admin.ParseIdentifier(rest[0])
	if err != nil {
		return err
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	d, err := svc.DeadLetter(ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, d)
	}
	fmt.Fprintf(stdout, "Dead letter %d: %s/%s\n", d.JobID, d.Route, d.Key)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  state\t%s after %d of %d attempts\n", d.State, d.Attempts, d.MaxAttempts)
	fmt.Fprintf(tw, "  event id\t%d\n", d.EventID)
	fmt.Fprintf(tw, "  received\t%s\n", d.ReceivedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "  failed\t%s\n", d.FailedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "  last error\t%s\n", d.LastError)
	_ = tw.Flush()
	fmt.Fprintln(stdout, "Attempts:")
	for _, e := range d.Errors {
		fmt.Fprintf(stdout, "  #%d  %s  %s\n", e.Attempt, e.At.UTC().Format(time.RFC3339), e.Error)
	}
	fmt.Fprintln(stdout, "Payload:")
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, d.Payload, "  ", "  "); err != nil {
		pretty.Write(d.Payload)
	}
	fmt.Fprintf(stdout, "  %s\n", pretty.String())
	fmt.Fprintf(stdout, "Retry it with: outbox dlq retry %d\n", d.JobID)
	return nil
}

func runDLQRetry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("dlq retry", stderr)
	ff := addFilterFlags(fs)
	resume := fs.String("resume", "", "retry the rest of an interrupted retry by filter, from the cursor it printed (no other flags needed)")
	dryRun := fs.Bool("dry-run", false, "print how many would be retried, and a sample, without retrying")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	req := admin.RetryRequest{DryRun: *dryRun, Resume: *resume}
	switch {
	case *resume != "" && (len(rest) > 0 || ff.set()):
		return usagef("dlq retry --resume takes no IDs and no filter flags: the cursor holds the filter")
	case *resume != "":
	case len(rest) > 0 && ff.set():
		return usagef("dlq retry takes IDs or filter flags (--route, --since, --until, --error), not both")
	case len(rest) > 0:
		for _, s := range rest {
			id, err := admin.ParseIdentifier(s)
			if err != nil {
				return err
			}
			req.IDs = append(req.IDs, id)
		}
	case ff.set():
		f, err := ff.filter(time.Now())
		if err != nil {
			return err
		}
		req.Filter = &f
	default:
		return usagef("dlq retry needs IDs (job ids or ROUTE/KEY) or a filter such as --route R")
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	if !*dryRun {
		req.Progress = newProgress(stderr, "retried", "dead letters")
	}
	res, runErr := svc.RetryDeadLetters(ctx, req)
	if res == nil {
		return runErr
	}
	if *asJSON {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else {
		if *dryRun {
			fmt.Fprintf(stdout, "would retry %d dead letters\n", res.Matched)
		} else {
			fmt.Fprintf(stdout, "retried %d dead letters\n", res.Retried)
		}
		for _, d := range res.Sample {
			fmt.Fprintf(stdout, "  %d  %s/%s  %s\n", d.JobID, d.Route, clip(d.Key, 40), clip(d.LastError, 80))
		}
		if res.Matched > int64(len(res.Sample)) && len(res.Sample) > 0 {
			fmt.Fprintf(stdout, "  … and %d more\n", res.Matched-int64(len(res.Sample)))
		}
		for _, n := range res.NotRetried {
			fmt.Fprintf(stdout, "not retried: %s\n", n)
		}
		if res.NextCursor != "" {
			fmt.Fprintf(stdout, "not finished; retry the rest with: outbox dlq retry --resume %s\n", res.NextCursor)
		}
	}
	if runErr != nil {
		return runErr
	}
	if len(req.IDs) > 0 && res.Matched < int64(len(req.IDs)) {
		return fmt.Errorf("%d of %d IDs were not dead letters", int64(len(req.IDs))-res.Matched, len(req.IDs))
	}
	return nil
}

// newProgress reports a long operation's progress on w: a counter
// rewritten in place on a terminal, a line every few seconds otherwise.
func newProgress(w io.Writer, verb, noun string) func(done, total int64) {
	tty := isTerminal(w)
	var last time.Time
	return func(done, total int64) {
		pct := 100.0
		if total > 0 {
			pct = float64(done) * 100 / float64(total)
		}
		switch {
		case tty:
			fmt.Fprintf(w, "\r%s %d of %d %s (%.0f%%)", verb, done, total, noun, pct)
			if done >= total {
				fmt.Fprintln(w)
			}
		case time.Since(last) >= 2*time.Second || done >= total:
			last = time.Now()
			fmt.Fprintf(w, "%s %s %d of %d %s (%.0f%%)\n", time.Now().UTC().Format(time.TimeOnly), verb, done, total, noun, pct)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
