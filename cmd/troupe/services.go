package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store/postgres/pgroles"
)

// common are the flags every command takes.
type common struct {
	configPath string
	natsURL    string
	logLevel   string
}

func (c *common) register(fs *flag.FlagSet) { c.registerLevel(fs, "info") }

func (c *common) registerLevel(fs *flag.FlagSet, level string) {
	fs.StringVar(&c.configPath, "config", "", "configuration file (default $TROUPE_CONFIG, else ./troupe.json when present)")
	fs.StringVar(&c.natsURL, "nats-url", "", "NATS server URL (default $TROUPE_NATS_URL, else the configuration's nats.url, else nats://127.0.0.1:4222)")
	fs.StringVar(&c.logLevel, "log-level", level, "log level: debug, info, warn, error")
}

// load reads the configuration and applies the environment and flags over it.
func (c *common) load() (config.Config, string, error) {
	cfg, path, err := config.Load(c.configPath)
	if err != nil {
		return config.Config{}, path, err
	}
	if v := os.Getenv("TROUPE_NATS_URL"); v != "" {
		cfg.NATS.URL = v
	}
	if c.natsURL != "" {
		cfg.NATS.URL = c.natsURL
	}
	// Credentials and TLS: TROUPE_NATS_USER, _PASSWORD, _TOKEN, _CREDS,
	// _NKEY, _INBOX_PREFIX, _TLS_CA, _TLS_CERT, _TLS_KEY.
	cfg.NATS = cfg.NATS.WithEnv(os.Getenv)
	if err := cfg.NATS.Validate(); err != nil {
		return config.Config{}, path, err
	}
	if v := os.Getenv("TROUPE_DATABASE_URL"); v != "" {
		cfg.Database.URL = v
	}
	return cfg, path, nil
}

func (c *common) logger(w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(c.logLevel)
	if err != nil || c.logLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level: %q is not a level; use debug, info, warn or error", c.logLevel)
	}
	// Every line is masked (redact): an error logged anywhere may quote a
	// key or a URL's credentials.
	return zerolog.New(redact.Writer(w)).Level(lvl).With().Timestamp().Logger(), nil
}

// serviceFlags are the flags of the service commands.
type serviceFlags struct {
	common
	databaseURL string
	grace       time.Duration
	latency     time.Duration
	jitter      time.Duration
	opsAddr     string
}

func (s *serviceFlags) register(fs *flag.FlagSet, opsAddr, logLevel string) {
	s.common.registerLevel(fs, logLevel)
	fs.StringVar(&s.databaseURL, "database-url", "", "postgres:// URL or SQLite file (default $TROUPE_DATABASE_URL, else the configuration's database.url)")
	fs.DurationVar(&s.grace, "grace", 30*time.Second, "on SIGTERM or SIGINT, how long running work may take to finish")
	fs.StringVar(&s.opsAddr, "ops-addr", opsAddr, "address of /healthz and /readyz; empty for none")
	fs.DurationVar(&s.latency, "offline-latency", 0, "make the offline model take this long per call, like a real one")
	fs.DurationVar(&s.jitter, "offline-jitter", 0, "and up to this much more, at random")
}

// models wraps the offline model as the flags and the fault-injection
// switches ask: TROUPE_FAULT_PANIC_ON (a task whose instructions contain
// its value panics its handler on every delivery) and TROUPE_FAULT_EXIT_ON
// (such a task kills the worker process on every delivery).
func (s *serviceFlags) models() func(string) llm.Model {
	poison, kill := os.Getenv("TROUPE_FAULT_PANIC_ON"), os.Getenv("TROUPE_FAULT_EXIT_ON")
	if s.latency == 0 && s.jitter == 0 && poison == "" && kill == "" {
		return nil
	}
	return func(string) llm.Model {
		return &llm.Simulated{Model: llm.NewOffline(), Latency: s.latency, Jitter: s.jitter, PanicOn: poison, ExitOn: kill}
	}
}

// checkOffline refuses --offline-latency and --offline-jitter when the
// configuration gives a role a provider's model: the flags run every role
// on the offline model, and would silently replace it.
func (s *serviceFlags) checkOffline(cfg config.Config) error {
	if s.latency == 0 && s.jitter == 0 {
		return nil
	}
	var paid []string
	for _, role := range schemas.Roles {
		if m := cmp.Or(cfg.Roles[role].Model, cfg.Models.Default); m != "" && m != "offline" {
			paid = append(paid, fmt.Sprintf("roles.%s: %s", role, m))
		}
	}
	if len(paid) == 0 {
		return nil
	}
	return fmt.Errorf("--offline-latency and --offline-jitter run every role on the offline model, but the configuration gives roles providers' models (%s); "+
		"drop the flags, or the models, to say which you mean", strings.Join(paid, ", "))
}

