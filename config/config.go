// Package config reads, expands and validates webhook-outbox's YAML
// configuration. Everything an operator can misspell is checked at startup,
// and every message names the field and what is wrong with it.
package config

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Defaults for optional settings.
const (
	DefaultListen              = ":8080"
	DefaultDeadLetterRetention = 720 * time.Hour
	DefaultEventRetention      = 168 * time.Hour
	DefaultIntakeTimeout       = 2 * time.Second
	DefaultIntakeRetryAfter    = 60 * time.Second
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultPartitionInterval   = 24 * time.Hour
	DefaultCompletedRetention  = 24 * time.Hour
	DefaultMaxBodyBytes        = 1 << 20
	DefaultTargetTimeout       = 10 * time.Second
	DefaultMaxAttempts         = 10
	DefaultInitialBackoff      = 2 * time.Second
	DefaultMaxBackoff          = time.Hour
	DefaultGiveUpAfter         = 72 * time.Hour
	DefaultConcurrency         = 8
	DefaultSignatureTolerance  = 5 * time.Minute
	// DefaultMaxInflightRequests is the intake's cap on webhook requests
	// being handled at once. Far above what the database pool serves
	// concurrently, it only bites when requests pile up waiting for a slow
	// database, and then bounds the memory they hold.
	DefaultMaxInflightRequests = 1024
	// DefaultIntakeBodyTimeout is how long a webhook's body may take to
	// arrive once its headers are in. Senders post bodies of a few KiB to
	// a few hundred KiB in milliseconds; a body still trickling in after
	// 10 s holds an intake slot for nothing.
	DefaultIntakeBodyTimeout = 10 * time.Second
	// MaxIntakeBodyTimeout is the longest intake_body_timeout: the HTTP
	// server's own limit on reading a whole request.
	MaxIntakeBodyTimeout = 30 * time.Second
	// MaxInflightBodyBytes bounds max_inflight_requests × the largest
	// max_body_bytes: the memory that bodies in flight may hold at once.
	// The defaults (1024 × 1 MiB) reach it exactly.
	MaxInflightBodyBytes = 1 << 30
	// Circuit breaker defaults: open after this many consecutive retryable
	// failures, stay open 30 s, doubling after each failed probe up to 5 min.
	DefaultBreakerFailures    = 5
	DefaultBreakerCooldown    = 30 * time.Second
	DefaultBreakerMaxCooldown = 5 * time.Minute

	// MaxKeyBytes is the longest idempotency key accepted.
	MaxKeyBytes = 512
	// MinAdminTokenBytes is the shortest admin_token accepted.
	MinAdminTokenBytes = 32
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the HTTP listen address. OUTBOX_LISTEN overrides it.
	Listen string `yaml:"listen"`
	// DatabaseURL is the Postgres connection URL. Required; DATABASE_URL
	// overrides it. pool_max_conns in it sizes the pool (at least 20).
	DatabaseURL string `yaml:"database_url"`
	// AdminToken guards /admin/, /riverui/ and /console/, as a Bearer token
	// or as the Basic auth password. At least 32 bytes; required unless
	// disable_admin is true.
	AdminToken string `yaml:"admin_token"`
	// DisableAdmin turns the admin API, River UI and the console off, so
	// that no admin token is needed.
	DisableAdmin bool `yaml:"disable_admin"`
	// DeadLetterRetention is how long dead letters are kept; "forever" keeps
	// them. At least event_retention: a dead letter's event goes with it,
	// and with the event its key's deduplication.
	DeadLetterRetention Retention `yaml:"dead_letter_retention"`
	// EventRetention is how long delivered events are kept: the replay
	// window.
	EventRetention Duration `yaml:"event_retention"`
	// EventPartitionInterval is the time span of each events partition: a
	// day by default. Retention drops whole partitions.
	EventPartitionInterval Duration `yaml:"event_partition_interval"`
	// CompletedJobRetention is how long River keeps the job rows of
	// delivered events (the events themselves follow event_retention).
	CompletedJobRetention Duration `yaml:"completed_job_retention"`
	// IntakeTimeout bounds how long intake waits for the database before it
	// answers 503.
	IntakeTimeout Duration `yaml:"intake_timeout"`
	// IntakeRetryAfter is the Retry-After sent with intake's 503 and 429
	// answers.
	IntakeRetryAfter Duration `yaml:"intake_retry_after"`
	// MaxInflightRequests caps the webhook requests intake handles at once.
	// Past it, intake sheds load with 429 and Retry-After rather than queue
	// more requests behind a database that is not keeping up.
	MaxInflightRequests int `yaml:"max_inflight_requests"`
	// IntakeBodyTimeout is how long a webhook's body may take to arrive
	// after its headers; a slower body is cut off with 408, so a sender
	// trickling bytes cannot hold an intake slot. At most 30s.
	IntakeBodyTimeout Duration `yaml:"intake_body_timeout"`
	// ShutdownTimeout bounds a graceful shutdown: in-flight requests and
	// running deliveries get this long to finish.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel string `yaml:"log_level"`
	// TLS, when set, serves HTTPS on Listen instead of plain HTTP.
	TLS *TLS `yaml:"tls"`
	// TrustedProxies are the addresses or CIDR ranges of reverse proxies in
	// front of outbox. Only for a request from one of them is
	// X-Forwarded-For believed when deciding the client's address, which
	// the admin surface's failure throttle and intake's per-address budget
	// count by.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MetricsListen, when set, is a second listen address that serves
	// /metrics (and /healthz and /readyz) over plain HTTP; /metrics is then
	// no longer served on listen, so it can stay on an internal network
	// while listen faces senders.
	MetricsListen string `yaml:"metrics_listen"`
	// Routes are the webhook endpoints and where each delivers.
	Routes []Route `yaml:"routes"`
}

