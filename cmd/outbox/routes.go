package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/admin"
)

func runRoutes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("routes needs list, pause or resume")
	}
	sub := args[0]
	fs, configPath := newFlagSet("routes "+sub, stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	rest, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		if len(rest) > 0 {
			return usagef("routes list takes no arguments")
		}
	case "pause", "resume":
		if len(rest) != 1 {
			return usagef("routes %s takes one route name", sub)
		}
	default:
		return usagef("unknown routes command %q: use list, pause or resume", sub)
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()

	switch sub {
	case "pause":
		if err := svc.Pause(ctx, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "paused route %s: deliveries stop on every replica; intake goes on\n", rest[0])
		return nil
	case "resume":
		if err := svc.Resume(ctx, rest[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "resumed route %s: the backlog drains at the route's concurrency\n", rest[0])
		return nil
	}
	routes, err := svc.Routes(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, routes)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tSTATE\tCIRCUIT\tLIMIT\tAVAILABLE\tRETRYABLE\tSCHEDULED\tRUNNING\tWAITING\tDEAD\tBLOCKED KEYS\tOLDEST WAITING\tDELIVERED 1H\tTARGET")
	for _, r := range routes {
		state := "active"
		if r.Paused {
			state = "paused"
		}
		oldest := "-"
		if r.OldestUndeliveredAge != nil {
			oldest = (time.Duration(*r.OldestUndeliveredAge) * time.Second).Round(time.Second).String()
		}
		// Blocked keys exist only on routes with ordering.
		blocked := "-"
		if r.Ordering != nil {
			blocked = strconv.FormatInt(r.Ordering.BlockedKeys, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\n", r.Name, state, circuitCell(r.Circuit, time.Now()), limitCell(r), r.Backlog.Available, r.Backlog.Retryable,
			r.Backlog.Scheduled, r.Backlog.Running, r.Backlog.Waiting, r.DeadLetters, blocked, oldest, r.DeliveredLastHour, r.Target)
	}
	return tw.Flush()
}

// circuitCell is the route's fleet circuit breaker in a few words: closed,
// half-open, or open with the time left until its next probe.
func circuitCell(c outbox.CircuitInfo, now time.Time) string {
	if c.State == outbox.CircuitOpen && c.OpenUntil != nil {
		return fmt.Sprintf("open %s", max(c.OpenUntil.Sub(now), 0).Round(time.Second))
	}
	if c.State == outbox.CircuitClosed && c.ConsecutiveFailures > 0 {
		return fmt.Sprintf("closed (%d failed)", c.ConsecutiveFailures)
	}
	return string(c.State)
}

// limitCell is how many requests the fleet may have in flight to the
// route's target now, out of its concurrency: "idle/32" when no replica
// holds a share; a fixed limit is marked so.
func limitCell(r admin.RouteStatus) string {
	now := "idle"
	if r.Limit.Current != nil {
		now = strconv.Itoa(*r.Limit.Current)
	}
	cell := now + "/" + strconv.Itoa(r.Concurrency)
	if !r.Limit.Adaptive {
		cell += " fixed"
	}
	return cell
}
