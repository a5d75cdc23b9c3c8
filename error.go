package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// Error codes. Each says who can fix the problem, which decides the HTTP
// status (handler) and the CLI's exit code (cmd/outbox).
const (
	// EINVALID: the request is wrong; its message says how to correct it.
	EINVALID = "invalid"
	// ENOTFOUND: what the request names does not exist.
	ENOTFOUND = "not_found"
	// ECONFLICT: the request cannot be carried out in the current state.
	ECONFLICT = "conflict"
	// EUNAVAILABLE: a dependency (in practice the database) is unreachable
	// or too slow; the same request may succeed later.
	EUNAVAILABLE = "unavailable"
	// EINTERNAL: anything else. Errors without a code are internal.
	EINTERNAL = "internal"
)

// Error is webhook-outbox's error: a code that says who can fix it, and a
// message for people that says what was wrong and what to do. The message
// is shown to API clients and operators as is, so it never carries a driver
// error or a secret; Err holds the cause, for logs.
type Error struct {
	Code    string
	Message string
	Err     error
}

// Errorf returns an Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with code and message whose cause is err.
func Wrap(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// Error returns the message, followed by the cause when there is one.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the code of the first Error in err's chain, "" for a
// nil err, and EINTERNAL for an error that carries no code.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message for people of the first Error in err's
// chain, or a generic one for an error that carries no code: its text may
// hold driver details, which stay in the log.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	}
	return "internal error; the details are in the server log"
}

// IsTimeout reports whether err came from a deadline: a context's, or a
// network operation's (a socket read or write deadline, a dial timeout), as
// the HTTP server, the HTTP client and pgx report them. pgx wraps both kinds
// in its own timeout error, which unwraps to them.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
