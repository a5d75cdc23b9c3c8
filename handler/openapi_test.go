package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/webhook-outbox/webhook-outbox/internal/testdb"
)

// openAPIDoc is docs/openapi.yaml, read generically, with just enough of a
// JSON Schema validator for the subset it uses: type, nullable,
// properties, required, additionalProperties, items, enum, date-time and
// $ref.
type openAPIDoc struct {
	root map[string]any
}

func loadOpenAPI(t *testing.T) *openAPIDoc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatalf("docs/openapi.yaml is not YAML: %v", err)
	}
	return &openAPIDoc{root: root}
}

// resolve follows $ref to the node it names.
func (o *openAPIDoc) resolve(t *testing.T, node map[string]any) map[string]any {
	t.Helper()
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		var cur any = o.root
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			m, _ := cur.(map[string]any)
			cur = m[part]
		}
		next, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("docs/openapi.yaml: $ref %s leads nowhere", ref)
		}
		node = next
	}
}

// operation is one documented method on one path.
type operation struct {
	method, path string
	spec         map[string]any
	pattern      *regexp.Regexp
}

func (o *openAPIDoc) operations(t *testing.T) []operation {
	t.Helper()
	paths, _ := o.root["paths"].(map[string]any)
	var ops []operation
	for path, item := range paths {
		for method, spec := range item.(map[string]any) {
			if method == "parameters" || method == "summary" || method == "description" {
				continue
			}
			// A path parameter is one escaped segment: ROUTE/KEY travels
			// URL-encoded.
			re := regexp.MustCompile("^" + regexp.MustCompile(`\\\{[a-z_]+\\\}`).ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
			ops = append(ops, operation{method: strings.ToUpper(method), path: path, spec: spec.(map[string]any), pattern: re})
		}
	}
	slices.SortFunc(ops, func(a, b operation) int { return strings.Compare(a.method+a.path, b.method+b.path) })
	return ops
}

func (o *openAPIDoc) find(t *testing.T, method, escapedPath string) *operation {
	t.Helper()
	for _, op := range o.operations(t) {
		if op.method == method && op.pattern.MatchString(escapedPath) {
			return &op
		}
	}
	return nil
}

// response returns the documented response for status, or nil.
func (o *openAPIDoc) response(t *testing.T, op *operation, status int) map[string]any {
	t.Helper()
	responses, _ := op.spec["responses"].(map[string]any)
	r, ok := responses[strconv.Itoa(status)].(map[string]any)
	if !ok {
		return nil
	}
	return o.resolve(t, r)
}

// jsonSchema returns the application/json schema of a response or request
// body.
func (o *openAPIDoc) jsonSchema(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	content, _ := body["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	schema, _ := media["schema"].(map[string]any)
	return schema
}

// validate returns how v departs from schema.
func (o *openAPIDoc) validate(t *testing.T, v any, schema map[string]any, at string) []string {
	t.Helper()
	if schema == nil {
		return []string{at + ": no schema documented"}
	}
	schema = o.resolve(t, schema)
	typ, _ := schema["type"].(string)
	if v == nil {
		if typ == "" || schema["nullable"] == true {
			return nil
		}
		return []string{at + ": null, which the schema does not allow"}
	}
	wrong := func() []string { return []string{fmt.Sprintf("%s: %v is not of type %s", at, v, typ)} }
	var errs []string
	switch typ {
	case "":
		// Any JSON value.
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return wrong()
		}
		props, _ := schema["properties"].(map[string]any)
		required, _ := schema["required"].([]any)
		for _, r := range required {
			if _, ok := obj[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required %q is missing", at, r))
			}
		}
		for k, val := range obj {
			if p, ok := props[k].(map[string]any); ok {
				errs = append(errs, o.validate(t, val, p, at+"."+k)...)
				continue
			}
			switch extra := schema["additionalProperties"].(type) {
			case bool:
				if !extra {
					errs = append(errs, fmt.Sprintf("%s: %q is not documented", at, k))
				}
			case map[string]any:
				errs = append(errs, o.validate(t, val, extra, at+"."+k)...)
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return wrong()
		}
		items, _ := schema["items"].(map[string]any)
		for i, val := range arr {
			errs = append(errs, o.validate(t, val, items, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		s, ok := v.(string)
		if !ok {
			return wrong()
		}
		if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, any(s)) {
			errs = append(errs, fmt.Sprintf("%s: %q is not one of %v", at, s, enum))
		}
		if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %q is not a date-time", at, s))
			}
		}
	case "integer":
		n, ok := v.(json.Number)
		if _, err := n.Int64(); !ok || err != nil {
			return wrong()
		}
	case "number":
		n, ok := v.(json.Number)
		if _, err := n.Float64(); !ok || err != nil {
			return wrong()
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return wrong()
		}
	default:
		errs = append(errs, fmt.Sprintf("%s: the test does not know type %q", at, typ))
	}
	return errs
}

func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// TestOpenAPIAnswers sends every documented operation to the real router
// over a seeded database, with the admin token and without, and checks each
// answer against docs/openapi.yaml: its status is documented for the
// operation, its body matches the documented schema (the error shape
// included), and its documented headers are there. Every documented
// operation must be called here and succeed at least once, so a new
// endpoint needs a line below.
func TestOpenAPIAnswers(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	b := setupAdmin(t)
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "genesys", KeyPrefix: "g-", N: 3, Error: "target answered 503 Service Unavailable after 3ms: down"})
	testdb.SeedDeadLetters(t, b.pool, testdb.DeadLetters{Route: "open", KeyPrefix: "o-", N: 1, State: "cancelled", Error: "target answered 410 Gone after 1ms"})
	var jobID int64
	if err := b.pool.QueryRow(context.Background(), `SELECT min(job_id) FROM dead_letters WHERE route = 'genesys'`).Scan(&jobID); err != nil {
		t.Fatal(err)
	}
	id := strconv.FormatInt(jobID, 10)

	calls := []struct {
		method, path string
		body         any
		want         int
	}{
		{"GET", "/admin/v1/dead-letters", nil, 200},
		{"GET", "/admin/v1/dead-letters?route=genesys&since=1h&error=503&limit=2", nil, 200},
		{"GET", "/admin/v1/dead-letters?limit=0", nil, 400},
		{"GET", "/admin/v1/dead-letters?cursor=not-a-cursor", nil, 400},
		{"GET", "/admin/v1/dead-letters/" + id, nil, 200},
		{"GET", "/admin/v1/dead-letters/open%2Fo-1", nil, 200},
		{"GET", "/admin/v1/dead-letters/999999", nil, 404},
		{"POST", "/admin/v1/dead-letters/retry", map[string]any{"route": "genesys", "since": "1h", "dry_run": true}, 200},
		{"POST", "/admin/v1/dead-letters/retry", map[string]any{"job_ids": []int64{jobID}}, 200},
		{"POST", "/admin/v1/dead-letters/retry", map[string]any{}, 400},
		{"POST", "/admin/v1/dead-letters/retry", map[string]any{"route": "nope"}, 404},
		{"POST", "/admin/v1/events/replay", map[string]any{"route": "genesys", "since": "1h", "dry_run": true}, 200},
		{"POST", "/admin/v1/events/replay", map[string]any{"route": "genesys", "since": "1h"}, 200},
		{"POST", "/admin/v1/events/replay", map[string]any{"route": "genesys"}, 400},
		{"POST", "/admin/v1/events/replay", map[string]any{"route": "nope", "since": "1h"}, 404},
		{"GET", "/admin/v1/events/genesys/g-1", nil, 200},
		{"GET", "/admin/v1/events/open/o-1", nil, 200},
		{"GET", "/admin/v1/events/genesys/never-received", nil, 404},
		{"GET", "/admin/v1/routes", nil, 200},
		{"GET", "/admin/v1/stats", nil, 200},
		{"GET", "/admin/v1/stats?exact=true", nil, 200},
		{"POST", "/admin/v1/routes/genesys/pause", nil, 200},
		{"GET", "/admin/v1/routes", nil, 200},
		{"POST", "/admin/v1/routes/genesys/resume", nil, 200},
		{"POST", "/admin/v1/routes/nope/pause", nil, 404},
		{"POST", "/admin/v1/routes/nope/resume", nil, 404},
	}
	succeeded := map[string]bool{}
	check := func(a auth, method, path string, body any, want int) {
		t.Helper()
		escaped, _, _ := strings.Cut(path, "?")
		op := doc.find(t, method, escaped)
		if op == nil {
			t.Errorf("%s %s is not in docs/openapi.yaml", method, path)
			return
		}
		if body != nil && want < 300 {
			// A request that should succeed is one the document describes.
			reqBody, _ := op.spec["requestBody"].(map[string]any)
			raw, _ := json.Marshal(body)
			v, _ := decodeJSON(raw)
			for _, e := range doc.validate(t, v, doc.jsonSchema(t, doc.resolve(t, reqBody)), "request") {
				t.Errorf("%s %s: the request departs from the documented body: %s", method, path, e)
			}
		}
		status, header, raw := b.do(t, a, method, path, body)
		if status != want {
			t.Errorf("%s %s: %d %s, want %d", method, path, status, raw, want)
		}
		resp := doc.response(t, op, status)
		if resp == nil {
			t.Errorf("%s %s answered %d, which docs/openapi.yaml does not document for %s %s", method, path, status, op.method, op.path)
			return
		}
		if ct := header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
		v, err := decodeJSON(raw)
		if err != nil {
			t.Errorf("%s %s: the answer is not JSON: %v: %s", method, path, err, raw)
			return
		}
		for _, e := range doc.validate(t, v, doc.jsonSchema(t, resp), "answer") {
			t.Errorf("%s %s → %d: %s\n%s", method, path, status, e, raw)
		}
		headers, _ := resp["headers"].(map[string]any)
		for name := range headers {
			if header.Get(name) == "" {
				t.Errorf("%s %s → %d: no %s header, which docs/openapi.yaml promises", method, path, status, name)
			}
		}
		if status < 300 {
			succeeded[op.method+" "+op.path] = true
		}
	}
	for _, c := range calls {
		check(bearer, c.method, c.path, c.body, c.want)
	}
	for _, op := range doc.operations(t) {
		if !succeeded[op.method+" "+op.path] {
			t.Errorf("%s %s is documented, but no call in this test succeeds on it: add one", op.method, op.path)
		}
		// Without the token: the documented 401, with the documented
		// error shape, on the path the document's own examples make.
		path := op.path
		params, _ := op.spec["parameters"].([]any)
		for _, p := range params {
			p := doc.resolve(t, p.(map[string]any))
			if p["in"] == "path" {
				path = strings.ReplaceAll(path, "{"+p["name"].(string)+"}", fmt.Sprint(p["example"]))
			}
		}
		check(noAuth, op.method, path, nil, http.StatusUnauthorized)
	}
}

