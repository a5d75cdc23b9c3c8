package handler

// MaxJSONDepth is the deepest nesting of arrays and objects intake accepts.
// Webhook payloads nest a handful of levels; a body of ten thousand "["
// is an attack on whatever parses it next (the idempotency key lookup here,
// Postgres's jsonb in the dead_letters view, the target).
const MaxJSONDepth = 64

// jsonTooDeep reports whether body, which must be valid JSON, nests arrays
// and objects more than limit levels deep. It scans the bytes once without
// parsing, so its cost does not depend on the depth.
func jsonTooDeep(body []byte, limit int) bool {
	depth := 0
	inString, escaped := false, false
	for _, c := range body {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > limit {
				return true
			}
		case ']', '}':
			depth--
		}
	}
	return false
}
