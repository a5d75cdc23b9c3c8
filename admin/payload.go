package admin

import (
	"encoding/json"
	"strconv"
	"strings"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

// ParsePayloadCondition reads a condition an operator typed, PATH = VALUE:
//   - PATH is an RFC 6901 JSON pointer (/eventBody/conversationId), or
//     dotted keys (eventBody.conversationId, $.eventBody.conversationId)
//     with array indexes as [0] or .0;
//   - VALUE is compared with the text of the JSON value at PATH; surrounding
//     double quotes are taken off ("abc" and abc are the same).
//
// The condition is data: the path and the value are bound as query
// parameters, never written into SQL. An empty string is no condition.
func ParsePayloadCondition(s string) (*outbox.PayloadCondition, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	rawPath, rawValue, ok := strings.Cut(s, "=")
	if !ok {
		return nil, outbox.Errorf(outbox.EINVALID, "payload condition %q has no \"=\": write PATH = VALUE, for example conversationId = abc or /eventBody/id = 42", s)
	}
	path, err := parsePath(strings.TrimSpace(rawPath))
	if err != nil {
		return nil, err
	}
	value := strings.TrimSpace(rawValue)
	if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
		var unquoted string
		if json.Unmarshal([]byte(value), &unquoted) == nil {
			value = unquoted
		}
	}
	return &outbox.PayloadCondition{Path: path, Value: value}, nil
}

// maxPathDepth bounds a payload path; no real payload nests deeper.
const maxPathDepth = 32

func parsePath(p string) ([]string, error) {
	if p == "" {
		return nil, outbox.Errorf(outbox.EINVALID, "payload condition has no path before \"=\": write PATH = VALUE, for example conversationId = abc")
	}
	var parts []string
	if strings.HasPrefix(p, "/") {
		r := strings.NewReplacer("~1", "/", "~0", "~")
		for _, seg := range strings.Split(p[1:], "/") {
			parts = append(parts, r.Replace(seg))
		}
	} else {
		p = strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
		for _, seg := range strings.Split(p, ".") {
			// items[0][1] is items, 0, 1.
			for seg != "" {
				open := strings.IndexByte(seg, '[')
				if open < 0 {
					parts = append(parts, seg)
					break
				}
				if open > 0 {
					parts = append(parts, seg[:open])
				}
				end := strings.IndexByte(seg[open:], ']')
				if end < 0 {
					return nil, outbox.Errorf(outbox.EINVALID, "payload path %q has a [ without its ]", p)
				}
				idx := seg[open+1 : open+end]
				if _, err := strconv.Atoi(idx); err != nil {
					return nil, outbox.Errorf(outbox.EINVALID, "payload path %q: [%s] is not an array index", p, idx)
				}
				parts = append(parts, idx)
				seg = seg[open+end+1:]
			}
		}
	}
	if len(parts) > maxPathDepth {
		return nil, outbox.Errorf(outbox.EINVALID, "payload path %q is deeper than %d levels", p, maxPathDepth)
	}
	for _, part := range parts {
		if part == "" && !strings.HasPrefix(p, "/") {
			return nil, outbox.Errorf(outbox.EINVALID, "payload path %q has an empty key", p)
		}
	}
	return parts, nil
}
