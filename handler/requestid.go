package handler

import (
	"context"
	"crypto/rand"
	"net/http"
)

// HeaderRequestID carries a request's id. A caller that sends a sane one
// (see validRequestID) has it kept, so its own logs and outbox's line up;
// otherwise outbox makes one. Every answer carries it back.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLen bounds a caller's request id, which lands in every log
// line of the request and in the delivery job's metadata.
const maxRequestIDLen = 128

type requestIDKey struct{}

// RequestID returns the id withRequestID gave the request of ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequestID gives every request an id, echoes it in the answer's
// X-Request-Id header, and puts it in the request's context for logs.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// validRequestID accepts ids of 1 to 128 characters drawn from letters,
// digits and ._:/+=@- : enough for UUIDs, ULIDs, base64 and the ids of
// common proxies and tracing systems, and nothing that could forge a log
// line, break a header or smuggle markup.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '_' || c == ':' || c == '/' || c == '+' || c == '=' || c == '@' || c == '-':
		default:
			return false
		}
	}
	return true
}
