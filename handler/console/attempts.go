package console

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// attempt is one failed delivery attempt as the detail page shows it.
type attempt struct {
	Number int
	At     time.Time
	// Status is the target's HTTP status, 0 when it did not answer (or
	// the text does not say).
	Status   int
	Reason   string
	Duration time.Duration
	// Summary is what happened, without the status and duration.
	Summary string
	// Error is River's text, as stored.
	Error string
}

var (
	// "target answered 503 Service Unavailable after 212ms: body"
	answeredRe = regexp.MustCompile(`^target answered (\d{3}) ([^:]*?) after ([0-9.]+(?:ns|µs|us|ms|s|m|h)(?:[0-9.]+(?:ns|µs|us|ms|s|m|h))*)(?:: (.*))?$`)
	// "... after 1.2s" or "... after 1.2s: details"
	afterRe = regexp.MustCompile(` after ([0-9.]+(?:ns|µs|us|ms|s|m|h)(?:[0-9.]+(?:ns|µs|us|ms|s|m|h))*)(?::|$| )`)
	// "no answer within 10s"
	withinRe = regexp.MustCompile(`^no answer within ([0-9.]+(?:ns|µs|us|ms|s|m|h)(?:[0-9.]+(?:ns|µs|us|ms|s|m|h))*)`)
)

// parseAttempt reads the status code and duration out of the error text
// deliveries record (jobs/classify.go writes it). Text in another shape,
// from River itself or an older version, is shown as it is.
func parseAttempt(e outbox.AttemptError) attempt {
	a := attempt{Number: e.Attempt, At: e.At, Error: e.Error, Summary: e.Error}
	text := e.Error
	// A give-up wraps the last attempt's text.
	if _, last, ok := strings.Cut(text, "; last attempt: "); ok && strings.HasPrefix(text, "gave up:") {
		text = last
	}
	if m := answeredRe.FindStringSubmatch(text); m != nil {
		a.Status, _ = strconv.Atoi(m[1])
		a.Reason = m[2]
		a.Duration, _ = time.ParseDuration(strings.ReplaceAll(m[3], "us", "µs"))
		a.Summary = m[4]
		if text != e.Error {
			a.Summary = strings.TrimSuffix(e.Error, text) + a.Summary
		}
		return a
	}
	if m := withinRe.FindStringSubmatch(text); m != nil {
		a.Duration, _ = time.ParseDuration(m[1])
		return a
	}
	if m := afterRe.FindStringSubmatch(text); m != nil {
		a.Duration, _ = time.ParseDuration(m[1])
	}
	return a
}

func parseAttempts(errs []outbox.AttemptError) []attempt {
	out := make([]attempt, len(errs))
	for i, e := range errs {
		out[i] = parseAttempt(e)
	}
	return out
}
