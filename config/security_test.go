package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var whsec = "whsec_" + base64.StdEncoding.EncodeToString([]byte("outbound-signing-key-32-bytes!!!"))

func TestSecurityErrorsNameTheField(t *testing.T) {
	t.Parallel()
	route := func(s, old, new string) string { return strings.Replace(s, old, new, 1) }
	cases := []struct {
		name string
		doc  string
		want string
	}{
		{"tls without key", minimal + "tls: {cert_file: /x.pem}\n", "tls.key_file: is required when tls is set"},
		{"tls without cert", minimal + "tls: {key_file: /x.pem}\n", "tls.cert_file: is required when tls is set"},
		{"tls files missing", minimal + "tls: {cert_file: /nope/cert.pem, key_file: /nope/key.pem}\n", "tls: cannot load cert_file /nope/cert.pem with key_file /nope/key.pem"},
		{"tls from a device", minimal + "tls: {cert_file: /dev/zero, key_file: /dev/zero}\n", "tls.cert_file: /dev/zero is not a regular file"},
		{"tls unknown key", minimal + "tls: {cert: /x.pem}\n", `unknown key "cert" in tls (known keys: cert_file, key_file)`},
		{"bad trusted proxy", minimal + "trusted_proxies: [10.0.0.0/8, nginx]\n", `trusted_proxies[1]: "nginx" is not an IP address or a CIDR range`},
		{"bad signing secret", route(minimal, `target: {url:`, `target: {signing_secret: "not-base64!", url:`), "routes[0] (genesys).target.signing_secret: is not a Standard Webhooks secret"},
		{"bad rotated signing secret", route(minimal, `target: {url:`, `target: {signing_secrets: ["`+whsec+`", "whsec_%%%"], url:`), "routes[0] (genesys).target.signing_secrets[1]: is not a Standard Webhooks secret"},
		{"signing secret and secrets", route(minimal, `target: {url:`, `target: {signing_secret: "`+whsec+`", signing_secrets: ["`+whsec+`"], url:`), "target: set signing_secret or signing_secrets, not both"},
		{"signed delivery header override", route(minimal, `target: {url:`, `target: {signing_secret: "`+whsec+`", headers: {webhook-signature: x}, url:`), "Webhook-Signature is set by webhook-outbox on every signed delivery"},
		{"key from Authorization", route(minimal, `[{json: /id}]`, `[{json: /id}, {header: authorization}]`), "idempotency_key[1].header: Authorization carries a credential"},
		{"key from a signature header", route(minimal, `[{json: /id}]`, `[{header: X-Hub-Signature-256}]`), "idempotency_key[0].header: X-Hub-Signature-256 carries a credential"},
		{"key from the route's token header", route(route(minimal, `auth: {none: true}`, `auth: {header: {name: X-Webhook-Token, value: t}}`), `[{json: /id}]`, `[{header: x-webhook-token}]`),
			"idempotency_key[0].header: X-Webhook-Token carries a credential"},
		{"standard webhooks rotated secret named", route(minimal, `auth: {none: true}`, `auth: {standard_webhooks: {secrets: ["`+whsec+`", "bad!"]}}`), "auth.standard_webhooks.secrets[1]: is not a Standard Webhooks secret"},
		{"password in a bad target URL is not echoed", route(minimal, `"http://127.0.0.1:3000/events"`, `"user:hunter2@127.0.0.1:3000/events"`), `"xxxxx@127.0.0.1:3000/events" is not an absolute`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(c.doc), env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

func TestSecuritySettingsParse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	doc := strings.Replace(minimal, `target: {url:`, `target: {signing_secrets: ["`+whsec+`", "`+whsec+`"], url:`, 1) +
		"tls: {cert_file: " + cert + ", key_file: " + key + "}\ntrusted_proxies: [10.0.0.0/8, 192.168.1.7, \"fd00::/8\"]\n"
	cfg, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if assert.NotNil(t, cfg.TLS, "tls") {
		assert.Equal(t, cert, cfg.TLS.CertFile, "tls = %+v", cfg.TLS)
		assert.Equal(t, key, cfg.TLS.KeyFile, "tls = %+v", cfg.TLS)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}
	assert.Equal(t, want, cfg.TrustedProxyPrefixes(), "trusted proxies")
	keys := cfg.Routes[0].Target.SigningKeys()
	require.Len(t, keys, 2, "signing keys = %q", keys)
	assert.Equal(t, "outbound-signing-key-32-bytes!!!", string(keys[0]), "signing keys = %q", keys)
	assert.Empty(t, cfg.Routes[0].Target.SigningSecret, "signing_secret of a target with signing_secrets")
	assert.Nil(t, (&Target{}).SigningKeys(), "an unsigned target has signing keys")
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://127.0.0.1:3000/x":          "http://127.0.0.1:3000/x",
		"https://svc:s3cret@internal/hook": "https://svc:xxxxx@internal/hook",
		"https://svc@internal/hook":        "https://svc@internal/hook",
		"svc:s3cret@internal:80/hook":      "xxxxx@internal:80/hook",
		"http://a b:s3cret@x/":             "http://xxxxx@x/",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsCredentialHeader(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"authorization", "Cookie", "webhook-signature", "X-Hub-Signature", "x-hub-signature-256", "X-Twilio-Signature"} {
		if !IsCredentialHeader(h) {
			t.Errorf("%s is not a credential header", h)
		}
	}
	for _, h := range []string{"webhook-id", "X-Request-Id", "Content-Type"} {
		if IsCredentialHeader(h) {
			t.Errorf("%s is a credential header", h)
		}
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its key
// to dir, and returns their paths.
func writeSelfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outbox test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}
