// Command outbox receives webhooks, stores them durably in Postgres, and
// delivers them to an internal service with retries and a dead-letter set.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

const usage = `outbox receives webhooks, stores them in Postgres, and delivers them with retries.

Usage:
  outbox serve [--config PATH] [--migrate] [--log-format json|text]
  outbox migrate up|down [N] [--all]|version|force VERSION [--config PATH]
  outbox config check [--config PATH]
  outbox dlq list [--route R] [--since T] [--until T] [--error TEXT] [--limit N] [--json]
  outbox dlq show ID [--json]
  outbox dlq retry ID...|--route R [--since T] [--until T] [--error TEXT] [--dry-run] [--json]
  outbox dlq retry --resume CURSOR [--json]
  outbox replay --route R --since T [--until T] [--replay-id ID] [--dry-run] [--json]
  outbox replay --resume CURSOR [--json]
  outbox routes list [--json] | pause NAME | resume NAME
  outbox ordering blocked --route R [--reason dead_letter|retrying|no_head] [--limit N] [--json]
  outbox ordering release --route R KEY...
  outbox stats [--exact] [--json]
  outbox demo-target [--listen :9090] [--fail-rate 0.3] [--fail-status 500] [--retry-after N]

ID is a job id, as dlq list prints it, or ROUTE/KEY. A time T is RFC 3339
(2026-11-28T09:00:00Z), a date (2026-11-28), or a duration ago (2h).

The config is read from --config PATH, else $OUTBOX_CONFIG, else ./outbox.yaml.
Exit codes: 0 success, 1 failure, 2 bad usage.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks a command line that cannot be run as written; it exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run dispatches a command line and returns the process's exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdout, stderr)
	code := exitCode(err)
	var ue *usageError
	switch {
	case code == 0:
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "outbox: %s\n\n%s", ue.msg, usage)
	default:
		fmt.Fprintf(stderr, "outbox: %s\n", err)
	}
	return code
}

// exitCode is the one place an error becomes the process's exit code: 0
// for none (or --help), 2 for a command line the operator must correct (bad
// usage, or a request an operation refused as invalid), 1 for anything
// else.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue) || outbox.ErrorCode(err) == outbox.EINVALID:
		return 2
	}
	return 1
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("a command is required")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, rest, stdout, stderr)
	case "config":
		return runConfig(rest, stdout, stderr)
	case "dlq":
		return runDLQ(ctx, rest, stdout, stderr)
	case "replay":
		return runReplay(ctx, rest, stdout, stderr)
	case "routes":
		return runRoutes(ctx, rest, stdout, stderr)
	case "ordering":
		return runOrdering(ctx, rest, stdout, stderr)
	case "stats":
		return runStats(ctx, rest, stdout, stderr)
	case "demo-target":
		return runDemoTarget(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usagef("unknown command %q", cmd)
}

// newFlagSet returns a flag set that reports errors instead of exiting, and
// the --config flag every database command takes.
func newFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("outbox "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default $OUTBOX_CONFIG, else ./outbox.yaml)")
	return fs, configPath
}

// parseFlags parses args, allowing flags after positional arguments, as in
// "outbox dlq show 42 --json".
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}
