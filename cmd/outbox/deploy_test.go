package main

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/webhook-outbox/webhook-outbox/config"
)

// repoFile is the path of a file at the repository's root.
func repoFile(name string) string { return filepath.Join("..", "..", name) }

// The compose file is checked here for the shape the README promises. No
// Docker engine runs on our machines, so `docker compose up` itself is not
// tested; .ci/run validates the file's syntax with docker-compose when it is
// installed.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// composeDefault resolves compose's ${VAR:-default} to its default, as
// `docker compose up` does with the variable unset.
var composeDefault = regexp.MustCompile(`\$\{(\w+):-([^}]*)\}`)

// composeRequired matches compose's ${VAR:?message}: a variable that must be
// set, or compose refuses to start.
var composeRequired = regexp.MustCompile(`\$\{(\w+):\?[^}]*\}`)

func TestComposeFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(repoFile("docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("docker-compose.yml is not YAML: %v", err)
	}
	for _, name := range []string{"postgres", "migrate", "outbox", "demo-target"} {
		if _, ok := f.Services[name]; !ok {
			t.Fatalf("docker-compose.yml has no %s service", name)
		}
	}

	pg := f.Services["postgres"]
	if !strings.HasPrefix(pg.Image, "postgres:17") {
		t.Errorf("postgres image is %q, want postgres:17", pg.Image)
	}
	if assert.NotNil(t, pg.Healthcheck, "postgres has no healthcheck") {
		assert.Contains(t, strings.Join(pg.Healthcheck.Test, " "), "pg_isready", "postgres has no pg_isready healthcheck")
	}
	namedVolume := false
	for _, v := range pg.Volumes {
		src, dst, _ := strings.Cut(v, ":")
		if _, declared := f.Volumes[src]; declared && strings.HasPrefix(dst, "/var/lib/postgresql") {
			namedVolume = true
		}
	}
	if !namedVolume {
		t.Errorf("postgres keeps its data in no declared named volume: %v", pg.Volumes)
	}

	migrate := f.Services["migrate"]
	assert.Equal(t, []string{"migrate", "up"}, migrate.Command, "migrate's command")
	assert.Equal(t, "service_healthy", migrate.DependsOn["postgres"].Condition, "migrate runs before postgres is healthy")
	outbox := f.Services["outbox"]
	if assert.NotEmpty(t, outbox.Command, "outbox's command") {
		assert.Equal(t, "serve", outbox.Command[0], "outbox runs %v", outbox.Command)
	}
	assert.Equal(t, "service_completed_successfully", outbox.DependsOn["migrate"].Condition, "outbox runs before migrate succeeded")
	if !slices.ContainsFunc(outbox.Ports, func(p string) bool { return strings.HasSuffix(p, ":8080") }) {
		t.Errorf("outbox publishes no port 8080: %v", outbox.Ports)
	}
	for name, s := range f.Services {
		if name != "postgres" {
			assert.NotNil(t, s.Build, "service %s does not build the outbox image", name)
			assert.Equal(t, outbox.Image, s.Image, "service %s does not build the outbox image", name)
		}
	}

	// serve and migrate read the mounted config with the compose
	// environment: it must load, and deliver to the demo-target service.
	// The secrets have no defaults: compose refuses to start without them
	// (${VAR:?message}), so no token anyone can read ships with it.
	for _, secret := range []string{"OUTBOX_ADMIN_TOKEN", "GENESYS_TOKEN"} {
		for name, s := range map[string]composeService{"migrate": migrate, "outbox": outbox} {
			if v := s.Environment[secret]; !regexp.MustCompile(`^\$\{` + secret + `:\?[^}]+\}$`).MatchString(v) {
				t.Errorf("service %s sets %s to %q; want ${%s:?message}, required from the environment", name, secret, v, secret)
			}
		}
	}
	env := map[string]string{}
	for k, v := range outbox.Environment {
		env[k] = composeDefault.ReplaceAllString(v, "$2")
		if composeRequired.MatchString(v) {
			env[k] = "a-secret-from-the-environment-0123456789"
		}
	}
	var mounted string
	for _, v := range outbox.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == env["OUTBOX_CONFIG"] {
			mounted = parts[0]
		}
	}
	if mounted == "" {
		t.Fatalf("outbox mounts nothing at OUTBOX_CONFIG (%q): %v", env["OUTBOX_CONFIG"], outbox.Volumes)
	}
	composeCfg := parseConfigFile(t, repoFile(mounted), env)
	demo := f.Services["demo-target"]
	i := slices.Index(demo.Command, "--listen")
	require.GreaterOrEqual(t, i, 0, "demo-target runs %v, want demo-target --listen :9090", demo.Command)
	require.Less(t, i+1, len(demo.Command), "demo-target runs %v, want demo-target --listen :9090", demo.Command)
	assert.Equal(t, "demo-target", demo.Command[0], "demo-target runs %v", demo.Command)
	assert.Equal(t, ":9090", demo.Command[i+1], "demo-target runs %v", demo.Command)
	if got := composeCfg.Routes[0].Target.URL; !strings.HasPrefix(got, "http://demo-target:9090/") {
		t.Errorf("the compose config delivers to %s, not to the demo-target service", got)
	}

	// It is the example config in every other respect.
	example := parseConfigFile(t, repoFile("outbox.example.yaml"), env)
	if len(example.Routes) != len(composeCfg.Routes) {
		t.Fatalf("the compose config has %d routes, the example %d", len(composeCfg.Routes), len(example.Routes))
	}
	for i := range composeCfg.Routes {
		composeCfg.Routes[i].Target.URL = example.Routes[i].Target.URL
	}
	if !reflect.DeepEqual(example, composeCfg) {
		t.Errorf("%s differs from outbox.example.yaml in more than the target's host", mounted)
	}
}

