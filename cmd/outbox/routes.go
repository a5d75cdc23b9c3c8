package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
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
	fmt.Fprintln(tw, "ROUTE\tSTATE\tAVAILABLE\tRETRYABLE\tSCHEDULED\tRUNNING\tDEAD\tOLDEST WAITING\tDELIVERED 1H\tTARGET")
	for _, r := range routes {
		state := "active"
		if r.Paused {
			state = "paused"
		}
		oldest := "-"
		if r.OldestUndeliveredAge != nil {
			oldest = (time.Duration(*r.OldestUndeliveredAge) * time.Second).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%s\n", r.Name, state, r.Backlog.Available, r.Backlog.Retryable,
			r.Backlog.Scheduled, r.Backlog.Running, r.DeadLetters, oldest, r.DeliveredLastHour, r.Target)
	}
	return tw.Flush()
}