func (s *serviceFlags) app(e *env) (*App, string, error) {
	cfg, path, err := s.load()
	if err != nil {
		return nil, path, err
	}
	if s.databaseURL != "" {
		cfg.Database.URL = s.databaseURL
	}
	if err := s.checkOffline(cfg); err != nil {
		return nil, path, err
	}
	log, err := s.logger(e.stderr)
	if err != nil {
		return nil, path, err
	}
	a := &App{Config: cfg, Log: log, Models: s.models(), OpsAddr: s.opsAddr, ConfigPath: path}
	if path != "" {
		if file, _, err := config.Load(path); err == nil {
			a.ConfigFile = &file
		}
	}
	return a, path, nil
}

func runDev(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "dev", "dev [flags]")
	var sf serviceFlags
	sf.register(fs, "127.0.0.1:9090", "warn")
	data := fs.String("data", "./.troupe", "directory for the embedded NATS server's files and the SQLite database")
	demo := fs.Bool("demo", false, "submit a sample job and follow it")
	rolesFlag := fs.String("roles", strings.Join(schemas.Roles, ","), "the roles whose workers run in this process (others can run as troupe worker)")
	natsPort := fs.Int("nats-port", 4222, "port of the embedded NATS server; when taken, a free one is used (0: any free port)")
	var df dashboardFlags
	df.register(fs)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	dauth, err := df.auth()
	if err != nil {
		return err
	}
	if sf.natsURL != "" {
		return errors.New("--nats-url: troupe dev runs its own NATS server; choose its port with --nats-port, or run the services (orchestrator, review, worker) against another server")
	}
	roles, err := parseRoles(*rolesFlag, true)
	if err != nil {
		return fmt.Errorf("--roles: %w", err)
	}
	start := time.Now()
	a, path, err := sf.app(e)
	if err != nil {
		return err
	}
	a.DataDir, a.Embedded, a.Orchestrator, a.Review, a.Roles = *data, true, true, true, roles
	a.NATSPort = *natsPort
	a.HTTPAddr, a.HTTPFallback, a.Dashboard = df.addr, true, dauth
	if err := a.Start(ctx); err != nil {
		return err
	}
	cfgNote := "no configuration file: defaults"
	if path != "" {
		cfgNote = "configuration " + path
	}
	db := a.Config.Database.URL
	if db == "" {
		db = *data + "/troupe.db (SQLite)"
	}
	fmt.Fprintf(e.stdout, "troupe dev ready in %s\n", time.Since(start).Round(time.Millisecond))
	line := func(label, format string, args ...any) {
		fmt.Fprintf(e.stdout, "  %-11s%s\n", label+":", fmt.Sprintf(format, args...))
	}
	if a.PortFallback {
		fmt.Fprintf(e.stdout, "  port %d is taken; NATS listens on a free port instead\n", *natsPort)
	}
	for _, moved := range []struct{ what, asked, got string }{{"the dashboard", df.addr, a.HTTPAddr}, {"the ops endpoint", sf.opsAddr, a.OpsAddr}} {
		_, askedPort, _ := net.SplitHostPort(moved.asked)
		_, gotPort, _ := net.SplitHostPort(moved.got)
		if askedPort != "" && askedPort != "0" && gotPort != "" && askedPort != gotPort {
			fmt.Fprintf(e.stdout, "  port %s is taken; %s listens on a free port instead\n", askedPort, moved.what)
		}
	}
	if a.HTTPAddr != "" {
		line("dashboard", "http://%s/", a.HTTPAddr)
	}
	line("NATS", "%s   (export TROUPE_NATS_URL=%s)", a.NATSURL, a.NATSURL)
	line("store", "%s", config.RedactDSN(db))
	if a.OpsAddr != "" {
		line("ops", "http://%s/healthz, /readyz and /metrics", a.OpsAddr)
	}
	line("models", "%s", describeModels(a.Config, roles))
	line("config", "%s", cfgNote)
	line("submit", "troupe submit --title 'Hello' --wait    or    nats --server %s req troupe.api.jobs.submit '{\"title\":\"Hello\"}'", a.NATSURL)
	if *demo {
		go func() {
			code := Run(ctx, []string{"submit", "--nats-url", a.NATSURL, "--wait",
				"--title", "Per-key rate limiting", "--brief", "Add per-API-key limits with clear 429s."}, e.stdin, e.stdout, e.stderr)
			fmt.Fprintf(e.stdout, "demo finished (exit %d); troupe dev keeps running, Ctrl-C to stop\n", code)
		}()
	}
	waitStop(ctx, a, sf.grace)
	return nil
}

func runService(ctx context.Context, e *env, args []string, name string, setup func(a *App, fs *flag.FlagSet) error, extra func(fs *flag.FlagSet)) error {
	fs := newFlags(e, name, name+" [flags]")
	var sf serviceFlags
	sf.register(fs, ":9090", "info")
	if extra != nil {
		extra(fs)
	}
	if _, err := parse(fs, args); err != nil {
		return err
	}
	a, _, err := sf.app(e)
	if err != nil {
		return err
	}
	if err := setup(a, fs); err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	waitStop(ctx, a, sf.grace)
	return nil
}

func runOrchestrator(ctx context.Context, e *env, args []string) error {
	return runService(ctx, e, args, "orchestrator", func(a *App, _ *flag.FlagSet) error {
		a.Orchestrator = true
		return nil
	}, nil)
}