func parseConfigFile(t *testing.T, path string, env map[string]string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("%s does not load with the compose environment: %v", path, err)
	}
	return cfg
}

// TestDockerfile checks the image definition for what the README promises:
// a multi-stage build of a static binary on a small base, run as a non-root
// user, with the Go version go.mod asks for.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(repoFile("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var user, build string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			froms = append(froms, fields[1])
			user = "" // USER applies per stage
		case "USER":
			user = fields[1]
		case "RUN":
			if strings.Contains(sc.Text(), "go build") {
				build = sc.Text()
			}
		}
	}
	if len(froms) < 2 {
		t.Fatalf("the Dockerfile has %d stages, want a multi-stage build", len(froms))
	}
	final := froms[len(froms)-1]
	if !strings.Contains(final, "distroless/static") && !strings.HasPrefix(final, "scratch") && !strings.HasPrefix(final, "alpine") {
		t.Errorf("the final stage is %s, want a small base", final)
	}
	assert.NotEmpty(t, user, "the final stage runs as root; want a non-root user")
	assert.NotEqual(t, "root", user, "the final stage runs as root; want a non-root user")
	assert.False(t, strings.HasPrefix(user, "0"), "the final stage runs as %q, want a non-root user", user)
	assert.Contains(t, build, "CGO_ENABLED=0", "the build step")
	assert.Contains(t, build, "./cmd/outbox", "the build step")
	goMod, err := os.ReadFile(repoFile("go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	require.NotNil(t, goVersion, "go.mod has no go line")
	assert.True(t, strings.HasPrefix(froms[0], "golang:"+string(goVersion[1])), "the build stage is %s, but go.mod asks for Go %s", froms[0], goVersion[1])
}

// TestStaticBuild runs the Dockerfile's build command and checks that the
// binary needs no dynamic loader, so it runs on distroless/static.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	out := filepath.Join(t.TempDir(), "outbox")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary asks for a dynamic loader: it is not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary links %v: it is not static", libs)
	}
}
