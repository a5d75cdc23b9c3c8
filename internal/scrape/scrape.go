// Package scrape reads a /metrics endpoint the way Prometheus does, for
// tests that assert what an operator's dashboards would see.
package scrape

import (
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Result is one scrape.
type Result struct {
	// Raw is the exposition text as served.
	Raw      string
	families map[string]*dto.MetricFamily
}

// Get scrapes url, failing the test unless it answers 200 with parsable
// Prometheus text.
func Get(t testing.TB, url string) *Result {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %s", url, resp.StatusCode, raw)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("scrape %s: not Prometheus text: %v\n%s", url, err, raw)
	}
	return &Result{Raw: string(raw), families: families}
}

// Has reports whether the scrape has a family called name.
func (r *Result) Has(name string) bool { return r.families[name] != nil }

// Value returns the value of the series of name whose labels include
// labels (given as name, value pairs): a counter's or gauge's value, or a
// histogram's sample count. ok is false when there is no such series.
func (r *Result) Value(name string, labels ...string) (v float64, ok bool) {
	m := r.find(name, labels)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

// HistogramSum returns the sum of the observations of a histogram series.
func (r *Result) HistogramSum(name string, labels ...string) (float64, bool) {
	m := r.find(name, labels)
	if m == nil || m.Histogram == nil {
		return 0, false
	}
	return m.Histogram.GetSampleSum(), true
}

// LabelValues returns every value label takes in name's series.
func (r *Result) LabelValues(name, label string) []string {
	var vals []string
	if f := r.families[name]; f != nil {
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == label {
					vals = append(vals, lp.GetValue())
				}
			}
		}
	}
	return vals
}

func (r *Result) find(name string, labels []string) *dto.Metric {
	f := r.families[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			if !hasLabel(m, labels[i], labels[i+1]) {
				continue next
			}
		}
		return m
	}
	return nil
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.Label {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}