func runReview(ctx context.Context, e *env, args []string) error {
	var df dashboardFlags
	return runService(ctx, e, args, "review", func(a *App, _ *flag.FlagSet) error {
		dauth, err := df.auth()
		if err != nil {
			return err
		}
		a.Review, a.HTTPAddr, a.Dashboard = true, df.addr, dauth
		return nil
	}, df.register)
}

func runWorker(ctx context.Context, e *env, args []string) error {
	var role string
	var concurrency int
	return runService(ctx, e, args, "worker", func(a *App, _ *flag.FlagSet) error {
		if role == "" {
			return fmt.Errorf("--role is required: one of %s", strings.Join(schemas.Roles, ", "))
		}
		roles, err := parseRoles(role, false)
		if err != nil {
			return fmt.Errorf("--role: %w", err)
		}
		if concurrency > 0 {
			a.FixedConcurrency = concurrency
			for _, r := range roles {
				rc := a.Config.Roles[r]
				rc.Concurrency = concurrency
				a.Config.Roles[r] = rc
			}
		}
		a.Roles = roles
		return nil
	}, func(fs *flag.FlagSet) {
		fs.StringVar(&role, "role", "", "the role to serve: "+strings.Join(schemas.Roles, ", ")+" (several, comma-separated)")
		fs.IntVar(&concurrency, "concurrency", 0, "tasks run at once (default roles.<role>.concurrency, else 4)")
	})
}

func runMigrate(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "migrate", "migrate [--database-url URL] [--roles [--role-prefix troupe_]]")
	var c common
	c.register(fs)
	dbURL := fs.String("database-url", "", "postgres:// URL or SQLite file (default $TROUPE_DATABASE_URL, else the configuration's database.url)")
	roles := fs.Bool("roles", false, "then give each service a PostgreSQL role of its own, with only the privileges it needs: <prefix>orchestrator, <prefix>review, <prefix>worker, created with the passwords in "+
		dbPasswordVar("<SERVICE>")+" (an existing role keeps its password unless one is given); run it as the tables' owner")
	rolePrefix := fs.String("role-prefix", pgroles.DefaultPrefix, "--roles: what the roles' names start with")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, _, err := c.load()
	if err != nil {
		return err
	}
	if *dbURL != "" {
		cfg.Database.URL = *dbURL
	}
	if cfg.Database.URL == "" {
		return errors.New("no database: set --database-url, TROUPE_DATABASE_URL or database.url")
	}
	st, err := openStore(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s is migrated\n", config.RedactDSN(cfg.Database.URL))
	if *roles {
		return applyDBRoles(ctx, e.stdout, cfg.Database.URL, *rolePrefix, cfg.NATS.Prefix)
	}
	return nil
}

// runHealthcheck exits 0 when url answers 200 within the timeout: a
// container healthcheck for images without curl or wget.
func runHealthcheck(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "healthcheck", "healthcheck [--url http://127.0.0.1:9090/readyz]")
	url := fs.String("url", "http://127.0.0.1:9090/readyz", "the ops endpoint to probe: /healthz (alive) or /readyz (ready)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d: %s", *url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(e.stdout, "%s", body)
	return nil
}

// describeModels says which model each role calls.
func describeModels(cfg config.Config, roles []string) string {
	if len(cfg.Models.Providers) == 0 {
		return "offline (built-in; deterministic drafts, no API key needed)"
	}
	var parts []string
	for _, r := range roles {
		m := cfg.Roles[r].Model
		if m == "" {
			m = cfg.Models.Default
		}
		if m == "" {
			m = "offline"
		}
		parts = append(parts, r+"="+m)
	}
	return strings.Join(parts, ", ")
}

// parseRoles reads a comma-separated list of roles.
func parseRoles(list string, emptyOK bool) ([]string, error) {
	var roles []string
	for _, r := range strings.Split(list, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if !schemas.IsRole(r) {
			return nil, fmt.Errorf("%q is not a role; the roles are %s", r, strings.Join(schemas.Roles, ", "))
		}
		roles = append(roles, r)
	}
	if len(roles) == 0 && !emptyOK {
		return nil, fmt.Errorf("name at least one role: %s", strings.Join(schemas.Roles, ", "))
	}
	return roles, nil
}

func runConfig(ctx context.Context, e *env, args []string) error {
	return sub(ctx, e, "config", args, map[string]func(context.Context, *env, []string) error{
		"check": func(_ context.Context, e *env, args []string) error {
			fs := newFlags(e, "config check", "config check [--config FILE]")
			var c common
			c.register(fs)
			if _, err := parse(fs, args); err != nil {
				return err
			}
			cfg, path, err := c.load()
			if err != nil {
				return err
			}
			if path == "" {
				fmt.Fprintln(e.stderr, "no configuration file; showing the defaults")
			} else {
				fmt.Fprintf(e.stderr, "%s is valid; the effective configuration:\n", path)
			}
			if len(cfg.Models.Providers) == 0 {
				fmt.Fprintln(e.stderr, "no model configured: every role uses the built-in offline model")
			}
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(cfg.Redacted())
		},
	})
}
