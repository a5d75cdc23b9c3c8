package config

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decode parses data, expands ${VAR} references, rejects unknown keys, and
// decodes into a Config.
//
// References are expanded after parsing, never in the YAML text, so that a
// secret holding ": " or "#" cannot change the document's shape. Before
// parsing, each reference is swapped for a placeholder that is a plain YAML
// word: that way `value: ${TOKEN}` also works inside a flow mapping such as
// `{name: X-Webhook-Token, value: ${TOKEN}}`, where "{" and "}" would
// otherwise end the scalar. References in comments are never looked up.
func decode(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	text, refs := hideRefs(string(data))
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	cfg := &Config{}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, errors.New("the config is empty: it needs at least database_url and routes")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the config must be a mapping of keys such as listen, database_url and routes", root.Line)
	}
	var errs []error
	expandEnv(root, refs, lookupEnv, &errs)
	checkKeys(root, reflect.TypeOf(cfg).Elem(), "", &errs)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := root.Decode(cfg); err != nil {
		return nil, cleanYAMLError(err)
	}
	return cfg, nil
}

var envRef = regexp.MustCompile(`\$\$|\$\{([^}\n]*)\}`)

// placeholders is a prefix no config would hold; a per-parse nonce makes a
// collision impossible in practice.
const placeholderPrefix = "OUTBOXREF"

type refs struct {
	pattern *regexp.Regexp
	orig    []string // placeholder index -> "$$" or "${NAME}"
}

// hideRefs replaces every "$$" and "${...}" in text with a placeholder word.
func hideRefs(text string) (string, *refs) {
	nonce := fmt.Sprintf("%08x", rand.Uint32())
	r := &refs{pattern: regexp.MustCompile(placeholderPrefix + nonce + `N(\d+)Z`)}
	text = envRef.ReplaceAllStringFunc(text, func(ref string) string {
		r.orig = append(r.orig, ref)
		return fmt.Sprintf("%s%sN%dZ", placeholderPrefix, nonce, len(r.orig)-1)
	})
	return text, r
}

// expandEnv replaces placeholders in every scalar with the referenced
// variable's value. "$$" stands for a literal "$". A variable that is not
// set is an error naming it.
func expandEnv(n *yaml.Node, r *refs, lookupEnv func(string) (string, bool), errs *[]error) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, placeholderPrefix) {
		n.Value = r.pattern.ReplaceAllStringFunc(n.Value, func(ph string) string {
			i, _ := strconv.Atoi(r.pattern.FindStringSubmatch(ph)[1])
			ref := r.orig[i]
			if ref == "$$" {
				return "$"
			}
			name := ref[2 : len(ref)-1]
			if !validEnvName(name) {
				*errs = append(*errs, fmt.Errorf("line %d: %q is not a valid environment variable reference: write ${NAME} with letters, digits and underscores", n.Line, ref))
				return ref
			}
			v, ok := lookupEnv(name)
			if !ok {
				*errs = append(*errs, fmt.Errorf("line %d: environment variable %s is not set (referenced as %s)", n.Line, name, ref))
				return ref
			}
			return v
		})
		// A plain scalar is typed by its expanded value, so that
		// max_attempts: ${ATTEMPTS} is a number; but an expanded value that
		// reads as null stays the text it is.
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			switch n.Value {
			case "", "~", "null", "Null", "NULL":
				n.Tag = "!!str"
			default:
				n.Tag = ""
			}
		}
	}
	for _, c := range n.Content {
		expandEnv(c, r, lookupEnv, errs)
	}
}

var (
	durationType  = reflect.TypeOf(Duration{})
	retentionType = reflect.TypeOf(Retention{})
)

