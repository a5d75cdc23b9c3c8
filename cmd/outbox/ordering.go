package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

func runOrdering(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("ordering needs blocked or release")
	}
	switch args[0] {
	case "blocked":
		return runOrderingBlocked(ctx, args[1:], stdout, stderr)
	case "release":
		return runOrderingRelease(ctx, args[1:], stdout, stderr)
	}
	return usagef("unknown ordering command %q: use blocked or release", args[0])
}

// runOrderingBlocked lists a route's blocked keys with their head event.
func runOrderingBlocked(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("ordering blocked", stderr)
	route := fs.String("route", "", "the ordered route (required)")
	reason := fs.String("reason", "", "only keys blocked for this reason: dead_letter, retrying or no_head")
	limit := fs.Int("limit", 50, "show at most this many, in ordering key order")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("ordering blocked takes no arguments, got %q", rest)
	}
	if *route == "" {
		return usagef("ordering blocked needs --route")
	}
	why, err := admin.ParseBlockReason(*reason)
	if err != nil {
		return err
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	page, err := svc.BlockedKeys(ctx, *route, why, *limit, "")
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, page)
	}
	if len(page.Keys) == 0 {
		fmt.Fprintf(stdout, "no blocked keys on route %s\n", *route)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDERING KEY\tREASON\tWAITING\tHEAD JOB\tHEAD EVENT KEY\tSTATE\tATTEMPTS\tSINCE\tLAST ERROR")
	for _, k := range page.Keys {
		if k.Head == nil {
			fmt.Fprintf(tw, "%s\t%s\t%d\t-\t-\t-\t-\t-\t-\n", clip(k.OrderingKey, 40), k.Reason, k.Waiting)
			continue
		}
		h := k.Head
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%d/%d\t%s\t%s\n", clip(k.OrderingKey, 40), k.Reason, k.Waiting, h.JobID, clip(h.Key, 40),
			h.State, h.Attempt, h.MaxAttempts, since(h), clip(h.LastError, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(stdout, "(the first %d shown; raise --limit, or use GET /admin/v1/routes/%s/blocked-keys to page)\n", len(page.Keys), *route)
	}
	if why == "" || why == outbox.BlockedByDeadLetter {
		fmt.Fprintf(stdout, "A key blocked by a dead letter goes on once its head is retried (outbox dlq retry HEAD_JOB)\nor released (outbox ordering release --route %s KEY...: the head stays a dead letter).\n", *route)
	}
	return nil
}

// since says when a head failed for good, or when its last attempt was.
func since(h *outbox.KeyHead) string {
	at := h.FailedAt
	if at == nil {
		at = h.AttemptedAt
	}
	if at == nil {
		return "-"
	}
	return at.UTC().Format(time.DateTime + "Z")
}

// runOrderingRelease lets keys held by a dead letter go on.
func runOrderingRelease(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("ordering release", stderr)
	route := fs.String("route", "", "the ordered route (required)")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	keys, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *route == "" || len(keys) == 0 {
		return usagef("ordering release needs --route and at least one ordering key")
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	res, err := svc.ReleaseBlockedKeys(ctx, *route, keys)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "released %d keys: their next events are delivered; the dead letters that held them stay dead letters\n", len(res.Released))
	if len(res.NotBlocked) > 0 {
		fmt.Fprintf(stdout, "not held by a dead letter, left alone: %s\n", strings.Join(res.NotBlocked, ", "))
	}
	return nil
}
