package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// Error is an error with the HTTP status it answers with. Its message is
// shown to the client, so it says what was wrong and what to do, and never
// carries a driver error or a secret.
type Error struct {
	Status  int
	Message string
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

func errorf(status int, msg string) *Error { return &Error{Status: status, Message: msg} }

// writeJSON writes v as a JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // answers are JSON for programs, not HTML
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"cannot encode the answer"}` + "\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writeError writes e as {"error": "..."}, with Retry-After when it has one.
func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, e.Status, map[string]string{"error": e.Message})
}

// statusOf is the one place an error code becomes an HTTP status. Errors
// the client cannot fix answer 503 with Retry-After: in practice the
// database failed or is slow, and the same request may succeed later.
func statusOf(code string) int {
	switch code {
	case outbox.EINVALID:
		return http.StatusBadRequest
	case outbox.ENOTFOUND:
		return http.StatusNotFound
	case outbox.ECONFLICT:
		return http.StatusConflict
	}
	return http.StatusServiceUnavailable
}

// retryLater is how long a client is told to wait after a 503 it could not
// have avoided.
const retryLater = 5 * time.Second

// writeErr answers err. An *Error answers with its own status; an outbox
// error with the status of its code (statusOf) and its message for people.
// Errors the client cannot fix are logged with their cause, and answered
// without it: a driver error never reaches a client. A client that went
// away gets nothing.
func writeErr(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	var he *Error
	if errors.As(err, &he) {
		writeError(w, he)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return
	}
	code := outbox.ErrorCode(err)
	status := statusOf(code)
	if status < http.StatusInternalServerError {
		writeError(w, errorf(status, outbox.ErrorMessage(err)))
		return
	}
	logger.Error("request failed", "path", r.URL.Path, "code", code, "error", err, "request_id", RequestID(r.Context()))
	msg := "the request failed because the database is unavailable or failing; retry later (details are in the server log)"
	if code == outbox.EUNAVAILABLE {
		msg = outbox.ErrorMessage(err) + "; retry later"
	}
	writeError(w, &Error{Status: status, Message: msg, RetryAfter: retryLater})
}
