package config

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/webhook-outbox/webhook-outbox/internal/whsig"
)

// RouteNamePattern is what a route name must match. A route name is a path
// segment and a River queue name, so it is kept to a safe alphabet.
var RouteNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

const maxRouteNameLen = 64

// reservedTargetHeaders are set by webhook-outbox on every delivery and
// cannot be overridden in target.headers.
var reservedTargetHeaders = []string{"Content-Type", "Content-Length", "Host", "X-Outbox-Route", "X-Outbox-Key", "X-Outbox-Attempt", "Transfer-Encoding", "Connection"}

type problems struct{ errs []error }

func (p *problems) add(field, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// validate checks every setting and returns all the problems found.
func (c *Config) validate() problems {
	var p problems
	if c.DatabaseURL == "" {
		p.add("database_url", "is required: set it in the file or in the DATABASE_URL environment variable")
	} else if err := validateDatabaseURL(c.DatabaseURL); err != nil {
		p.add("database_url", "%v", err)
	}
	if !c.DisableAdmin {
		switch {
		case c.AdminToken == "":
			p.add("admin_token", "is required to guard /admin/ and /riverui/: set at least %d random bytes (for example: openssl rand -hex 32), or set disable_admin: true", MinAdminTokenBytes)
		case len(c.AdminToken) < MinAdminTokenBytes:
			p.add("admin_token", "is %d bytes long; it must be at least %d (for example: openssl rand -hex 32)", len(c.AdminToken), MinAdminTokenBytes)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.add("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.IntakeTimeout.D() <= 0 {
		p.add("intake_timeout", "must be positive")
	}
	if c.IntakeRetryAfter.D() < 1e9 {
		p.add("intake_retry_after", "must be at least 1s (Retry-After is sent in whole seconds)")
	}
	if c.MaxInflightRequests < 1 {
		p.add("max_inflight_requests", "must be at least 1")
	}
	if d := c.IntakeBodyTimeout.D(); d <= 0 || d > MaxIntakeBodyTimeout {
		p.add("intake_body_timeout", "%s is out of range: use a positive duration of at most %s", d, MaxIntakeBodyTimeout)
	}
	c.validateInflightMemory(&p)
	if !c.DeadLetterRetention.Forever() && c.DeadLetterRetention.D() < 1e9*60 {
		p.add("dead_letter_retention", "%s is too short to act on: use at least 1m, or forever", c.DeadLetterRetention)
	}
	if c.EventRetention.D() < 1e9*60 {
		p.add("event_retention", "%s is too short: use at least 1m", c.EventRetention.D())
	}
	// Expiring a dead letter removes its event, and a key whose event is
	// gone is accepted again: the dedupe window is event_retention only if
	// dead letters are kept at least as long.
	if !c.DeadLetterRetention.Forever() && c.DeadLetterRetention.D() < c.EventRetention.D() {
		p.add("dead_letter_retention", "%s is shorter than event_retention (%s): an expired dead letter's key would be accepted again before event_retention, the deduplication window; set dead_letter_retention to at least %s, or forever",
			shortDuration(c.DeadLetterRetention.D()), shortDuration(c.EventRetention.D()), shortDuration(c.EventRetention.D()))
	}
	if iv := c.EventPartitionInterval.D(); iv < time.Hour || (24*time.Hour%iv != 0 && iv%(24*time.Hour) != 0) {
		p.add("event_partition_interval", "%s does not fit: use whole hours that divide a day (1h, 2h, 3h, 4h, 6h, 8h, 12h, 24h) or whole days (48h, 168h)", iv)
	}
	if c.CompletedJobRetention.D() < time.Minute {
		p.add("completed_job_retention", "must be at least 1m")
	}
	if len(c.Routes) == 0 {
		p.add("routes", "at least one route is required")
	}
	seen := map[string]int{}
	for i := range c.Routes {
		r := &c.Routes[i]
		field := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			field = fmt.Sprintf("routes[%d] (%s)", i, r.Name)
			if j, dup := seen[r.Name]; dup {
				p.add(field+".name", "%q is already used by routes[%d]", r.Name, j)
			}
			seen[r.Name] = i
		}
		r.validate(field, &p)
	}
	c.validateSecurity(&p)
	return p
}

// validateInflightMemory bounds the memory the bodies of requests in
// flight can hold: max_inflight_requests of them, each up to the largest
// max_body_bytes.
func (c *Config) validateInflightMemory(p *problems) {
	var largest int64
	name := ""
	for _, r := range c.Routes {
		if r.MaxBodyBytes > largest {
			largest, name = r.MaxBodyBytes, r.Name
		}
	}
	if c.MaxInflightRequests < 1 || largest < 1 {
		return
	}
	fits := MaxInflightBodyBytes / largest // requests of the largest size that fit
	if int64(c.MaxInflightRequests) <= fits {
		return
	}
	total := "more than 8 EiB"
	if int64(c.MaxInflightRequests) <= math.MaxInt64/largest {
		total = byteSize(int64(c.MaxInflightRequests) * largest)
	}
	if fits == 0 {
		p.add(fmt.Sprintf("routes (%s).max_body_bytes", name), "%d bytes is more than the %s that all bodies in flight together may hold: lower it", largest, byteSize(MaxInflightBodyBytes))
		return
	}
	p.add("max_inflight_requests", "%d requests in flight with bodies of up to %d bytes each (max_body_bytes of route %s) could hold %s in memory, more than the %s allowed: lower max_inflight_requests to at most %d, or lower max_body_bytes",
		c.MaxInflightRequests, largest, name, total, byteSize(MaxInflightBodyBytes), fits)
}

// byteSize writes n bytes in binary units for a message.
func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

func validateDatabaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("must be a URL such as postgres://user:password@host:5432/dbname")
	}
	return nil
}

