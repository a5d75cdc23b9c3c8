package config

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the configuration reference in ../docs/configuration.md")

// docs/configuration.md's reference sits between these markers. It is
// generated from the Config struct: its yaml tags give the keys, its doc
// comments the meanings, and Parse's defaults the defaults, so it cannot
// drift from the code.
const (
	referenceBegin = "<!-- BEGIN CONFIG REFERENCE: generated from config/config.go by `go test ./config -run TestConfigReference -update`; edit the doc comments there -->"
	referenceEnd   = "<!-- END CONFIG REFERENCE -->"
)

func TestConfigReference(t *testing.T) {
	want := "\n" + configReference(t) + "\n"
	path := filepath.Join("..", "docs", "configuration.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	before, rest, ok1 := strings.Cut(doc, referenceBegin)
	got, after, ok2 := strings.Cut(rest, referenceEnd)
	require.True(t, ok1, "docs/configuration.md has no configuration reference: no %q", referenceBegin)
	require.True(t, ok2, "docs/configuration.md has no configuration reference: no %q after %q", referenceEnd, referenceBegin)
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+referenceBegin+want+referenceEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	gotLines, wantLines := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(gotLines), len(wantLines)) {
		g, w := line(gotLines, i), line(wantLines, i)
		if g != w {
			t.Fatalf("docs/configuration.md's reference is out of date: run go test ./config -run TestConfigReference -update\nfirst difference:\ndocs: %s\ncode: %s", g, w)
		}
	}
}

func line(lines []string, i int) string {
	if i < len(lines) {
		return lines[i]
	}
	return "(nothing)"
}

// configReference renders every config key as a Markdown table row.
func configReference(t *testing.T) string {
	docs := fieldDocs(t)
	defaults := defaultValues(t)
	var b strings.Builder
	b.WriteString("| key | type | default | what it is for |\n|---|---|---|---|\n")
	walkKeys(reflect.TypeFor[Config](), "", func(path string, owner reflect.Type, f reflect.StructField) {
		doc := docs[owner.Name()+"."+f.Name]
		if doc == "" {
			t.Errorf("%s.%s (%s) has no doc comment; docs/configuration.md's reference is made from it", owner.Name(), f.Name, path)
		}
		key := path[strings.LastIndexAny(path, ".]")+1:]
		// Go doc comments start with the field's Go name; an operator
		// knows the key.
		if rest, ok := strings.CutPrefix(doc, f.Name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, ",")) {
			doc = "`" + key + "`" + rest
		}
		def := defaults[path]
		if def == "" {
			def = "—"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", path, typeName(f.Type), def, strings.ReplaceAll(doc, "|", `\|`))
	})
	return b.String()
}

// walkKeys calls fn for every yaml key under t, depth first, with its path
// as an operator writes it: routes[].retry.max_attempts.
func walkKeys(t reflect.Type, prefix string, fn func(path string, owner reflect.Type, f reflect.StructField)) {
	for i := range t.NumField() {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		path := prefix + key
		fn(path, t, f)
		switch ft := f.Type; {
		case isLeaf(ft):
		case ft.Kind() == reflect.Struct:
			walkKeys(ft, path+".", fn)
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			walkKeys(ft.Elem(), path+".", fn)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			walkKeys(ft.Elem(), path+"[].", fn)
		}
	}
}

func isLeaf(t reflect.Type) bool { return t == durationType || t == retentionType }

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == retentionType:
		return "duration or `forever`"
	case t.Kind() == reflect.Pointer:
		return typeName(t.Elem())
	case t.Kind() == reflect.Struct:
		return "mapping"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "list of mappings"
	case t.Kind() == reflect.Slice:
		return "list of " + typeName(t.Elem()) + "s"
	case t.Kind() == reflect.Map:
		return "map of " + typeName(t.Elem()) + "s"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Int64:
		return "integer"
	}
	return t.Kind().String()
}

// fieldDocs reads the doc comment of every struct field in the package's
// sources, keyed "Type.Field".
func fieldDocs(t *testing.T) map[string]string {
	docs := map[string]string{}
	matches, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := gotoken.NewFileSet()
	for _, name := range matches {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			spec, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := spec.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, field := range st.Fields.List {
				for _, id := range field.Names {
					docs[spec.Name.Name+"."+id.Name] = strings.Join(strings.Fields(field.Doc.Text()), " ")
				}
			}
			return false
		})
	}
	return docs
}

// defaultValues parses a config that sets only what is required, and
// reports every key Parse filled in, by path.
func defaultValues(t *testing.T) map[string]string {
	const minimal = `
database_url: postgres://u@h/db
disable_admin: true
routes:
  - name: a
    auth: {hmac: {header: X-Sig, secret: s}}
    idempotency_key: [{json: /id}]
    target: {url: "http://t/"}
  - name: b
    auth: {standard_webhooks: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}}
    idempotency_key: [{json: /id}]
    target: {url: "http://t/"}
    ordering: {key: [{json: /conversationId}]}
`
	given := map[string]bool{
		"database_url": true, "disable_admin": true, "routes[].name": true, "routes[].auth.hmac.header": true,
		"routes[].auth.hmac.secret": true, "routes[].auth.standard_webhooks.secret": true,
		"routes[].idempotency_key[].json": true, "routes[].target.url": true, "routes[].ordering.key[].json": true,
	}
	cfg, err := Parse([]byte(minimal), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	var visit func(v reflect.Value, prefix string)
	visit = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" || key == "-" {
				continue
			}
			path, fv := prefix+key, v.Field(i)
			if s := formatDefault(fv); s != "" && (!given[path] || fv.Kind() == reflect.Bool) && defaults[path] == "" {
				defaults[path] = s
			}
			switch {
			case isLeaf(fv.Type()):
			case fv.Kind() == reflect.Struct:
				visit(fv, path+".")
			case fv.Kind() == reflect.Pointer && !fv.IsNil() && fv.Elem().Kind() == reflect.Struct:
				visit(fv.Elem(), path+".")
			case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
				for j := range fv.Len() {
					visit(fv.Index(j), path+"[].")
				}
			}
		}
	}
	visit(reflect.ValueOf(cfg).Elem(), "")
	return defaults
}

func formatDefault(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		if d := v.Interface().(Duration); d.set {
			return "`" + shortDuration(d.d) + "`"
		}
	case v.Type() == retentionType:
		switch r := v.Interface().(Retention); {
		case r.forever:
			return "`forever`"
		case r.set:
			return "`" + shortDuration(r.d) + "`"
		}
	case v.Kind() == reflect.Bool:
		return "`false`" // every plain switch is off unless set
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Bool && !v.IsNil():
		return fmt.Sprintf("`%t`", v.Elem().Bool()) // a switch whose default is on
	case v.Kind() == reflect.String && v.String() != "":
		return "`" + v.String() + "`"
	case (v.Kind() == reflect.Int || v.Kind() == reflect.Int64) && v.Int() != 0:
		return fmt.Sprintf("`%d`", v.Int())
	}
	return ""
}
