package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

func runStats(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, configPath := newFlagSet("stats", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	exact := fs.Bool("exact", false, "count event rows instead of using Postgres's estimates (reads every row)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("stats takes no arguments, got %q", rest)
	}
	svc, closeDB, err := openAdmin(ctx, *configPath)
	if err != nil {
		return err
	}
	defer closeDB()
	st, err := svc.Stats(ctx, *exact)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	rowsWord := "ROWS (EST.)"
	if st.Exact {
		rowsWord = "ROWS"
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "TABLE\t%s\tSIZE\tRANGE\n", rowsWord)
	for _, t := range st.Tables {
		name, span := t.Name, ""
		if t.Parent != "" {
			name = "  " + name
		}
		if t.RangeStart != nil {
			span = t.RangeStart.UTC().Format("2006-01-02 15:04") + " .. " + t.RangeEnd.UTC().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", name, t.Rows, humanBytes(t.Bytes), span)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "events: %d rows, %s\n", st.EventsRows, humanBytes(st.EventsBytes))
	if st.OldestEvent != nil {
		fmt.Fprintf(stdout, "oldest event: %s (%s ago)\n", st.OldestEvent.UTC().Format(time.RFC3339), time.Since(*st.OldestEvent).Round(time.Second))
	}
	fmt.Fprintf(stdout, "dead letters: %d", st.DeadLetters)
	if st.OldestDeadLetter != nil {
		fmt.Fprintf(stdout, ", oldest failed %s (%s ago)", st.OldestDeadLetter.UTC().Format(time.RFC3339), time.Since(*st.OldestDeadLetter).Round(time.Second))
	}
	fmt.Fprintln(stdout)
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