func (r *Route) validate(field string, p *problems) {
	switch {
	case r.Name == "":
		p.add(field+".name", "is required")
	case len(r.Name) > maxRouteNameLen:
		p.add(field+".name", "is longer than %d characters", maxRouteNameLen)
	case !RouteNamePattern.MatchString(r.Name):
		p.add(field+".name", "%q is not allowed: use lowercase letters, digits and dashes, starting with a letter or digit", r.Name)
	}
	r.Auth.validate(field+".auth", p)

	if len(r.IdempotencyKey) == 0 {
		p.add(field+".idempotency_key", "at least one source is required, for example - json: /id")
	}
	for i, s := range r.IdempotencyKey {
		s.validate(fmt.Sprintf("%s.idempotency_key[%d]", field, i), p)
	}
	if o := r.Ordering; o != nil {
		if len(o.Key) == 0 {
			p.add(field+".ordering.key", "at least one source is required, for example - json: /conversationId")
		}
		for i, s := range o.Key {
			s.validate(fmt.Sprintf("%s.ordering.key[%d]", field, i), p)
		}
		if o.OnDeadLetter != OnDeadLetterContinue && o.OnDeadLetter != OnDeadLetterBlock {
			p.add(field+".ordering.on_dead_letter", "%q is not one of continue, block", o.OnDeadLetter)
		}
	}
	if r.MaxBodyBytes < 0 {
		p.add(field+".max_body_bytes", "must be positive")
	}

	t := &r.Target
	if t.URL == "" {
		p.add(field+".target.url", "is required")
	} else if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.add(field+".target.url", "%q is not an absolute http:// or https:// URL", RedactURL(t.URL))
	}
	if t.Timeout.D() <= 0 {
		p.add(field+".target.timeout", "must be positive")
	}
	for name, value := range t.Headers {
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			p.add(field+".target.headers", "%q is not a valid header name", name)
		case !httpguts.ValidHeaderFieldValue(value):
			p.add(field+".target.headers."+name, "the value holds characters not allowed in a header")
		default:
			for _, reserved := range reservedTargetHeaders {
				if strings.EqualFold(name, reserved) {
					p.add(field+".target.headers", "%s is set by webhook-outbox on every delivery and cannot be overridden", http.CanonicalHeaderKey(name))
				}
			}
		}
	}

	rt := &r.Retry
	if rt.MaxAttempts < 1 {
		p.add(field+".retry.max_attempts", "must be at least 1")
	}
	if rt.InitialBackoff.D() <= 0 {
		p.add(field+".retry.initial_backoff", "must be positive")
	}
	if rt.MaxBackoff.D() < rt.InitialBackoff.D() {
		p.add(field+".retry.max_backoff", "%s is shorter than initial_backoff %s", rt.MaxBackoff.D(), rt.InitialBackoff.D())
	}
	if rt.GiveUpAfter.D() <= 0 {
		p.add(field+".retry.give_up_after", "must be positive")
	}
	if r.Concurrency < 1 {
		p.add(field+".concurrency", "must be at least 1")
	}
	if r.RateLimit < 0 || math.IsNaN(r.RateLimit) || math.IsInf(r.RateLimit, 0) {
		p.add(field+".rate_limit", "must be a positive number of requests per second, or left out for no limit")
	}
	cb := &r.CircuitBreaker
	if cb.Failures < 1 {
		p.add(field+".circuit_breaker.failures", "must be at least 1")
	}
	if cb.Cooldown.D() < time.Second {
		p.add(field+".circuit_breaker.cooldown", "%s is too short: use at least 1s", cb.Cooldown.D())
	}
	if cb.MaxCooldown.D() < cb.Cooldown.D() {
		p.add(field+".circuit_breaker.max_cooldown", "%s is shorter than cooldown %s", cb.MaxCooldown.D(), cb.Cooldown.D())
	}
}

