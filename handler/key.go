package handler

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/webhook-outbox/webhook-outbox/config"
)

// keySource yields an idempotency key from a request, or "" and a short
// description of why not.
type keySource struct {
	describe string
	get      func(h http.Header, body []byte, doc *lazyDoc) (string, string)
}

// lazyDoc parses the body at most once, and only if a JSON pointer needs it.
type lazyDoc struct {
	body   []byte
	parsed bool
	v      any
	err    error
}

func (d *lazyDoc) value() (any, error) {
	if !d.parsed {
		d.parsed = true
		dec := json.NewDecoder(bytes.NewReader(d.body))
		dec.UseNumber() // a number's key is its JSON text, exactly as sent
		d.err = dec.Decode(&d.v)
	}
	return d.v, d.err
}

func newKeySources(sources []config.KeySource) []keySource {
	out := make([]keySource, 0, len(sources))
	for _, s := range sources {
		switch {
		case s.JSON != "":
			ptr := s.JSON
			out = append(out, keySource{describe: "json " + ptr, get: func(_ http.Header, _ []byte, doc *lazyDoc) (string, string) {
				return pointerKey(doc, ptr)
			}})
		case s.Header != "":
			name := http.CanonicalHeaderKey(s.Header)
			out = append(out, keySource{describe: "header " + name, get: func(h http.Header, _ []byte, _ *lazyDoc) (string, string) {
				if v := h.Get(name); v != "" {
					return v, ""
				}
				return "", "missing"
			}})
		case len(s.Composite) > 0:
			ptrs := s.Composite
			out = append(out, keySource{describe: "composite " + strings.Join(ptrs, "+"), get: func(_ http.Header, _ []byte, doc *lazyDoc) (string, string) {
				parts := make([]string, len(ptrs))
				for i, ptr := range ptrs {
					v, why := pointerKey(doc, ptr)
					if v == "" {
						return "", ptr + " " + why
					}
					parts[i] = v
				}
				return strings.Join(parts, "|"), ""
			}})
		case s.BodySHA256:
			out = append(out, keySource{describe: "body_sha256", get: func(_ http.Header, body []byte, _ *lazyDoc) (string, string) {
				sum := sha256.Sum256(body)
				return "sha256:" + hex.EncodeToString(sum[:]), ""
			}})
		}
	}
	return out
}

// pointerKey resolves an RFC 6901 pointer and turns what it finds into a
// key: a string as is, a number as its JSON text. Anything else yields
// nothing.
func pointerKey(doc *lazyDoc, ptr string) (string, string) {
	v, err := doc.value()
	if err != nil {
		return "", "body not parsable"
	}
	for _, token := range strings.Split(ptr[1:], "/") {
		token = strings.ReplaceAll(strings.ReplaceAll(token, "~1", "/"), "~0", "~")
		switch node := v.(type) {
		case map[string]any:
			next, ok := node[token]
			if !ok {
				return "", "missing"
			}
			v = next
		case []any:
			i, err := strconv.Atoi(token)
			if err != nil || i < 0 || i >= len(node) || (len(token) > 1 && token[0] == '0') {
				return "", "missing"
			}
			v = node[i]
		default:
			return "", "missing"
		}
	}
	switch val := v.(type) {
	case string:
		if val == "" {
			return "", "empty"
		}
		return val, ""
	case json.Number:
		return val.String(), ""
	case nil:
		return "", "null"
	case bool:
		return "", "a boolean"
	default:
		return "", fmt.Sprintf("a %s, not a string or number", jsonKind(v))
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return "value"
}

// extractKey tries the sources in order and returns the first key found. If
// none yields one, it returns an Error explaining what each source found.
func extractKey(sources []keySource, h http.Header, body []byte) (string, *Error) {
	return extractKeyFrom(sources, h, body, &lazyDoc{body: body})
}

// extractKeys returns an event's idempotency key, as extractKey does, and
// its ordering value on a route with ordering (see extractOrderingKey). The
// body is parsed once for both.
func (rt *intakeRoute) extractKeys(h http.Header, body []byte) (key, orderingKey string, e *Error) {
	doc := &lazyDoc{body: body}
	if key, e = extractKeyFrom(rt.keys, h, body, doc); e != nil {
		return "", "", e
	}
	return key, extractOrderingKey(rt.ordering, h, body, doc), nil
}

// extractOrderingKey returns the first value the ordering sources yield, or
// "" when none does: the event is then delivered unordered, and intake's
// answer is the same. The same sources as the idempotency key's read it,
// with the same rules. A value that could not be stored as it is (longer
// than MaxKeyBytes, not UTF-8, or with control characters) is replaced by
// "sha256:" and its hex SHA-256, which keeps the events of one value
// together without refusing any.
func extractOrderingKey(sources []keySource, h http.Header, body []byte, doc *lazyDoc) string {
	for _, s := range sources {
		v, _ := s.get(h, body, doc)
		if v == "" {
			continue
		}
		if len(v) > config.MaxKeyBytes || !utf8.ValidString(v) || strings.ContainsFunc(v, isControl) {
			sum := sha256.Sum256([]byte(v))
			return "sha256:" + hex.EncodeToString(sum[:])
		}
		return v
	}
	return ""
}

func extractKeyFrom(sources []keySource, h http.Header, body []byte, doc *lazyDoc) (string, *Error) {
	tried := make([]string, 0, len(sources))
	for _, s := range sources {
		key, why := s.get(h, body, doc)
		if key == "" {
			tried = append(tried, fmt.Sprintf("%s (%s)", s.describe, why))
			continue
		}
		if len(key) > config.MaxKeyBytes {
			return "", errorf(http.StatusUnprocessableEntity, fmt.Sprintf("the idempotency key from %s is %d bytes long; keys are at most %d bytes", s.describe, len(key), config.MaxKeyBytes))
		}
		if !utf8.ValidString(key) {
			return "", errorf(http.StatusUnprocessableEntity, fmt.Sprintf("the idempotency key from %s is not valid UTF-8", s.describe))
		}
		if strings.ContainsFunc(key, isControl) {
			return "", errorf(http.StatusUnprocessableEntity, fmt.Sprintf("the idempotency key from %s contains control characters; it must be printable text", s.describe))
		}
		if strings.ContainsRune(key, utf8.RuneError) && hasLoneSurrogate(body) {
			// The JSON decoder turns every lone surrogate into U+FFFD, so
			// distinct ids would share one key and all but the first would
			// be dropped as duplicates.
			return "", errorf(http.StatusUnprocessableEntity, fmt.Sprintf(`the idempotency key from %s comes from a string with a lone UTF-16 surrogate escape (such as \ud800), which has no text to use as a key`, s.describe))
		}
		return key, nil
	}
	return "", errorf(http.StatusUnprocessableEntity, "no idempotency key: tried "+strings.Join(tried, ", "))
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// hasLoneSurrogate reports whether body has a \uD800-\uDFFF escape that is
// not a high surrogate followed by a low one.
func hasLoneSurrogate(body []byte) bool {
	surrogate := func(i int) (rune, bool) { // the escape at body[i:], if any
		if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(body[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if i+1 < len(body) && body[i+1] != 'u' {
			i++ // an escaped character, possibly a backslash
			continue
		}
		r, ok := surrogate(i)
		switch {
		case !ok:
		case r >= 0xD800 && r < 0xDC00:
			if low, ok := surrogate(i + 6); !ok || low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 11
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		default:
			i += 5
		}
	}
	return false
}