// checkKeys walks the document alongside the Go type it decodes into and
// reports every mapping key the type does not have, with its line and path.
func checkKeys(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType || t == retentionType:
		return
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f.Type
			names = append(names, tag)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Errorf("line %d: unknown key %q%s (known keys: %s)", k.Line, k.Value, inPath(path), strings.Join(names, ", ")))
				continue
			}
			checkKeys(v, ft, joinPath(path, k.Value), errs)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func inPath(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// cleanYAMLError rewrites yaml.v3's type errors into one line per problem.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("invalid config: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		e = strings.Replace(e, "cannot unmarshal !!str", "cannot use the text", 1)
		e = strings.Replace(e, "cannot unmarshal !!seq", "cannot use a list", 1)
		e = strings.Replace(e, "cannot unmarshal !!map", "cannot use a mapping", 1)
		e = strings.Replace(e, "cannot unmarshal !!int", "cannot use the number", 1)
		e = strings.Replace(e, "cannot unmarshal !!bool", "cannot use the boolean", 1)
		for _, goType := range []struct{ from, to string }{
			{"into int64", "as a whole number"}, {"into int", "as a whole number"}, {"into float64", "as a number"},
			{"into bool", "as true or false"}, {"into string", "as text"},
			{"into []config.KeySource", "as a list of key sources"}, {"into []config.Route", "as a list of routes"},
			{"into []string", "as a list of text values"}, {"into map[string]string", "as a mapping of names to values"},
		} {
			if strings.HasSuffix(e, goType.from) {
				e = strings.TrimSuffix(e, goType.from) + goType.to
			}
		}
		errs = append(errs, errors.New(e))
	}
	slices.SortStableFunc(errs, func(a, b error) int {
		return strings.Compare(lineOf(a.Error()), lineOf(b.Error()))
	})
	return errors.Join(errs...)
}

func lineOf(s string) string {
	if m := yamlLine.FindStringSubmatch(s); m != nil {
		return fmt.Sprintf("%08s", m[1])
	}
	return s
}

// typeError lets yaml.v3 go on decoding and report every bad value at once.
func typeError(err error) error { return &yaml.TypeError{Errors: []string{err.Error()}} }

// Duration is a time.Duration written the Go way in YAML: 500ms, 10s, 5m,
// 72h.
type Duration struct {
	d   time.Duration
	set bool
}

// D returns the duration.
func (d Duration) D() time.Duration { return d.d }

// NewDuration returns a Duration holding d.
func NewDuration(d time.Duration) Duration { return Duration{d: d, set: true} }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n)
	if err != nil {
		return typeError(err)
	}
	*d = Duration{d: v, set: true}
	return nil
}

// MarshalYAML writes the duration back as text.
func (d Duration) MarshalYAML() (any, error) { return d.d.String(), nil }

func parseDuration(n *yaml.Node) (time.Duration, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, fmt.Errorf("line %d: expected a duration such as 10s, 5m or 72h", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		hint := ""
		if strings.HasSuffix(n.Value, "d") {
			hint = ": days are not a unit, write hours (7 days is 168h)"
		} else if _, numErr := fmt.Sscanf(n.Value, "%d", new(int)); numErr == nil {
			hint = ": add a unit (s, m or h)"
		}
		return 0, fmt.Errorf("line %d: %q is not a duration such as 10s, 5m or 72h%s", n.Line, n.Value, hint)
	}
	if v < 0 {
		return 0, fmt.Errorf("line %d: %q is negative", n.Line, n.Value)
	}
	return v, nil
}

// Retention is a duration, or "forever".
type Retention struct {
	d       time.Duration
	forever bool
	set     bool
}

// Forever reports whether the retention never expires.
func (r Retention) Forever() bool { return r.forever }

// D returns the retention period; it is meaningless when Forever is true.
func (r Retention) D() time.Duration { return r.d }

// String returns the retention as written in the config.
func (r Retention) String() string {
	if r.forever {
		return "forever"
	}
	return r.d.String()
}

// UnmarshalYAML parses "forever" or a Go duration string.
func (r *Retention) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "forever" {
		*r = Retention{forever: true, set: true}
		return nil
	}
	v, err := parseDuration(n)
	if err != nil {
		return typeError(fmt.Errorf("%w, or forever", err))
	}
	*r = Retention{d: v, set: true}
	return nil
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// shortDuration writes 720h rather than 720h0m0s.
func shortDuration(d time.Duration) string {
	switch {
	case d != 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d != 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d != 0 && d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}
