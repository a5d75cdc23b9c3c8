package handler_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestGorillaMuxIsCurrent: the router is built with gorilla/mux v1.8.1 or
// later (v1.7.4 was the version before the security review).
func TestGorillaMuxIsCurrent(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/gorilla/mux (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/gorilla/mux")
	}
	if v := string(m[1]); !atLeast(v, [3]int{1, 8, 1}) {
		t.Errorf("go.mod requires github.com/gorilla/mux %s; want v1.8.1 or later", v)
	}
}

// atLeast compares a vMAJOR.MINOR.PATCH version with want.
func atLeast(v string, want [3]int) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) != 3 {
		return false
	}
	for i, p := range parts {
		p, _, _ = strings.Cut(p, "-")
		n, err := strconv.Atoi(p)
		if err != nil {
			return false
		}
		if n != want[i] {
			return n > want[i]
		}
	}
	return true
}
