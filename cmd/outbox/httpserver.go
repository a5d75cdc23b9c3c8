package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// httpLimits bound what one client connection can hold on to.
type httpLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
}

// defaultHTTPLimits are serve's limits.
//   - Headers must arrive within 10 s: a client trickling them (slow loris)
//     is disconnected.
//   - The whole request, body included, must arrive within 30 s: a body
//     trickled slower is cut off and answered 408. Senders give up sooner
//     (Genesys after at most 60 s, EventBridge after 5 s), and max_body_bytes
//     is enforced while reading, so a large body is cut at the limit long
//     before this.
//   - The answer must be written within 60 s of the request's headers,
//     which bounds a client that reads the answer slowly.
//   - Idle keep-alive connections are closed after 120 s, longer than load
//     balancers' usual 60 s so that they close first.
//   - Request headers are at most 64 KiB (Go's default is 1 MiB).
var defaultHTTPLimits = httpLimits{
	readHeader:     10 * time.Second,
	read:           30 * time.Second,
	write:          60 * time.Second,
	idle:           120 * time.Second,
	maxHeaderBytes: 64 << 10,
}

// httpLimits returns m's limits: defaultHTTPLimits unless a test set its
// own.
func (m *Main) httpLimits() httpLimits {
	if m.limits != nil {
		return *m.limits
	}
	return defaultHTTPLimits
}

// newPlainServer returns an HTTP server for handler with limits.
func newPlainServer(handler http.Handler, limits httpLimits, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: limits.readHeader,
		ReadTimeout:       limits.read,
		WriteTimeout:      limits.write,
		IdleTimeout:       limits.idle,
		MaxHeaderBytes:    limits.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// newHTTPServer returns the server for handler, with m's limits and, when
// the config has tls, its certificate.
func (m *Main) newHTTPServer(handler http.Handler) (*http.Server, error) {
	srv := newPlainServer(handler, m.httpLimits(), m.Logger)
	if t := m.Config.TLS; t != nil {
		certs, err := newCertReloader(t.CertFile, t.KeyFile, m.Logger)
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	}
	return srv, nil
}

// opsServer serves /metrics, /healthz and /readyz on metrics_listen, over
// plain HTTP, with the main listener's limits.
type opsServer struct {
	server   *http.Server
	listener net.Listener
	served   chan error
}

func (m *Main) startOpsServer(addr string, handler http.Handler) (*opsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on metrics_listen %s: %w", addr, err)
	}
	o := &opsServer{server: newPlainServer(handler, m.httpLimits(), m.Logger), listener: ln, served: make(chan error, 1)}
	go func() { o.served <- o.server.Serve(ln) }()
	m.Logger.Info("serving /metrics, /healthz and /readyz on metrics_listen", "addr", ln.Addr().String())
	return o, nil
}

func (o *opsServer) close(ctx context.Context) error {
	if err := o.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("error draining metrics_listen requests: %w", err)
	}
	if err := <-o.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics_listen server failed: %w", err)
	}
	return nil
}

// serve serves HTTP, or HTTPS when the server has a TLS config, on m's
// listener until the server is shut down.
func (m *Main) serve() error {
	if m.server.TLSConfig != nil {
		return m.server.ServeTLS(m.listener, "", "")
	}
	return m.server.Serve(m.listener)
}

// certReloadInterval is how often the TLS files are checked for changes.
const certReloadInterval = 10 * time.Second

// certReloader serves a certificate and key from files, and loads them
// again when they change on disk, so that a renewed certificate is picked
// up without a restart. A renewal that cannot be loaded (a half-written
// file, say) is logged, and the previous certificate is kept.
type certReloader struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' sizes and modification times at the last load
	checked time.Time
}

func newCertReloader(certFile, keyFile string, logger *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, logger: logger}
	stamp, err := c.fileStamp()
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot load cert_file %s with key_file %s: %w", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

func (c *certReloader) fileStamp() (string, error) {
	stamp := ""
	for _, name := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(name)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%d@%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

// get is tls.Config.GetCertificate.
func (c *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < certReloadInterval {
		return c.cert, nil
	}
	c.checked = time.Now()
	stamp, err := c.fileStamp()
	if err != nil || stamp == c.stamp {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.logger.Warn("cannot load the renewed TLS certificate; still serving the previous one", "cert_file", c.certFile, "error", err)
		return c.cert, nil
	}
	c.cert, c.stamp = &cert, stamp
	c.logger.Info("loaded the renewed TLS certificate", "cert_file", c.certFile)
	return c.cert, nil
}