// TestOpenAPIErrorShape: every documented error answer of every operation
// is the one Error schema, {"error": "..."} and nothing else, which
// TestOpenAPIAnswers then holds the real answers to.
func TestOpenAPIErrorShape(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	errSchema := doc.resolve(t, map[string]any{"$ref": "#/components/schemas/Error"})
	if errSchema["type"] != "object" || errSchema["additionalProperties"] != false ||
		fmt.Sprint(errSchema["required"]) != "[error]" {
		t.Errorf("the Error schema is not {\"error\": string} alone: %v", errSchema)
	}
	props, _ := errSchema["properties"].(map[string]any)
	if p, _ := props["error"].(map[string]any); len(props) != 1 || p["type"] != "string" {
		t.Errorf("the Error schema's properties: %v", props)
	}
	for _, op := range doc.operations(t) {
		responses, _ := op.spec["responses"].(map[string]any)
		if responses["401"] == nil {
			t.Errorf("%s %s does not document 401", op.method, op.path)
		}
		for code, r := range responses {
			n, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s %s: response %q is not a status code", op.method, op.path, code)
				continue
			}
			if n < 400 {
				continue
			}
			schema := doc.jsonSchema(t, doc.resolve(t, r.(map[string]any)))
			if ref, _ := schema["$ref"].(string); ref != "#/components/schemas/Error" {
				t.Errorf("%s %s: %d answers %v, not the Error schema", op.method, op.path, n, schema)
			}
		}
	}
}

// TestAdminAPIPageListsEveryOperation: docs/admin-api.md's table of
// endpoints is exactly the operations of docs/openapi.yaml.
func TestAdminAPIPageListsEveryOperation(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	data, err := os.ReadFile(filepath.Join("..", "docs", "admin-api.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(GET|POST|PUT|PATCH|DELETE) (/admin/v1/[^`?]*)").FindAllStringSubmatch(string(data), -1) {
		listed[m[1]+" "+m[2]] = true
	}
	for _, op := range doc.operations(t) {
		key := op.method + " " + op.path
		if !listed[key] {
			t.Errorf("docs/admin-api.md's table does not list %s", key)
		}
		delete(listed, key)
	}
	for key := range listed {
		t.Errorf("docs/admin-api.md lists %s, which docs/openapi.yaml does not document", key)
	}
}