func (a *Auth) validate(field string, p *problems) {
	modes := 0
	if a.None {
		modes++
	}
	if a.Basic != nil {
		modes++
		if a.Basic.Username == "" {
			p.add(field+".basic.username", "is required")
		}
		oneOrMany(field+".basic", "password", "passwords", a.Basic.Password, a.Basic.Passwords, p)
	}
	if a.Header != nil {
		modes++
		if a.Header.Name == "" {
			p.add(field+".header.name", "is required, for example X-Webhook-Token")
		} else if !httpguts.ValidHeaderFieldName(a.Header.Name) {
			p.add(field+".header.name", "%q is not a valid header name", a.Header.Name)
		} else if strings.EqualFold(a.Header.Name, "Content-Type") || strings.EqualFold(a.Header.Name, "Content-Length") {
			p.add(field+".header.name", "%s cannot carry a secret", a.Header.Name)
		}
		oneOrMany(field+".header", "value", "values", a.Header.Value, a.Header.Values, p)
	}
	if a.HMAC != nil {
		modes++
		h := a.HMAC
		if h.Header == "" {
			p.add(field+".hmac.header", "is required, for example X-Hub-Signature-256")
		} else if !httpguts.ValidHeaderFieldName(h.Header) {
			p.add(field+".hmac.header", "%q is not a valid header name", h.Header)
		}
		oneOrMany(field+".hmac", "secret", "secrets", h.Secret, h.Secrets, p)
		if h.Algorithm != "sha256" && h.Algorithm != "sha1" {
			p.add(field+".hmac.algorithm", "%q is not one of sha256, sha1", h.Algorithm)
		}
		if h.Encoding != "hex" && h.Encoding != "base64" {
			p.add(field+".hmac.encoding", "%q is not one of hex, base64", h.Encoding)
		}
	}
	if a.StandardWebhooks != nil {
		modes++
		s := a.StandardWebhooks
		oneOrMany(field+".standard_webhooks", "secret", "secrets", s.Secret, s.Secrets, p)
		if s.Secret != "" {
			if _, err := whsig.DecodeSecret(s.Secret); err != nil {
				p.add(field+".standard_webhooks.secret", "%v", err)
			}
		}
		for i, secret := range s.Secrets {
			if _, err := whsig.DecodeSecret(secret); secret != "" && err != nil {
				p.add(fmt.Sprintf("%s.standard_webhooks.secrets[%d]", field, i), "%v", err)
			}
		}
		if s.Tolerance.D() <= 0 {
			p.add(field+".standard_webhooks.tolerance", "must be positive")
		}
	}
	switch {
	case modes == 0:
		p.add(field, "is required: choose exactly one of none: true, basic, header, hmac, standard_webhooks")
	case modes > 1:
		p.add(field, "sets %d modes: choose exactly one of none: true, basic, header, hmac, standard_webhooks", modes)
	}
}

// oneOrMany checks that exactly one of a singular secret and its plural
// rotation list is set, and that no entry is empty.
func oneOrMany(field, one, many, single string, list []string, p *problems) {
	switch {
	case single == "" && len(list) == 0:
		p.add(field+"."+one, "is required (or list several under %s to rotate)", many)
	case single != "" && len(list) > 0:
		p.add(field, "set %s or %s, not both", one, many)
	}
	for i, v := range list {
		if v == "" {
			p.add(fmt.Sprintf("%s.%s[%d]", field, many, i), "is empty")
		}
	}
}

// Secrets returns the singular value and the rotation list as one list.
func Secrets(single string, list []string) []string {
	if single != "" {
		return []string{single}
	}
	return list
}

func (s KeySource) validate(field string, p *problems) {
	set := 0
	if s.JSON != "" {
		set++
		if err := ValidatePointer(s.JSON); err != nil {
			p.add(field+".json", "%v", err)
		}
	}
	if s.Header != "" {
		set++
		if !httpguts.ValidHeaderFieldName(s.Header) {
			p.add(field+".header", "%q is not a valid header name", s.Header)
		}
	}
	if len(s.Composite) > 0 {
		set++
		for i, ptr := range s.Composite {
			if err := ValidatePointer(ptr); err != nil {
				p.add(fmt.Sprintf("%s.composite[%d]", field, i), "%v", err)
			}
		}
	}
	if s.BodySHA256 {
		set++
	}
	if set != 1 {
		p.add(field, "set exactly one of json, header, composite, body_sha256")
	}
}

// ValidatePointer checks an RFC 6901 JSON pointer that selects something
// inside the document.
func ValidatePointer(ptr string) error {
	if !strings.HasPrefix(ptr, "/") {
		return fmt.Errorf("%q is not a JSON pointer: it must start with /, as in /id or /eventBody/conversationId", ptr)
	}
	for i := 0; i < len(ptr); i++ {
		if ptr[i] == '~' && (i+1 == len(ptr) || (ptr[i+1] != '0' && ptr[i+1] != '1')) {
			return fmt.Errorf("%q is not a JSON pointer: ~ must be followed by 0 (for ~) or 1 (for /)", ptr)
		}
	}
	return nil
}
