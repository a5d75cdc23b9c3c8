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
	replayID := fs.String("replay-id", "", "name the replay (default: derived from --route, --since, --until, so the same command again resumes it); a new name sends the window again")
	resume := fs.String("resume", "", "continue the replay this cursor names, as an interrupted run printed it (no other flags needed)")
	dryRun := fs.Bool("dry-run", false, "print how many would be replayed, and a sample, without replaying")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("replay takes no arguments, got %q", rest)
	}
	if *resume == "" && (*route == "" || *since == "") {
		return usagef("replay needs --route R and --since T (or --resume CURSOR)")
	}
	now := time.Now()
	req := admin.ReplayRequest{Route: *route, DryRun: *dryRun, ReplayID: *replayID, Resume: *resume}
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
			fmt.Fprintf(stdout, "would replay %d events\n", res.Matched-res.AlreadyReplayed)
		} else {
			fmt.Fprintf(stdout, "replayed %d events: %d new deliveries, %d dead letters revived, %d skipped as already queued\n",
				res.Replayed+res.Revived, res.Replayed, res.Revived, res.Skipped)
		}
		fmt.Fprintf(stdout, "replay %s: route %s, received from %s until %s, %d events\n", res.ReplayID, res.Route,
			res.Since.UTC().Format(time.RFC3339), res.Until.UTC().Format(time.RFC3339), res.Matched)
		if res.AlreadyReplayed > 0 {
			fmt.Fprintf(stdout, "  %d of them were handled by earlier runs of this replay and are not sent again; to send them again, name a new replay with --replay-id\n", res.AlreadyReplayed)
		}
		for _, e := range res.Sample {
			state := "not delivered"
			if e.DeliveredAt != nil {
				state = "delivered " + e.DeliveredAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "  %d  %s  received %s, %s\n", e.EventID, clip(e.Key, 40), e.ReceivedAt.UTC().Format(time.RFC3339), state)
		}
		if rest := res.Matched - res.AlreadyReplayed - int64(len(res.Sample)); rest > 0 && len(res.Sample) > 0 {
			fmt.Fprintf(stdout, "  … and %d more\n", rest)
		}
		if res.NextCursor != "" {
			fmt.Fprintf(stdout, "not finished; resume with: outbox replay --resume %s\n", res.NextCursor)
		}
	}
	if runErr != nil {
		return runErr
	}
	return nil
}
