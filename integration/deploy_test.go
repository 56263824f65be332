package integration

import (
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store/postgres/pgroles"
)

type composeFile struct {
	Services map[string]struct {
		Image           string            `yaml:"image"`
		Command         []string          `yaml:"command"`
		Environment     map[string]string `yaml:"environment"`
		EnvFile         []composeEnvFile  `yaml:"env_file"`
		Ports           []string          `yaml:"ports"`
		Volumes         []any             `yaml:"volumes"`
		StopGracePeriod string            `yaml:"stop_grace_period"`
		Healthcheck     *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

type composeEnvFile struct {
	Path     string `yaml:"path"`
	Required bool   `yaml:"required"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	require.NoError(t, err)
	var c composeFile
	require.NoError(t, yaml.Unmarshal(raw, &c))
	return c
}

// composeDefault resolves ${VAR:-default} the way compose does with VAR
// unset.
func composeDefault(s string) string {
	return regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}`).ReplaceAllString(s, "$1")
}

// TestComposeRunsTheConfiguredModels: every Troupe service but the
// migration reads a configuration file mounted from the repository (by
// default deploy/compose/troupe.json, which names real models whose keys
// models.env.example lists and models.env passes in), so docker compose up does not
// fall back to the offline model unsaid; the offline file is a choice, and
// the service says so. Each service gets longer than its --grace to stop
// (compose's default is 10s).
func TestComposeRunsTheConfiguredModels(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	example := readEnvFile(t, "../models.env.example")
	for name, s := range c.Services {
		if s.Image != "troupe:local" || name == "migrate" {
			continue
		}
		where := "service " + name
		cfgPath := s.Environment["TROUPE_CONFIG"]
		require.NotEmpty(t, cfgPath, "%s: without TROUPE_CONFIG the service runs the offline model", where)
		var host string
		for _, v := range s.Volumes {
			short, _ := v.(string)
			parts := strings.Split(composeDefault(short), ":")
			if len(parts) >= 2 && parts[1] == cfgPath {
				host = parts[0]
			}
		}
		require.NotEmpty(t, host, "%s: nothing is mounted at %s", where, cfgPath)
		require.True(t, slices.ContainsFunc(s.EnvFile, func(f composeEnvFile) bool { return f.Path == "models.env" && f.Required }),
			"%s: the model keys come from models.env, which must be there", where)

		// The file validates with .env.example's variables, and names
		// real models.
		cmd := exec.Command(troupeBin(t), "config", "check", "--config", filepath.Join("..", host))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range example {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s\n%s", where, host, out)
		require.Contains(t, string(out), `"providers"`, "%s: %s configures no model", where, host)

		// Longer than --grace.
		grace := 30 * time.Second
		for i, a := range s.Command {
			if a == "--grace" {
				grace, err = time.ParseDuration(s.Command[i+1])
				require.NoError(t, err)
			}
		}
		require.NotEmpty(t, s.StopGracePeriod, "%s: compose kills it 10s after SIGTERM, inside its %s grace", where, grace)
		stop, err := time.ParseDuration(s.StopGracePeriod)
		require.NoError(t, err)
		require.GreaterOrEqual(t, stop, grace+10*time.Second, "%s: stop_grace_period must exceed --grace", where)
	}

	// The offline choice runs, and says it runs offline.
	offline, err := filepath.Abs("../deploy/compose/offline.json")
	require.NoError(t, err)
	d := startDev(t, "--config", offline)
	require.Contains(t, d.logs.String(), "every role runs on the built-in offline model")
}

// TestComposeAgreesWithTheBinary: the compose file parses; it has NATS,
// PostgreSQL, a one-shot migration, the orchestrator, review and a worker
// per role; every Troupe service runs a command the binary has, with a
// healthcheck on a path and port the binary serves; the data is on volumes.
func TestComposeAgreesWithTheBinary(t *testing.T) {
	t.Parallel()
	c := readCompose(t)

	want := []string{"nats", "postgres", "migrate", "orchestrator", "review"}
	for _, r := range schemas.Roles {
		want = append(want, "worker-"+r)
	}
	for _, name := range want {
		_, ok := c.Services[name]
		require.True(t, ok, "service %s", name)
	}
	require.Contains(t, c.Volumes, "nats-data")
	require.Contains(t, c.Volumes, "postgres-data")
	require.Contains(t, c.Services["nats"].Volumes, "nats-data:/data")
	require.NotNil(t, c.Services["nats"].Healthcheck)
	require.NotNil(t, c.Services["postgres"].Healthcheck)

	conf, err := os.ReadFile("../deploy/nats/nats.conf")
	require.NoError(t, err)
	require.Contains(t, string(conf), "sync_interval: always")
	require.Contains(t, string(conf), "store_dir: /data")

	d := startDev(t)
	m := opsAddr.FindStringSubmatch(d.banner)
	require.NotNil(t, m)
	for name, s := range c.Services {
		if s.Image != "troupe:local" {
			continue
		}
		require.NotEmpty(t, s.Command, name)
		// The binary has the command.
		out, err := exec.Command(troupeBin(t), s.Command[0], "--help").CombinedOutput()
		require.NoError(t, err, "%s: troupe %s --help\n%s", name, s.Command[0], out)
		require.Contains(t, s.Environment["TROUPE_DATABASE_URL"], "@postgres:5432/", name)
		if name == "migrate" {
			require.Equal(t, "service_healthy", s.DependsOn["postgres"].Condition)
			continue
		}
		// The healthcheck probes the port the service serves its ops on,
		// at a path the binary serves.
		require.NotNil(t, s.Healthcheck, name)
		test := s.Healthcheck.Test
		require.Equal(t, []string{"CMD", "/troupe", "healthcheck", "--url"}, test[:4], name)
		probe, err := url.Parse(test[4])
		require.NoError(t, err)
		opsPort := ""
		for i, a := range s.Command {
			if a == "--ops-addr" {
				_, opsPort, err = net.SplitHostPort(s.Command[i+1])
				require.NoError(t, err)
			}
		}
		require.Equal(t, opsPort, probe.Port(), "%s: healthcheck port", name)
		require.Contains(t, []string{"/healthz", "/readyz"}, probe.Path, name)
		stdout, stderr, code := d.cli("healthcheck", "--url", "http://"+m[1]+probe.Path)
		require.Equal(t, 0, code, "%s: %s %s", name, stdout, stderr)
		require.Equal(t, "service_healthy", s.DependsOn["nats"].Condition, name)
		require.Equal(t, "service_healthy", s.DependsOn["postgres"].Condition, name)
		require.Equal(t, "service_completed_successfully", s.DependsOn["migrate"].Condition, name)
	}
	// Review publishes the dashboard, with a token: beyond loopback the
	// binary refuses to serve it without one.
	review := c.Services["review"]
	require.Contains(t, review.Ports, "8080:8080")
	require.Contains(t, strings.Join(review.Command, " "), "--http :8080")
	require.Contains(t, review.Environment["TROUPE_DASHBOARD_TOKEN"], "${TROUPE_DASHBOARD_TOKEN:?")
	_, stderr, code := d.cli("review", "--http", ":8080", "--ops-addr", "")
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "TROUPE_DASHBOARD_TOKEN")

	// The healthcheck fails when nothing answers.
	_, _, code = d.cli("healthcheck", "--url", "http://127.0.0.1:1/readyz")
	require.NotEqual(t, 0, code)

	docker, err := os.ReadFile("../deploy/Dockerfile")
	require.NoError(t, err)
	require.Contains(t, string(docker), "CGO_ENABLED=0")
	require.Contains(t, string(docker), "distroless/static-debian12:nonroot")
	require.Contains(t, string(docker), `ENTRYPOINT ["/troupe"]`)
	require.True(t, strings.Contains(string(docker), "USER nonroot"))
}

// composeUser is the NATS user troupe nats-config writes for a compose
// service's command, and the PostgreSQL service whose role it uses.
func composeUser(t *testing.T, command []string) (natsUser, dbService string) {
	t.Helper()
	switch command[0] {
	case "orchestrator":
		return bus.UserOrchestrator, pgroles.Orchestrator
	case "review":
		return bus.UserReview, pgroles.Review
	case "worker":
		i := slices.Index(command, "--role")
		require.Positive(t, i, "%v", command)
		return bus.WorkerUser(command[i+1]), pgroles.Worker
	}
	t.Fatalf("no user for %v", command)
	return "", ""
}

// TestComposeIsLockedDown: the compose setup's NATS refuses a client
// without one of troupe nats-config's users and is published on loopback
// only; each Troupe service connects as its own NATS user (the env file
// nats-config writes for it) and to PostgreSQL as its own role, which the
// migration creates with troupe migrate --roles; no service but the
// migration sees .env, where the database owner's password is.
func TestComposeIsLockedDown(t *testing.T) {
	t.Parallel()
	c := readCompose(t)

	// NATS: on loopback, its users from nats-secrets/troupe-auth.conf.
	nats := c.Services["nats"]
	require.NotEmpty(t, nats.Ports)
	for _, p := range nats.Ports {
		require.True(t, strings.HasPrefix(p, "127.0.0.1:"), "NATS published beyond this machine: %s", p)
	}
	require.Empty(t, c.Services["postgres"].Ports, "PostgreSQL is for compose's network only")
	var authMount map[string]any
	for _, v := range nats.Volumes {
		if m, ok := v.(map[string]any); ok && m["target"] == "/etc/nats/troupe-auth.conf" {
			authMount = m
		}
	}
	require.NotNil(t, authMount, "the NATS users are mounted")
	require.Equal(t, "./nats-secrets/troupe-auth.conf", authMount["source"])
	require.Equal(t, false, authMount["bind"].(map[string]any)["create_host_path"], "a missing file stops compose, not NATS")

	// What troupe nats-config writes, where the README says.
	dir := t.TempDir()
	envDir := filepath.Join(dir, "nats-secrets")
	// A low bcrypt cost: each connection below checks a password, on a
	// busy machine under -race.
	gen := exec.Command(troupeBin(t), "nats-config", "--env-dir", envDir, "--bcrypt-cost", "4")
	gen.Env = append(os.Environ(), "TROUPE_CONFIG=")
	auth, err := gen.Output()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "troupe-auth.conf"), auth, 0o600))
	conf, err := os.ReadFile("../deploy/nats/nats.conf")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nats.conf"), conf, 0o600))
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "nats.conf"))
	require.NoError(t, err, "deploy/nats/nats.conf with troupe-auth.conf beside it")
	require.Equal(t, "0.0.0.0", opts.Host, "compose's other containers reach it")
	require.NotEmpty(t, opts.Users)
	require.Empty(t, opts.NoAuthUser)
	opts.Host, opts.Port, opts.HTTPPort, opts.StoreDir = "127.0.0.1", -1, -1, filepath.Join(dir, "data")
	opts.AuthTimeout = 30 // seconds
	srv, err := server.NewServer(opts)
	require.NoError(t, err)
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	require.True(t, srv.ReadyForConnections(10*time.Second))
	_, err = natsgo.Connect(srv.ClientURL(), natsgo.MaxReconnects(0))
	require.ErrorContains(t, err, "Authorization Violation", "a client without a user is refused")

	connect := func(envFile string) {
		t.Helper()
		creds := readEnvFile(t, envFile)
		nc, err := natsgo.Connect(srv.ClientURL(), natsgo.UserInfo(creds["TROUPE_NATS_USER"], creds["TROUPE_NATS_PASSWORD"]),
			natsgo.MaxReconnects(0), natsgo.Timeout(30*time.Second))
		require.NoError(t, err, envFile)
		nc.Close()
	}
	connect(filepath.Join(envDir, bus.UserClient+".env"))

	migrate := c.Services["migrate"]
	require.Equal(t, []string{"migrate", "--roles"}, migrate.Command)
	for name, s := range c.Services {
		if s.Image != "troupe:local" || name == "migrate" {
			continue
		}
		where := "service " + name
		natsUser, dbService := composeUser(t, s.Command)
		// Its own NATS user, from the file nats-config wrote for it.
		file := "nats-secrets/" + natsUser + ".env"
		require.True(t, slices.ContainsFunc(s.EnvFile, func(f composeEnvFile) bool { return f.Path == file && f.Required }),
			"%s: its NATS credentials come from %s", where, file)
		connect(filepath.Join(dir, file))
		for _, f := range s.EnvFile {
			require.NotEqual(t, ".env", f.Path, "%s: .env has the database owner's password", where)
		}
		// Its own PostgreSQL role, whose password the migration sets.
		required := regexp.MustCompile(`\$\{([A-Z_]+):\?[^}]*\}`)
		dbURL := s.Environment["TROUPE_DATABASE_URL"]
		m := required.FindStringSubmatch(dbURL)
		require.NotNil(t, m, "%s: the database password comes from .env", where)
		u, err := url.Parse(required.ReplaceAllString(dbURL, "password"))
		require.NoError(t, err, where)
		role := pgroles.Names("")[slices.Index(pgroles.Services, dbService)]
		require.Equal(t, role.Name, u.User.Username(), "%s: its PostgreSQL role", where)
		variable := "TROUPE_DB_PASSWORD_" + strings.ToUpper(dbService)
		require.Equal(t, variable, m[1], "%s: the password is %s, which the migration sets", where, variable)
		require.True(t, strings.HasPrefix(migrate.Environment[variable], "${"+variable+":?"), "migrate sets %s", variable)
		for k, v := range s.Environment {
			require.NotContains(t, v, "POSTGRES_PASSWORD", "%s: %s", where, k)
		}
	}
	require.True(t, strings.HasPrefix(migrate.Environment["TROUPE_DATABASE_URL"], "postgres://troupe:${POSTGRES_PASSWORD"), "migrate runs as the owner")
}