// TLS is the certificate and key the HTTPS listener serves. Both files are
// PEM; the certificate file may hold the chain. They are read again when
// they change on disk, so a renewed certificate needs no restart.
type TLS struct {
	// CertFile is the PEM certificate chain; a renewed file is picked up
	// within seconds.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of the certificate.
	KeyFile string `yaml:"key_file"`
}

// Route is one webhook endpoint, POST /webhooks/{name}, and its target.
type Route struct {
	// Name names the endpoint, POST /webhooks/{name}, and the River queue
	// its deliveries run in. Required: lowercase letters, digits and
	// dashes, starting with a letter or digit.
	Name string `yaml:"name"`
	// Auth says how senders prove who they are. Required: exactly one mode.
	Auth Auth `yaml:"auth"`
	// IdempotencyKey lists where to find an event's deduplication key,
	// tried in order; the first non-empty value wins. Required.
	IdempotencyKey []KeySource `yaml:"idempotency_key"`
	// MaxBodyBytes is the largest body accepted; a larger one is refused
	// with 413 before it is read in full.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// KeepHeaders lists request headers to store with each event even
	// though their names look like credentials (they contain token,
	// secret, signature, api-key, auth, cookie, hmac or password), which
	// are otherwise dropped. The route's own auth header can never be
	// kept.
	KeepHeaders []string `yaml:"keep_headers"`
	// Target is where the route's events are delivered.
	Target Target `yaml:"target"`
	// Retry is how failed deliveries are retried.
	Retry Retry `yaml:"retry"`
	// Concurrency caps the deliveries in flight for the route across all
	// replicas: each holds a share, kept in Postgres. With
	// adaptive_concurrency it is the ceiling of the adaptive limit. Each
	// replica runs 4 River workers per unit of it.
	Concurrency int `yaml:"concurrency"`
	// AdaptiveConcurrency makes concurrency the ceiling of a limit that
	// follows the target: the limit starts at 1 (after start-up, an idle
	// spell, the circuit breaker closing or a resume), grows while the
	// target answers about as fast as it does unloaded and without 5xx,
	// 429 or timeouts, and shrinks as soon as its latency rises or errors
	// appear, so a backlog never arrives at a recovering target all at
	// once. false makes concurrency a fixed cap. The current limit is in
	// `routes list`, GET /admin/v1/routes and
	// outbox_delivery_concurrency_limit.
	AdaptiveConcurrency *bool `yaml:"adaptive_concurrency"`
	// RateLimit, when set, caps how many deliveries per second the route
	// starts across all replicas (each holds a share, kept in Postgres),
	// so a target with a quota is not pushed past it. Zero means no limit.
	RateLimit float64 `yaml:"rate_limit"`
	// CircuitBreaker stops sending to a failing target for a while, so a
	// sick target is not hammered and queued events keep their attempts.
	CircuitBreaker CircuitBreaker `yaml:"circuit_breaker"`
	// Ordering, when set, delivers the events that share an ordering value
	// (such as a conversation id) one at a time, in the order intake
	// committed them. A failing event then holds back only the events of
	// its own value. Events without a value are delivered unordered.
	Ordering *Ordering `yaml:"ordering"`
}

