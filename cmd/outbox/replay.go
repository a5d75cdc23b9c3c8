package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/webhook-outbox/webhook-outbox/admin"
)

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("replay", stderr)
	route := fs.String("route", "", "the route whose events to deliver again (required)")
	since := fs.String("since", "", "received at or after: RFC 3339 time, date, or duration ago (required)")
	until := fs.String("until", "", "received before (default now)")
	dryRun := fs.Bool("dry-run", false, "print how many would be replayed, and a sample, without replaying")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("replay takes no arguments, got %q", rest)
	}
	if *route == "" || *since == "" {
		return usagef("replay needs --route R and --since T")
	}
	now := time.Now()
	req := admin.ReplayRequest{Route: *route, DryRun: *dryRun}
	if req.Since, err = admin.ParseTime("--since", *since, now); err != nil {
		return err
	}
	if req.Until, err = admin.ParseTime("--until", *until, now); err != nil {
		return err
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	if !*dryRun {
		req.Progress = newProgress(stderr, "replayed", "events")
	}
	res, runErr := svc.Replay(ctx, req)
	if res == nil {
		return runErr
	}
	if *asJSON {
		if err := printJSON(stdout, res); err != nil {
			return err
		}
	} else {
		if *dryRun {
			fmt.Fprintf(stdout, "would replay %d events\n", res.Matched)
		} else {
			fmt.Fprintf(stdout, "replayed %d events: %d new deliveries, %d dead letters revived, %d skipped as already queued\n",
				res.Replayed+res.Revived, res.Replayed, res.Revived, res.Skipped)
		}
		for _, e := range res.Sample {
			state := "not delivered"
			if e.DeliveredAt != nil {
				state = "delivered " + e.DeliveredAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "  %d  %s/%s  received %s, %s\n", e.EventID, *route, clip(e.Key, 40), e.ReceivedAt.UTC().Format(time.RFC3339), state)
		}
		if res.Matched > int64(len(res.Sample)) && len(res.Sample) > 0 {
			fmt.Fprintf(stdout, "  … and %d more\n", res.Matched-int64(len(res.Sample)))
		}
	}
	if runErr != nil {
		return runErr
	}
	return nil
}
