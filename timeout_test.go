package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// TestIsTimeout checks the deadlines the intake, the delivery and the
// database report, on real sockets.
func TestIsTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, readErr := conn.Read(make([]byte, 1))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"socket read deadline", readErr, true},
		{"wrapped socket read deadline", fmt.Errorf("reading body: %w", readErr), true},
		{"context deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), true},
		{"context cancelled", ctx.Err(), false},
		{"other error", errors.New("connection refused"), false},
		{"nil", nil, false},
	} {
		if got := outbox.IsTimeout(c.err); got != c.want {
			t.Errorf("%s (%v): IsTimeout = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
