package handler

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"go.yaml.in/yaml/v3"
)

// TestOpenAPIRoutesMatchRouter walks the /admin/v1 router NewRouter serves
// and checks it against docs/openapi.yaml both ways: every route, with each
// of its methods, is documented, and every documented operation is a route.
// What the operations answer is checked in openapi_test.go.
func TestOpenAPIRoutesMatchRouter(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml is not YAML: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("docs/openapi.yaml is OpenAPI %q, want 3.x", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				documented[strings.ToUpper(method)+" "+path] = true
			case "summary", "description", "servers", "parameters":
			default:
				t.Errorf("docs/openapi.yaml: %s has %q, which is not an OpenAPI method (they are lower case)", path, method)
			}
		}
	}

	served := map[string]bool{}
	// mux templates carry their patterns ({id:.+}); OpenAPI names only
	// the parameter.
	pattern := regexp.MustCompile(`\{([a-z_]+):[^}]*\}`)
	err = adminRouter(&adminAPI{}).Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := route.GetMethods()
		if err != nil {
			return nil // the /admin/v1 prefix itself, which only groups routes
		}
		for _, m := range methods {
			served[m+" "+pattern.ReplaceAllString(tpl, "{$1}")] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(served) < 5 {
		t.Fatalf("walked only %v: the test no longer sees the admin routes", served)
	}
	for _, op := range sortedKeys(served) {
		if !documented[op] {
			t.Errorf("%s is served but not in docs/openapi.yaml", op)
		}
	}
	for _, op := range sortedKeys(documented) {
		if !served[op] {
			t.Errorf("docs/openapi.yaml documents %s, which the server does not have", op)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