// How an ordered route's key goes on when its head becomes a dead letter.
const (
	// OnDeadLetterContinue releases the key's next event.
	OnDeadLetterContinue = "continue"
	// OnDeadLetterBlock holds the key until an operator retries, releases
	// or deletes the dead letter.
	OnDeadLetterBlock = "block"
)

// Ordering is a route's ordered delivery per key.
type Ordering struct {
	// Key lists where to find an event's ordering value, with the same
	// sources as idempotency_key, tried in order; the first non-empty value
	// wins. An event where none yields a value is delivered unordered.
	// Required.
	Key []KeySource `yaml:"key"`
	// OnDeadLetter is what happens to the later events of a value when one
	// becomes a dead letter: continue delivers the next one; block holds
	// them until an operator retries, releases or deletes the dead letter.
	OnDeadLetter string `yaml:"on_dead_letter"`
}

// CircuitBreaker is a route's circuit breaker. After Failures consecutive
// retryable failures the circuit opens: no delivery is sent for Cooldown,
// then one probe is. A successful probe closes the circuit; a failed one
// opens it again for twice as long, up to MaxCooldown.
type CircuitBreaker struct {
	// Failures is how many retryable failures in a row open the circuit.
	Failures int `yaml:"failures"`
	// Cooldown is how long an open circuit sends nothing before one probe;
	// it doubles after each failed probe.
	Cooldown Duration `yaml:"cooldown"`
	// MaxCooldown caps the doubling cooldown.
	MaxCooldown Duration `yaml:"max_cooldown"`
}

// Auth says how a route authenticates its sender. Exactly one mode is set.
type Auth struct {
	// None, when true, accepts webhooks without authentication; outbox
	// logs a warning at start.
	None bool `yaml:"none"`
	// Basic is HTTP Basic authentication.
	Basic *BasicAuth `yaml:"basic"`
	// Header is a shared secret in a request header.
	Header *HeaderAuth `yaml:"header"`
	// HMAC is a signature of the body in a request header.
	HMAC *HMACAuth `yaml:"hmac"`
	// StandardWebhooks is the Standard Webhooks signature scheme.
	StandardWebhooks *StandardWebhooksAuth `yaml:"standard_webhooks"`
}

// BasicAuth is HTTP Basic authentication. Several passwords may be valid at
// once, so a password can be rotated without downtime.
type BasicAuth struct {
	// Username is the expected user name. Required.
	Username string `yaml:"username"`
	// Password is the expected password; set it or passwords.
	Password string `yaml:"password"`
	// Passwords are several accepted passwords, for rotation.
	Passwords []string `yaml:"passwords"`
}

// HeaderAuth is a shared secret sent in a request header, as Genesys data
// actions do.
type HeaderAuth struct {
	// Name is the header that carries the secret, such as
	// X-Webhook-Token. Required. It is never stored with the event.
	Name string `yaml:"name"`
	// Value is the expected secret; set it or values.
	Value string `yaml:"value"`
	// Values are several accepted secrets, for rotation.
	Values []string `yaml:"values"`
}

