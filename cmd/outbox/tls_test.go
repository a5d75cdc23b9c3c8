package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// writeCert writes a self-signed certificate for 127.0.0.1 named cn, and
// its key, to dir, and returns the certificate.
func writeCert(t *testing.T, dir, cn string) *x509.Certificate {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	// Written aside and renamed, as a certificate manager does.
	for name, block := range map[string]*pem.Block{"cert.pem": {Type: "CERTIFICATE", Bytes: der}, "key.pem": {Type: "PRIVATE KEY", Bytes: keyDER}} {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func tlsClient(cert *x509.Certificate) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
}

// TestTLSListener serves with tls: {cert_file, key_file}: a webhook over
// HTTPS is accepted, and plain HTTP on that port is refused.
func TestTLSListener(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert := writeCert(t, dir, "outbox")
	doc := strings.Replace(limitsConfig, "routes:", "tls: {cert_file: "+filepath.Join(dir, "cert.pem")+", key_file: "+filepath.Join(dir, "key.pem")+"}\nroutes:", 1)
	m, _ := startMainWithLimits(t, doc, nil, nil)

	req, _ := http.NewRequest(http.MethodPost, "https://"+m.Addr()+"/webhooks/genesys", strings.NewReader(`{"id":"over-tls"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Token", "genesys-token")
	resp, err := tlsClient(cert).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, "over TLS: %s", raw)
	assert.Contains(t, string(raw), `"accepted"`, "over TLS")
	if assert.NotNil(t, resp.TLS, "over TLS: no TLS state") {
		assert.GreaterOrEqual(t, resp.TLS.Version, uint16(tls.VersionTLS12), "over TLS: version")
	}

	resp, err = http.Get("http://" + m.Addr() + "/healthz")
	if err == nil {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, 400, resp.StatusCode, "plain HTTP on the TLS port: %s", raw)
		assert.Contains(t, string(raw), "HTTPS", "plain HTTP on the TLS port")
	}
}

// TestCertReloader: a renewed certificate is served after it is written,
// and one that cannot be loaded leaves the previous one in place.
func TestCertReloader(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := writeCert(t, dir, "first")
	var logs bytes.Buffer
	c, err := newCertReloader(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		t.Helper()
		c.mu.Lock()
		c.checked = time.Time{} // as if certReloadInterval had passed
		c.mu.Unlock()
		got, err := c.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(got.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Subject.CommonName
	}
	if cn := served(); cn != first.Subject.CommonName {
		t.Fatalf("serving %s", cn)
	}
	time.Sleep(10 * time.Millisecond) // a later modification time
	writeCert(t, dir, "second")
	if cn := served(); cn != "second" {
		t.Errorf("after renewal serving %s", cn)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, "second", served(), "after a broken renewal; logs %s", logs.String())
	assert.Contains(t, logs.String(), "still serving the previous one", "after a broken renewal")
	if _, err := newCertReloader(filepath.Join(dir, "nope.pem"), filepath.Join(dir, "key.pem"), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a missing cert_file was accepted")
	}
}

// TestConfigCheckWarnsAndRedacts: config check warns about routes without
// authentication, names the TLS certificate, marks signed routes, and hides
// the password of a target URL.
func TestConfigCheckWarnsAndRedacts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeCert(t, dir, "outbox")
	doc := `
database_url: postgres://u:dbpass@localhost/db
admin_token: ` + testAdminToken + `
tls: {cert_file: ` + filepath.Join(dir, "cert.pem") + `, key_file: ` + filepath.Join(dir, "key.pem") + `}
routes:
  - name: open
    auth: {none: true}
    idempotency_key: [{json: /id}]
    target: {url: "https://svc:target-pass@internal.example/hook", signing_secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
`
	path := filepath.Join(dir, "outbox.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, "config", "check", "--config", path)
	for _, want := range []string{
		"HTTPS on :8080 with " + filepath.Join(dir, "cert.pem"),
		"POST /webhooks/open -> https://svc:xxxxx@internal.example/hook (auth: none,",
		", signed)",
		"warning: route open accepts webhooks without authentication (auth: none: true)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	assert.Equal(t, 0, code, "config check:\n%s%s", out, errOut)
	for _, secret := range []string{"target-pass", "dbpass", "MfKQ9r8"} {
		assert.NotContains(t, out+errOut, secret, "output shows a secret")
	}
}
