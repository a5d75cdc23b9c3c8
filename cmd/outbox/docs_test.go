package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// readmeSection returns the README's section under heading, up to the next
// heading of the same level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile(repoFile("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	section, _, _ := strings.Cut(rest, "\n## ")
	return section
}

// TestMetricsAreDocumented checks the README's metrics table against the
// registry of the real serve wiring, both ways, and that its Prometheus
// scrape config is one Prometheus can read.
func TestMetricsAreDocumented(t *testing.T) {
	t.Parallel()
	known := servedMetricNames(t)
	section := readmeSection(t, "## Metrics")

	documented := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `(outbox_[a-z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
	}
	for name := range known {
		if strings.HasPrefix(name, "outbox_") && !documented[name] {
			t.Errorf("the README's metrics table does not explain %s", name)
		}
	}
	for _, name := range outboxNames(section, known) {
		if !known[name] {
			t.Errorf("the README's metrics section mentions %s, which outbox does not serve", name)
		}
	}

	block := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindStringSubmatch(section)
	if block == nil {
		t.Fatal("the README's metrics section has no Prometheus scrape config")
	}
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(block[1]), &prom); err != nil {
		t.Fatalf("the scrape config is not YAML: %v", err)
	}
	if len(prom.ScrapeConfigs) != 1 {
		t.Fatalf("the README shows %d scrape configs, want one", len(prom.ScrapeConfigs))
	}
	sc := prom.ScrapeConfigs[0]
	if sc.JobName == "" || (sc.MetricsPath != "" && sc.MetricsPath != "/metrics") || len(sc.StaticConfigs) == 0 || len(sc.StaticConfigs[0].Targets) == 0 {
		t.Errorf("the scrape config does not scrape /metrics of a target: %+v", sc)
	}
}