// HMACAuth is a signature of the raw body in a header, as GitHub, Shopify
// and Genesys Open Messaging send.
type HMACAuth struct {
	// Header is the header holding the signature, such as
	// X-Hub-Signature-256. Required.
	Header string `yaml:"header"`
	// Secret is the signing key; set it or secrets.
	Secret string `yaml:"secret"`
	// Secrets are several accepted signing keys, for rotation.
	Secrets []string `yaml:"secrets"`
	// Algorithm is sha256 or sha1.
	Algorithm string `yaml:"algorithm"`
	// Prefix comes before the signature in the header, such as "sha256=".
	Prefix string `yaml:"prefix"`
	// Encoding is how the signature is written: hex or base64.
	Encoding string `yaml:"encoding"`
}

// StandardWebhooksAuth is the Standard Webhooks scheme (webhook-id,
// webhook-timestamp, webhook-signature).
type StandardWebhooksAuth struct {
	// Secret is the signing secret (whsec_…); set it or secrets.
	Secret string `yaml:"secret"`
	// Secrets are several accepted signing secrets, for rotation.
	Secrets []string `yaml:"secrets"`
	// Tolerance is how far webhook-timestamp may be from this server's
	// clock, against replayed requests.
	Tolerance Duration `yaml:"tolerance"`
}

// KeySource is one place to look for an event's idempotency key. Exactly one
// field is set. Sources are tried in order; the first that yields a
// non-empty value wins.
type KeySource struct {
	// JSON is an RFC 6901 pointer into the body, such as /id.
	JSON string `yaml:"json"`
	// Header is a request header name, such as webhook-id.
	Header string `yaml:"header"`
	// Composite joins the values at several JSON pointers with "|". It
	// yields nothing unless every pointer yields a value. It serves payloads
	// without an event id, such as Genesys's bare notification envelope.
	Composite []string `yaml:"composite"`
	// BodySHA256, when true, uses "sha256:" and the hex SHA-256 of the raw
	// body: byte-identical redeliveries share a key.
	BodySHA256 bool `yaml:"body_sha256"`
}

// Target is where a route's events are delivered.
type Target struct {
	// URL is the absolute http:// or https:// address each event is
	// POSTed to. Required. Redirects are not followed.
	URL string `yaml:"url"`
	// Timeout bounds one delivery attempt; no answer in time is retried.
	Timeout Duration `yaml:"timeout"`
	// Headers are added to every delivery, such as an Authorization for
	// the internal service. Headers outbox sets itself (Content-Type,
	// Host, X-Outbox-*) cannot be set.
	Headers map[string]string `yaml:"headers"`
	// SigningSecret, when set, signs every delivery with the Standard
	// Webhooks scheme (webhook-id, webhook-timestamp, webhook-signature), so
	// the target can check that a request came from outbox. It is a whsec_
	// base64 secret. SigningSecrets signs with several at once, for
	// rotation: the target accepts any one of the signatures.
	SigningSecret string `yaml:"signing_secret"`
	// SigningSecrets are several signing secrets at once, for rotation.
	SigningSecrets []string `yaml:"signing_secrets"`
}

// Retry is a route's retry policy.
type Retry struct {
	// MaxAttempts is how many attempts a delivery gets before it becomes
	// a dead letter. Snoozes (Retry-After) do not use attempts.
	MaxAttempts int `yaml:"max_attempts"`
	// InitialBackoff is the wait after the first failed attempt; attempt
	// n waits initial_backoff × 2^(n-1), ±10% jitter.
	InitialBackoff Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between attempts, and a target's
	// Retry-After.
	MaxBackoff Duration `yaml:"max_backoff"`
	// GiveUpAfter is the delivery deadline, counted from intake. Past it an
	// event becomes a dead letter however many attempts remain.
	GiveUpAfter Duration `yaml:"give_up_after"`
}

// Adaptive reports whether the route's concurrency is adaptive
// (adaptive_concurrency, true unless set to false).
func (r *Route) Adaptive() bool {
	return r.AdaptiveConcurrency == nil || *r.AdaptiveConcurrency
}

