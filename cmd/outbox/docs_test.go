package main

import (
	"encoding/json"
	"fmt"
	"go/parser"
	gotoken "go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The docs are checked like code: every page's links, anchors, file paths,
// commands and test names resolve, and the pages that describe something
// the code defines (metrics, alerts, the fault suite, the import rules, the
// quick start) agree with it.

// docPages are the Markdown pages the checks read, relative to the root.
func docPages(t *testing.T) []string {
	t.Helper()
	pages := []string{"README.md", "bench/README.md"}
	more, err := filepath.Glob(repoFile("docs/*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range more {
		pages = append(pages, "docs/"+filepath.Base(p))
	}
	if len(pages) < 5 {
		t.Fatalf("found only %v", pages)
	}
	return pages
}

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(repoFile(name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// fence is one fenced code block.
type fence struct {
	lang, text string
}

var fenceRE = regexp.MustCompile("(?ms)^[ \t]*```([a-z]*)\n(.*?)^[ \t]*```[ \t]*$")

// splitMarkdown returns md's fenced code blocks, and its prose with those
// blocks removed.
func splitMarkdown(md string) (prose string, fences []fence) {
	for _, m := range fenceRE.FindAllStringSubmatch(md, -1) {
		fences = append(fences, fence{lang: m[1], text: m[2]})
	}
	return fenceRE.ReplaceAllString(md, ""), fences
}

var inlineCodeRE = regexp.MustCompile("`([^`\n]+)`")

// inlineCode returns the inline code spans of prose.
func inlineCode(prose string) []string {
	var spans []string
	for _, m := range inlineCodeRE.FindAllStringSubmatch(prose, -1) {
		spans = append(spans, m[1])
	}
	return spans
}

// docSection returns the part of page under heading, up to the next
// heading of the same or a higher level.
func docSection(t *testing.T, page, heading string) string {
	t.Helper()
	text := readRepoFile(t, page)
	_, rest, ok := strings.Cut(text, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q section", page, heading)
	}
	level := strings.Index(heading, " ")
	for _, line := range strings.SplitAfter(rest, "\n") {
		if n := strings.IndexFunc(line, func(r rune) bool { return r != '#' }); n > 0 && n <= level && strings.HasPrefix(line[n:], " ") {
			section, _, _ := strings.Cut(rest, line)
			return section
		}
	}
	return rest
}

// githubSlug is the anchor GitHub gives a heading.
func githubSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// anchors returns the anchors of md's headings, numbered as GitHub numbers
// repeated ones.
func anchors(md string) map[string]bool {
	prose, _ := splitMarkdown(md)
	out := map[string]bool{}
	seen := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} (.+)$`).FindAllStringSubmatch(prose, -1) {
		slug := githubSlug(m[1])
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

// TestMetricsAreDocumented checks the metrics table of docs/operations.md
// against the registry of the real serve wiring, both ways, and that its
// Prometheus scrape config is one Prometheus can read.
func TestMetricsAreDocumented(t *testing.T) {
	t.Parallel()
	known := servedMetricNames(t)
	section := docSection(t, "docs/operations.md", "## Metrics")

	documented := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `(outbox_[a-z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
	}
	for name := range known {
		if strings.HasPrefix(name, "outbox_") {
			assert.True(t, documented[name], "the metrics table of docs/operations.md does not explain %s", name)
		}
	}
	for _, name := range outboxNames(section, known) {
		if !known[name] {
			t.Errorf("the metrics section of docs/operations.md mentions %s, which outbox does not serve", name)
		}
	}
	sc := scrapeConfig(t)
	assert.NotEmpty(t, sc.JobName, "the scrape config has no job name: %+v", sc)
	assert.Contains(t, []string{"", "/metrics"}, sc.MetricsPath, "the scrape config does not scrape /metrics: %+v", sc)
	if assert.NotEmpty(t, sc.StaticConfigs, "the scrape config has no target: %+v", sc) {
		assert.NotEmpty(t, sc.StaticConfigs[0].Targets, "the scrape config has no target: %+v", sc)
	}
}

type promScrapeConfig struct {
	JobName       string `yaml:"job_name"`
	MetricsPath   string `yaml:"metrics_path"`
	StaticConfigs []struct {
		Targets []string `yaml:"targets"`
	} `yaml:"static_configs"`
}

// scrapeConfig returns the scrape config docs/operations.md shows.
func scrapeConfig(t *testing.T) promScrapeConfig {
	t.Helper()
	_, fences := splitMarkdown(docSection(t, "docs/operations.md", "## Metrics"))
	for _, f := range fences {
		if f.lang != "yaml" {
			continue
		}
		var prom struct {
			ScrapeConfigs []promScrapeConfig `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal([]byte(f.text), &prom); err != nil {
			t.Fatalf("the scrape config is not YAML: %v", err)
		}
		if len(prom.ScrapeConfigs) != 1 {
			t.Fatalf("docs/operations.md shows %d scrape configs, want one", len(prom.ScrapeConfigs))
		}
		return prom.ScrapeConfigs[0]
	}
	t.Fatal("the metrics section of docs/operations.md has no Prometheus scrape config")
	return promScrapeConfig{}
}

// TestAlertRules checks deploy/prometheus/alerts.yml against the code and
// the runbook: every metric a rule reads is served (promtool checks the
// syntax, not the names), `up` selects the scrape job the docs configure,
// every rule has a severity, a summary and a description, and its
// runbook_url leads to a section of docs/operations.md that names the
// alert. The alerts table of docs/operations.md lists exactly these rules.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	known := servedMetricNames(t)
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal([]byte(readRepoFile(t, "deploy/prometheus/alerts.yml")), &file); err != nil {
		t.Fatalf("alerts.yml is not YAML: %v", err)
	}
	module, _, _ := strings.Cut(strings.TrimPrefix(readRepoFile(t, "go.mod"), "module "), "\n")
	runbook := "https://" + module + "/blob/main/docs/operations.md#"
	operations := readRepoFile(t, "docs/operations.md")
	sections := anchors(operations)
	headings := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^## (.+)$`).FindAllStringSubmatch(operations, -1) {
		headings[githubSlug(m[1])] = "## " + m[1]
	}
	job := scrapeConfig(t).JobName

	var alerts []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s has a rule that is not an alert", g.Name)
				continue
			}
			alerts = append(alerts, r.Alert)
			for _, n := range outboxNames(r.Expr+" "+r.Annotations["description"], known) {
				if !known[n] {
					t.Errorf("%s reads %s, which outbox does not serve", r.Alert, n)
				}
			}
			for _, m := range regexp.MustCompile(`\bup(\{[^}]*\})?`).FindAllStringSubmatch(r.Expr, -1) {
				if m[1] != `{job="`+job+`"}` {
					t.Errorf("%s reads up%s; select the scrape job of docs/operations.md: up{job=%q}", r.Alert, m[1], job)
				}
			}
			assert.Contains(t, []string{"critical", "warning"}, r.Labels["severity"], "%s: severity", r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], "%s needs a summary", r.Alert)
			assert.NotEmpty(t, r.Annotations["description"], "%s needs a description", r.Alert)
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbook)
			if !ok {
				t.Errorf("%s: runbook_url %q does not start with %s", r.Alert, r.Annotations["runbook_url"], runbook)
				continue
			}
			if !sections[anchor] || headings[anchor] == "" {
				t.Errorf("%s: docs/operations.md has no section #%s", r.Alert, anchor)
				continue
			}
			if !strings.Contains(docSection(t, "docs/operations.md", headings[anchor]), "`"+r.Alert+"`") {
				t.Errorf("%s: its runbook section %q does not name it", r.Alert, headings[anchor])
			}
		}
	}
	if len(alerts) < 6 {
		t.Fatalf("alerts.yml has %d alerts: %v", len(alerts), alerts)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(Outbox[A-Za-z]+)` \\|").FindAllStringSubmatch(docSection(t, "docs/operations.md", "## Alerts"), -1) {
		listed[m[1]] = true
	}
	for _, a := range alerts {
		if !listed[a] {
			t.Errorf("the alerts table of docs/operations.md does not list %s", a)
		}
		delete(listed, a)
	}
	for a := range listed {
		t.Errorf("the alerts table of docs/operations.md lists %s, which alerts.yml does not have", a)
	}
}

// repoPath matches inline code that names a file or folder of the
// repository, such as `sql/examples/` or `deploy/prometheus/alerts.yml`.
var repoPath = regexp.MustCompile(`^(?:(?:\.ci|admin|bench|cmd|config|deploy|docs|faults|handler|internal|jobs|migrations|scripts|sql|store|testdata)/[A-Za-z0-9_.*/-]+|Makefile|Dockerfile|docker-compose\.yml|outbox\.example\.yaml|go\.mod)$`)

// testNames returns the name of every test function in the repository.
func testNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	decl := regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(`)
	err := filepath.WalkDir(repoFile("."), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != repoFile(".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, "_test.go") {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range decl.FindAllStringSubmatch(string(data), -1) {
				names[m[1]] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestDocsLinks checks that every relative link of every page resolves to
// a file, and its anchor to a heading; that every file path written as
// inline code exists; and that every test a page names exists.
func TestDocsLinks(t *testing.T) {
	t.Parallel()
	tests := testNames(t)
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, page := range docPages(t) {
		md := readRepoFile(t, page)
		prose, fences := splitMarkdown(md)
		for _, m := range link.FindAllStringSubmatch(inlineCodeRE.ReplaceAllString(prose, ""), -1) {
			target := m[1]
			if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := page
			if path != "" {
				file = filepath.ToSlash(filepath.Join(filepath.Dir(page), path))
			}
			if _, err := os.Stat(repoFile(file)); err != nil {
				t.Errorf("%s links to %s, which does not exist", page, target)
				continue
			}
			if anchor != "" && assert.True(t, strings.HasSuffix(file, ".md"), "%s links to %s, but %s is not a page with headings", page, target, file) {
				assert.True(t, anchors(readRepoFile(t, file))[anchor], "%s links to %s, but %s has no heading #%s", page, target, file, anchor)
			}
		}
		for _, span := range inlineCode(prose) {
			if !repoPath.MatchString(span) {
				continue
			}
			if matches, _ := filepath.Glob(repoFile(span)); len(matches) == 0 {
				t.Errorf("%s names `%s`, which does not exist", page, span)
			}
		}
		text := prose
		for _, f := range fences {
			text += "\n" + f.text
		}
		for _, name := range regexp.MustCompile(`\bTest[A-Z][A-Za-z0-9_]*`).FindAllString(text, -1) {
			if !tests[name] {
				t.Errorf("%s names %s, which is no test", page, name)
			}
		}
	}
}

// commandsIn returns the shell command lines of a page: lines of sh (or
// unlabelled) code blocks, without comments, and inline code spans.
func commandsIn(md string) []string {
	prose, fences := splitMarkdown(md)
	cmds := inlineCode(prose)
	for _, f := range fences {
		if f.lang != "sh" && f.lang != "" {
			continue
		}
		for _, line := range strings.Split(f.text, "\n") {
			line, _, _ = strings.Cut(line, " #")
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				cmds = append(cmds, l)
			}
		}
	}
	return cmds
}

// TestDocsCommands checks that every `make` target the pages use is in the
// Makefile, and that every `outbox` command they show exists, with its
// subcommand and flags, in the CLI's usage.
func TestDocsCommands(t *testing.T) {
	t.Parallel()
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Za-z0-9_-]+):(?:[^=]|$)`).FindAllStringSubmatch(readRepoFile(t, "Makefile"), -1) {
		targets[m[1]] = true
	}
	require.True(t, targets["run"], "cannot read the Makefile's targets: %v", targets)
	require.True(t, targets["test"], "cannot read the Makefile's targets: %v", targets)
	usageLines := func(cmd string) string {
		var lines []string
		for _, l := range strings.Split(usage, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "outbox "+cmd+" ") || strings.TrimSpace(l) == "outbox "+cmd {
				lines = append(lines, l)
			}
		}
		return strings.Join(lines, "\n")
	}
	withSubcommands := map[string]bool{"dlq": true, "migrate": true, "config": true, "routes": true}
	makeRE := regexp.MustCompile(`(?:^|[\s;&|(])make ([a-z][a-z0-9-]*)`)
	outboxRE := regexp.MustCompile(`(?:^|\s)(?:bin/)?outbox ([a-z][a-z-]*)((?: [^\s|]+)?)`)
	checked := 0
	for _, page := range docPages(t) {
		for _, cmd := range commandsIn(readRepoFile(t, page)) {
			for _, m := range makeRE.FindAllStringSubmatch(cmd, -1) {
				if !targets[m[1]] {
					t.Errorf("%s: `%s` runs make %s, which the Makefile does not have", page, cmd, m[1])
				}
			}
			for _, loc := range outboxRE.FindAllStringSubmatchIndex(cmd, -1) {
				sub, arg := cmd[loc[2]:loc[3]], strings.TrimSpace(cmd[loc[4]:loc[5]])
				if sub == "outbox" { // docker compose exec outbox outbox …
					continue
				}
				checked++
				lines := usageLines(sub)
				if lines == "" {
					t.Errorf("%s: `%s`: outbox has no command %q", page, cmd, sub)
					continue
				}
				if withSubcommands[sub] && regexp.MustCompile(`^[a-z]+$`).MatchString(arg) {
					words := strings.FieldsFunc(lines, func(r rune) bool { return r < 'a' || r > 'z' })
					assert.Contains(t, words, arg, "%s: `%s`: outbox %s has no subcommand %q", page, cmd, sub, arg)
				}
				for _, flag := range regexp.MustCompile(`--[a-z][a-z-]*`).FindAllString(cmd[loc[0]:], -1) {
					if flag != "--config" {
						assert.Contains(t, lines, flag, "%s: `%s`: outbox %s has no flag %s", page, cmd, sub, flag)
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Errorf("checked only %d outbox commands: the test no longer finds them", checked)
	}
}

// TestQuickStartCurl: the README's first webhook is the curl line `make
// run` prints, with its defaults filled in, and the key it shows is the one
// the example config takes from that payload.
func TestQuickStartCurl(t *testing.T) {
	t.Parallel()
	run := readRepoFile(t, "scripts/run.sh")
	token := regexp.MustCompile(`GENESYS_TOKEN=\$\{GENESYS_TOKEN:-([^}]+)\}`).FindStringSubmatch(run)
	listen := regexp.MustCompile(`listen=\$\{OUTBOX_LISTEN:-[^:]*:([0-9]+)\}`).FindStringSubmatch(run)
	require.NotNil(t, token, "cannot read the sender token default of scripts/run.sh")
	require.NotNil(t, listen, "cannot read the port default of scripts/run.sh")
	var printed []string
	for _, line := range strings.Split(run, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "curl ") || (len(printed) > 0 && strings.HasSuffix(printed[len(printed)-1], `\`)) {
			l = strings.NewReplacer(`$port`, listen[1], `$GENESYS_TOKEN`, token[1], `\\`, `\`).Replace(l)
			printed = append(printed, l)
		}
	}
	if len(printed) == 0 {
		t.Fatal("scripts/run.sh prints no curl line")
	}
	_, fences := splitMarkdown(docSection(t, "README.md", "### The first webhook"))
	const notShJSON = "the README's first webhook is not a sh block followed by its JSON answer"
	require.GreaterOrEqual(t, len(fences), 2, notShJSON)
	require.Equal(t, "sh", fences[0].lang, notShJSON)
	require.Equal(t, "json", fences[1].lang, notShJSON)
	var shown []string
	for _, l := range strings.Split(strings.TrimSpace(fences[0].text), "\n") {
		shown = append(shown, strings.TrimSpace(l))
	}
	if strings.Join(shown, "\n") != strings.Join(printed, "\n") {
		t.Errorf("the README's curl line:\n%s\nis not what make run prints:\n%s", strings.Join(shown, "\n"), strings.Join(printed, "\n"))
	}
	file := regexp.MustCompile(`@(\S+)`).FindStringSubmatch(strings.Join(printed, " "))
	if file == nil {
		t.Fatal("the curl line sends no file")
	}
	var payload struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal([]byte(readRepoFile(t, file[1])), &payload), "%s has no id", file[1])
	require.NotEmpty(t, payload.ID, "%s has no id", file[1])
	var answer struct {
		Status, Key string
	}
	if err := json.Unmarshal([]byte(fences[1].text), &answer); err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, "accepted", answer.Status, "the README's answer %+v", answer)
	assert.Equal(t, payload.ID, answer.Key, "the README's answer %+v: want the payload's id", answer)
}

// TestReceivingDocsQuoteTheExamples: the Go and Node code of
// docs/receiving-deliveries.md is the example files' code, which
// TestReceivingDeliveries runs.
func TestReceivingDocsQuoteTheExamples(t *testing.T) {
	t.Parallel()
	_, fences := splitMarkdown(readRepoFile(t, "docs/receiving-deliveries.md"))
	examples := map[string]string{
		"go": readRepoFile(t, "docs/examples/receiver/receiver.go"),
		"js": readRepoFile(t, "docs/examples/receiver/verify.js"),
	}
	found := map[string]int{}
	for _, f := range fences {
		src, ok := examples[f.lang]
		if !ok {
			continue
		}
		found[f.lang]++
		if !strings.Contains(src, f.text) {
			t.Errorf("a %s block of docs/receiving-deliveries.md is not in the example file:\n%s", f.lang, f.text)
		}
	}
	assert.NotZero(t, found["go"], "docs/receiving-deliveries.md quotes %v; want Go code", found)
	assert.NotZero(t, found["js"], "docs/receiving-deliveries.md quotes %v; want Node code", found)
}

// TestFaultSuiteIsDocumented: every test of the fault-injection suite is in
// the table of docs/architecture.md that says what it proves.
func TestFaultSuiteIsDocumented(t *testing.T) {
	t.Parallel()
	section := docSection(t, "docs/architecture.md", "### The fault-injection suite")
	files, err := filepath.Glob(repoFile("faults/*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(t \*testing\.T\)`).FindAllStringSubmatch(string(data), -1) {
			n++
			if !strings.Contains(section, "| `"+m[1]+"` |") {
				t.Errorf("docs/architecture.md does not say what %s (%s) proves", m[1], filepath.Base(f))
			}
		}
	}
	if n == 0 {
		t.Fatal("found no fault-suite tests")
	}
}

// TestImportRules holds the packages to the import rules of
// docs/architecture.md.
func TestImportRules(t *testing.T) {
	t.Parallel()
	module, _, _ := strings.Cut(strings.TrimPrefix(readRepoFile(t, "go.mod"), "module "), "\n")
	imports := func(dir string) []string {
		files, err := filepath.Glob(repoFile(filepath.Join(dir, "*.go")))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(gotoken.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range file.Imports {
				out = append(out, strings.Trim(imp.Path.Value, `"`))
			}
		}
		return out
	}
	internal := func(pkg string) string {
		if pkg == module {
			return "outbox"
		}
		if rest, ok := strings.CutPrefix(pkg, module+"/"); ok {
			return rest
		}
		return ""
	}
	for _, imp := range imports(".") {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("the root package outbox imports %s; it may import only the standard library", imp)
		}
	}
	forbidden := map[string][]string{
		"handler":         {"jobs", "cmd/outbox"},
		"handler/console": {"jobs", "cmd/outbox"},
		"jobs":            {"handler", "cmd/outbox"},
		"store":           {"handler", "jobs", "admin", "cmd/outbox"},
		"config":          {"handler", "jobs", "admin", "store", "cmd/outbox"},
		"admin":           {"handler", "cmd/outbox"},
	}
	for pkg, not := range forbidden {
		for _, imp := range imports(pkg) {
			if slices.Contains(not, internal(imp)) {
				t.Errorf("%s imports %s, which docs/architecture.md forbids", pkg, internal(imp))
			}
		}
	}
}