// MaxTargetTimeout is the longest target timeout of any route.
func (c *Config) MaxTargetTimeout() time.Duration {
	var longest time.Duration
	for _, r := range c.Routes {
		longest = max(longest, r.Target.Timeout.D())
	}
	return longest
}

// Path returns the config file to read: flagValue if set, else
// $OUTBOX_CONFIG, else ./outbox.yaml.
func Path(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("OUTBOX_CONFIG"); env != "" {
		return env
	}
	return "outbox.yaml"
}

// Load reads the file at path, expands ${VAR} references, applies the
// DATABASE_URL and OUTBOX_LISTEN overrides and defaults, and validates the
// result.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config file %s does not exist: pass --config PATH or set OUTBOX_CONFIG", path)
		}
		return nil, fmt.Errorf("cannot read config file: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse is Load without the file: data is the YAML, lookupEnv resolves
// ${VAR} references and the overrides.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg, err := decode(data, lookupEnv)
	if err != nil {
		return nil, err
	}
	if v, ok := lookupEnv("DATABASE_URL"); ok && v != "" {
		cfg.DatabaseURL = v
	}
	if v, ok := lookupEnv("OUTBOX_LISTEN"); ok && v != "" {
		cfg.Listen = v
	}
	cfg.applyDefaults()
	p := cfg.validate()
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) applyDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if !c.DeadLetterRetention.set {
		c.DeadLetterRetention = Retention{d: DefaultDeadLetterRetention, set: true}
	}
	setDefault(&c.EventRetention, DefaultEventRetention)
	setDefault(&c.EventPartitionInterval, DefaultPartitionInterval)
	setDefault(&c.CompletedJobRetention, DefaultCompletedRetention)
	setDefault(&c.IntakeTimeout, DefaultIntakeTimeout)
	setDefault(&c.IntakeRetryAfter, DefaultIntakeRetryAfter)
	setDefault(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.MaxInflightRequests == 0 {
		c.MaxInflightRequests = DefaultMaxInflightRequests
	}
	setDefault(&c.IntakeBodyTimeout, DefaultIntakeBodyTimeout)
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.MaxBodyBytes == 0 {
			r.MaxBodyBytes = DefaultMaxBodyBytes
		}
		setDefault(&r.Target.Timeout, DefaultTargetTimeout)
		if r.Retry.MaxAttempts == 0 {
			r.Retry.MaxAttempts = DefaultMaxAttempts
		}
		setDefault(&r.Retry.InitialBackoff, DefaultInitialBackoff)
		setDefault(&r.Retry.MaxBackoff, DefaultMaxBackoff)
		setDefault(&r.Retry.GiveUpAfter, DefaultGiveUpAfter)
		if r.Concurrency == 0 {
			r.Concurrency = DefaultConcurrency
		}
		if r.Ordering != nil && r.Ordering.OnDeadLetter == "" {
			r.Ordering.OnDeadLetter = OnDeadLetterContinue
		}
		if r.AdaptiveConcurrency == nil {
			r.AdaptiveConcurrency = new(true)
		}
		if r.CircuitBreaker.Failures == 0 {
			r.CircuitBreaker.Failures = DefaultBreakerFailures
		}
		setDefault(&r.CircuitBreaker.Cooldown, DefaultBreakerCooldown)
		setDefault(&r.CircuitBreaker.MaxCooldown, max(DefaultBreakerMaxCooldown, r.CircuitBreaker.Cooldown.D()))
		if r.Auth.HMAC != nil {
			if r.Auth.HMAC.Algorithm == "" {
				r.Auth.HMAC.Algorithm = "sha256"
			}
			if r.Auth.HMAC.Encoding == "" {
				r.Auth.HMAC.Encoding = "hex"
			}
		}
		if r.Auth.StandardWebhooks != nil {
			setDefault(&r.Auth.StandardWebhooks.Tolerance, DefaultSignatureTolerance)
		}
	}
}

func setDefault(d *Duration, def time.Duration) {
	if !d.set {
		*d = Duration{d: def, set: true}
	}
}
