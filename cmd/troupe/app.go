package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/dashboard"
	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/orchestrator"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/sqlite"
	"github.com/troupe-dev/troupe/worker"
)

// App is a running set of Troupe services in one process: troupe dev runs
// all of them on an embedded NATS server, the service commands one each.
// Tests start the real program through it.
type App struct {
	Config config.Config
	// DataDir holds the embedded server's files and the SQLite database.
	DataDir string
	// Embedded runs a NATS server in the process (troupe dev).
	Embedded bool
	// Orchestrator, Review and Roles choose the services to run.
	Orchestrator bool
	Review       bool
	Roles        []string
	Log          zerolog.Logger
	// Models, when set, chooses a role's model; nil or a nil result means
	// the offline model.
	Models func(role string) llm.Model

	// Ops serves /healthz and /readyz on OpsAddr (none when empty); Start
	// sets OpsAddr to the address it listens on.
	Ops     *telemetry.Ops
	OpsAddr string

	// HTTPAddr is where the review service serves the dashboard (none when
	// empty); Start sets it to the address it listens on. With
	// HTTPFallback, a taken port gives way to any free one (troupe dev).
	HTTPAddr     string
	HTTPFallback bool
	// Dashboard holds the dashboard's credentials and reviewer name.
	Dashboard dashboardAuth

	// ConfigPath is the configuration file to watch for live changes
	// (none when empty), every 2s.
	ConfigPath string
	// ConfigFile is the file's configuration as read at start, before
	// flags and the environment: live changes are measured against it.
	ConfigFile *config.Config
	// FixedConcurrency is the --concurrency flag of troupe worker: when
	// set, configuration changes do not change the workers' concurrency.
	FixedConcurrency int

	// NATSURL is the URL of the server in use, set by Start.
	NATSURL string
	// NATSPort is the embedded server's port (0: any free one).
	NATSPort int
	// PortFallback is true when the embedded server could not have NATSPort.
	PortFallback bool

	srv      *bus.Embedded
	nc       *nats.Conn
	js       jetstream.JetStream
	store    store.Store
	relay    *orchestrator.Relay
	orch     *orchestrator.Service
	rev      *review.Service
	workers  []*worker.Worker
	stopping []func(context.Context) error
}

// Start connects (or embeds) NATS, opens and migrates the store, ensures
// the topology and starts the chosen services.
func (a *App) Start(ctx context.Context) error {
	cfg := a.Config
	// From here on, the configuration's secrets are masked in everything
	// the process writes: logs, reasons, events, dead letters, replies.
	redact.Add(cfg.Secrets()...)
	redact.Add(a.Dashboard.secrets()...)
	if a.Ops == nil {
		a.Ops = telemetry.NewOps()
	}
	if a.Ops.Metrics == nil {
		a.Ops.Metrics = telemetry.NewMetrics()
	}
	a.Ops.StuckAfter = cfg.Reliability.StuckAfterDuration()
	metrics := a.Ops.Metrics
	replies := bus.Replies{Prefixes: cfg.NATS.ReplyPrefixes, Log: a.Log, Refused: metrics.ReplyRefused}
	if a.Embedded {
		if err := makeDataDir(a.DataDir, a.Log); err != nil {
			return err
		}
		unlock, err := lockDir(a.DataDir)
		if err != nil {
			return err
		}
		a.stopping = append(a.stopping, func(context.Context) error { unlock(); return nil })
		port := a.NATSPort
		if port == 0 {
			port = -1 // any free port
		}
		srv, err := bus.StartEmbedded(bus.EmbeddedConfig{
			Dir: filepath.Join(a.DataDir, "nats"), Port: port, SyncAlways: cfg.NATS.Sync != "periodic",
		})
		if err != nil {
			return err
		}
		a.srv, a.PortFallback = srv, srv.PortFallback
		a.NATSURL = srv.ClientURL()
		a.stopping = append(a.stopping, func(context.Context) error { srv.Shutdown(); return nil })
	} else {
		a.NATSURL = cfg.NATS.URL
	}
	if a.OpsAddr != "" {
		addr, err := a.Ops.Listen(a.OpsAddr, a.Log)
		if err != nil && a.Embedded {
			// troupe dev: another process has the port; any will do.
			host, _, _ := net.SplitHostPort(a.OpsAddr)
			addr, err = a.Ops.Listen(net.JoinHostPort(host, "0"), a.Log)
		}
		if err != nil {
			a.Stop(ctx)
			return err
		}
		a.OpsAddr = addr
		a.stopping = append(a.stopping, a.Ops.Close)
		a.Log.Info().Str("addr", addr).Msg("ops endpoint listening: /healthz, /readyz")
	}
	dbURL := cfg.Database.URL
	if dbURL == "" && a.Embedded {
		dbURL = filepath.Join(a.DataDir, "troupe.db")
	}
	if dbURL == "" {
		a.Stop(ctx)
		return errors.New("no database: set --database-url, TROUPE_DATABASE_URL or database.url")
	}
	// NATS or the store may not be up yet (a cluster starting, a database
	// failing over): keep trying, not ready meanwhile, rather than exit.
	var nc *nats.Conn
	var js jetstream.JetStream
	natsOpts, err := bus.ConnectOptions(cfg.NATS)
	if err != nil {
		a.Stop(ctx)
		return err
	}
	if err := retry(ctx, a.Log, "connecting to NATS", func() error {
		var err error
		nc, js, err = bus.Connect(a.NATSURL, "troupe "+strings.Join(a.services(), ","), a.Log, natsOpts...)
		return err
	}); err != nil {
		a.Stop(ctx)
		return err
	}
	a.nc, a.js = nc, js
	a.stopping = append(a.stopping, func(ctx context.Context) error { return drain(ctx, nc) })
	if err := bus.CheckServer(nc); err != nil {
		a.Stop(ctx)
		return err
	}
	if !a.Embedded {
		logSyncPolicy(a.Log, cfg.NATS)
	}
	var st store.Store
	if err := retry(ctx, a.Log, "opening the store", func() error {
		var err error
		if st, err = openStore(ctx, dbURL); err != nil {
			return err
		}
		if err := st.Migrate(ctx); err != nil {
			_ = st.Close()
			return fmt.Errorf("migrating the store: %w", err)
		}
		return nil
	}); err != nil {
		a.Stop(ctx)
		return err
	}
	a.store = st
	a.stopping = append(a.stopping, func(context.Context) error { return st.Close() })

	warnUnbuilt(a.Log, cfg)
	models, err := llm.ForRoles(cfg, a.Roles)
	if err != nil {
		a.Stop(ctx)
		return err
	}
	roles := a.Roles
	if a.Orchestrator || a.Embedded {
		roles = schemas.Roles
	}
	reconcile, staleAfter, ackWait := cfg.Reliability.Durations()
	topo := bus.Topology{Prefix: cfg.NATS.Prefix, Roles: roles, Replicas: cfg.NATS.Replicas, AckWait: ackWait, RoleMaxDeliver: map[string]int{}}
	for role, rc := range cfg.Roles {
		topo.RoleMaxDeliver[role] = rc.MaxDeliver
	}
	topo.Limits = map[string]bus.StreamLimits{}
	for name, l := range cfg.NATS.Streams {
		topo.Limits[name] = bus.StreamLimits(l)
	}
	if err := retry(ctx, a.Log, "creating the streams", a.ensureTopology(ctx, topo, js)); err != nil {
		a.Stop(ctx)
		return err
	}

	if err := a.answerProcessPings(nc, bus.Subjects{Prefix: topo.WithDefaults().Prefix}, replies); err != nil {
		a.Stop(ctx)
		return err
	}

	var streamOf func(string) string // nil: one message at a time
	if cfg.NATS.UseAtomicBatches() {
		streamOf = topo.StreamOf()
	}
	deadLetters := &orchestrator.DeadLetters{
		Store: st, Subjects: bus.Subjects{Prefix: topo.WithDefaults().Prefix}, OnDeadLetter: cfg.Reliability.OnDeadLetter,
		Notify: func() { a.relay.Notify() }, Metrics: metrics, Log: a.Log,
	}
	a.relay = orchestrator.NewRelay(orchestrator.RelayConfig{
		Subjects:    a.relaySubjects(bus.Subjects{Prefix: topo.WithDefaults().Prefix}),
		StreamOf:    streamOf,
		Streams:     topo.StreamOf(),
		DeadLetters: deadLetters,
		MaxAttempts: cfg.Reliability.OutboxMaxAttempts,
		Logger:      a.Log.With().Str("service", "relay").Logger(),
	}, st, js)
	if d, ok := st.(interface{ SetOutboxDirect(*store.OutboxDirect) }); ok {
		// Rows this relay may publish go out as their transaction commits.
		d.SetOutboxDirect(a.relay.Direct())
	}
	a.relay.Start(ctx)
	a.stopping = append(a.stopping, func(ctx context.Context) error { a.relay.Stop(ctx); return nil })
	available := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return st.Ping(ctx)
	}
	budgets := &orchestrator.Budgets{Store: st, Subjects: bus.Subjects{Prefix: topo.WithDefaults().Prefix}, Notify: a.relay.Notify}
	metrics.OutboxLag(func(ctx context.Context) (time.Time, error) {
		msgs, err := st.OutboxListUnsent(ctx, 1)
		if err != nil || len(msgs) == 0 {
			return time.Time{}, err
		}
		return msgs[0].CreatedAt, nil
	})

	if a.Orchestrator {
		planner, err := llm.Planner(cfg, models)
		if err != nil {
			a.Stop(ctx)
			return err
		}
		a.orch = orchestrator.New(orchestrator.Config{
			Planner: planner, Metrics: metrics, Secrets: configSecrets(cfg, a.Dashboard), Replies: replies,
			Prefix: cfg.NATS.Prefix, MaxRevisions: cfg.MaxRevisions(), NoRevisions: cfg.MaxRevisions() == 0,
			Notify: a.relay.Notify, OnDeadLetter: cfg.Reliability.OnDeadLetter, Logger: a.Log,
			Prices: cfg.Prices(), DefaultBudget: cfg.Budgets.MaxTokensPerJob, MaxImageBytes: cfg.Models.MaxImageBytes,
			Reconcile: orchestrator.ReconcileConfig{Interval: reconcile, StaleAfter: staleAfter},
			Watch:     orchestrator.WatchConfig{Topology: &topo},
		}, st, nc, js)
		if err := a.orch.Start(ctx); err != nil {
			a.Stop(ctx)
			return err
		}
		a.stopping = append(a.stopping, a.orch.Stop)
	}
	if a.Review {
		reviewer, err := llm.Reviewer(cfg, models)
		if err != nil {
			a.Stop(ctx)
			return err
		}
		a.rev = review.NewService(review.Config{
			Reviewer: reviewer, Metrics: metrics, Replies: replies,
			Prefix: cfg.NATS.Prefix, Policies: cfg.Policies(), Notify: a.relay.Notify, Logger: a.Log,
			RecordDeadLetter: deadLetters.Record, Available: available,
			Limits: review.Limits{MaxOutputBytes: cfg.Review.MaxOutputBytes, MaxFileBytes: cfg.Review.MaxFileBytes, Secrets: configSecrets(cfg, a.Dashboard)},
		}, st, nc, js)
		if err := a.rev.Start(ctx); err != nil {
			a.Stop(ctx)
			return err
		}
		a.stopping = append(a.stopping, a.rev.Stop)
		if a.HTTPAddr != "" {
			if err := a.startDashboard(cfg, st, nc, js); err != nil {
				a.Stop(ctx)
				return err
			}
		}
	}
	for _, role := range a.Roles {
		rc := cfg.Roles[role]
		w, err := worker.New(worker.Config{
			Role: role, Concurrency: rc.Concurrency, Prefix: cfg.NATS.Prefix, Notify: a.relay.Notify, Logger: a.Log,
			RecordDeadLetter: deadLetters.Record, Backoff: rc.Backoffs(),
			Heartbeat: heartbeat(topo.WithDefaults().AckWait), BudgetSpent: budgets.Spent, Available: available, Metrics: metrics,
			Replies: replies,
		}, st, js, a.model(role, models))
		if err != nil {
			a.Stop(ctx)
			return err
		}
		if err := w.Start(ctx); err != nil {
			a.Stop(ctx)
			return err
		}
		a.workers = append(a.workers, w)
		a.stopping = append(a.stopping, w.Stop)
	}
	// Ready once every service runs, and while its dependencies answer.
	a.Ops.SetCheck("nats", func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("not connected (%s)", nc.Status())
		}
		return nil
	})
	a.Ops.SetCheck("store", st.Ping)
	a.Ops.SetCheck("streams", func(ctx context.Context) error { return topo.Check(ctx, js) })
	a.watchConfig(ctx)
	return nil
}

// answerProcessPings answers <prefix>.processes.ping with who this process
// is and the CPU and memory it has used (troupe bench against a running
// Troupe reads them). The subscription ends when the connection drains.
func (a *App) answerProcessPings(nc *nats.Conn, subj bus.Subjects, replies bus.Replies) error {
	host, _ := os.Hostname()
	me := schemas.ProcessInfo{ID: uuid.NewString(), Host: host, PID: os.Getpid(), Services: a.services(), StartedAt: time.Now().UTC()}
	_, err := nc.Subscribe(subj.ProcessesPing(), func(m *nats.Msg) {
		if !replies.Allowed(m.Subject, m.Reply) {
			return
		}
		info := me
		info.CPUSeconds, info.RSSMB, info.PeakRSSMB = telemetry.ProcessCPUSeconds(), telemetry.RSSMB(), telemetry.PeakRSSMB()
		// The kernel's peak and /proc's now are counted apart, and can
		// disagree by a few pages.
		info.PeakRSSMB = max(info.PeakRSSMB, info.RSSMB)
		data, _ := json.Marshal(info)
		_ = m.Respond(data)
	})
	if err != nil {
		return fmt.Errorf("answering process pings: %w", err)
	}
	return nil
}

// services names the services the process runs, as NATS users of a
// least-privilege deployment name them.
func (a *App) services() []string {
	if a.Embedded {
		return []string{"dev"}
	}
	var out []string
	if a.Orchestrator {
		out = append(out, bus.UserOrchestrator)
	}
	if a.Review {
		out = append(out, bus.UserReview)
	}
	for _, role := range a.Roles {
		out = append(out, bus.WorkerUser(role))
	}
	return out
}

// ensureTopology creates or updates the streams and consumers. A NATS
// user that may not (every service's but the orchestrator's, under
// troupe nats-config) checks instead that the streams and the consumers
// this process binds exist, and waits until the orchestrator made them.
func (a *App) ensureTopology(ctx context.Context, topo bus.Topology, js jetstream.JetStream) func() error {
	var denied error
	var own []bus.ConsumerRef
	if a.Orchestrator {
		own = append(own, bus.ConsumerRef{Stream: bus.StreamEvents, Consumer: bus.ConsumerOrchestrator},
			bus.ConsumerRef{Stream: bus.StreamAdvisories, Consumer: bus.ConsumerSweeper})
	}
	if a.Review {
		own = append(own, bus.ConsumerRef{Stream: bus.StreamReview, Consumer: bus.ConsumerReview})
	}
	for _, role := range a.Roles {
		own = append(own, bus.ConsumerRef{Stream: bus.StreamTasks, Consumer: bus.WorkerConsumer(role)})
	}
	return func() error {
		if denied == nil {
			err := topo.Ensure(ctx, js)
			if !bus.IsDenied(err) {
				return err
			}
			denied = err
			a.Log.Info().Str("refused", err.Error()).Msg("this NATS user may not create or update streams and consumers: " +
				"checking that the ones this process uses exist instead (the orchestrator's user creates them)")
		}
		if err := topo.CheckConsumers(ctx, js, own...); err != nil {
			return fmt.Errorf("%w; this NATS user may not create it: the orchestrator does, when it starts", err)
		}
		return nil
	}
}

// relaySubjects are the subjects of the outbox rows this process's relay
// claims: those its services write, which their NATS users may publish.
// The orchestrator's relay claims every row (nil), so a row nobody else
// may publish still goes out.
func (a *App) relaySubjects(subj bus.Subjects) []string {
	if a.Orchestrator || a.Embedded {
		return nil
	}
	var out []string
	if a.Review {
		out = append(out, subj.ReviewSubjects()...)
	}
	for _, role := range a.Roles {
		out = append(out, subj.WorkerSubjects(role)...)
	}
	return out
}

// startDashboard serves the dashboard beside the review service.
func (a *App) startDashboard(cfg config.Config, st store.Store, nc *nats.Conn, js jetstream.JetStream) error {
	d, err := dashboard.New(dashboard.Config{
		Prefix: cfg.NATS.Prefix, Roles: schemas.Roles, Token: a.Dashboard.Token, Users: a.Dashboard.Users, SessionKey: a.Dashboard.SessionKey,
		Reviewer: a.Dashboard.Reviewer, Prices: cfg.Prices(), Logger: a.Log,
		TrustedProxies: a.Dashboard.TrustedProxies, Metrics: a.Ops.Metrics,
		Replies: bus.Replies{Prefixes: cfg.NATS.ReplyPrefixes, Log: a.Log, Refused: a.Ops.Metrics.ReplyRefused},
		Limits:  review.Limits{MaxOutputBytes: cfg.Review.MaxOutputBytes, MaxFileBytes: cfg.Review.MaxFileBytes, Secrets: configSecrets(cfg, a.Dashboard)},
	}, st, nc, js)
	if err != nil {
		return err
	}
	addr, err := d.Listen(a.HTTPAddr)
	if err != nil && a.HTTPFallback && isAddrInUse(err) {
		host, _, _ := net.SplitHostPort(a.HTTPAddr)
		addr, err = d.Listen(net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return err
	}
	a.HTTPAddr = addr
	a.stopping = append(a.stopping, d.Close)
	a.Log.Info().Str("addr", addr).Msg("dashboard listening")
	return nil
}

// Stop stops the services in the reverse order of their start: workers
// first, then review and the orchestrator, the relay, the store, NATS.
func (a *App) Stop(ctx context.Context) {
	for i := len(a.stopping) - 1; i >= 0; i-- {
		if err := a.stopping[i](ctx); err != nil {
			a.Log.Warn().Err(err).Msg("stopping")
		}
	}
	a.stopping = nil
}

// retry runs fn until it succeeds, waiting longer after each failure (up
// to 10s), until ctx ends.
func retry(ctx context.Context, log zerolog.Logger, what string, fn func() error) error {
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				log.Info().Int("attempts", attempt).Msg(what + ": done")
			}
			return nil
		}
		if errors.Is(err, store.ErrSchemaTooNew) {
			return err // waiting will not help
		}
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg(what + " failed; retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %v)", what, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// drain drains the connection and waits, within ctx, until it closed.
func drain(ctx context.Context, nc *nats.Conn) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return err
	}
	select {
	case <-closed:
	case <-ctx.Done():
		nc.Close()
	}
	return nil
}

// warnUnbuilt says which settings are read but not acted on yet, rather
// than ignoring them silently.
func warnUnbuilt(log zerolog.Logger, cfg config.Config) {
	if len(cfg.Models.Providers) == 0 {
		log.Info().Msg("no model configured: every role runs on the built-in offline model")
	}
}

// heartbeat is how often a worker tells JetStream a task is alive: well
// within AckWait.
func heartbeat(ackWait time.Duration) time.Duration {
	return min(5*time.Second, ackWait/3)
}

// model is the model a role's worker calls: from the configuration, or
// the offline model wrapped as the simulation flags and fault-injection
// switches ask (Models).
func (a *App) model(role string, configured map[string]llm.Model) llm.Model {
	if a.Models != nil {
		if m := a.Models(role); m != nil {
			return m
		}
	}
	return configured[role]
}

func openStore(ctx context.Context, url string) (store.Store, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") || strings.Contains(url, "=") {
		return postgres.Open(ctx, url)
	}
	path := strings.TrimPrefix(url, "sqlite://")
	if strings.Contains(path, "://") {
		return nil, fmt.Errorf("database url %s: use postgres://… for PostgreSQL or a file path for SQLite", config.RedactDSN(url))
	}
	if dir := filepath.Dir(path); dir != "" {
		// The database holds every brief and output: directories made
		// for it are its owner's only, like the file (sqlite.Open).
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	return sqlite.Open(ctx, path)
}

// makeDataDir creates troupe dev's data directory, for its owner only
// (0700): it holds the database and the NATS store. A directory made by an
// older troupe (0755) keeps its mode, with a warning saying how to close it.
func makeDataDir(dir string, log zerolog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		log.Warn().Str("dir", dir).Str("mode", fmt.Sprintf("%04o", perm)).
			Msg("the data directory is open to other users of this machine; chmod 700 it")
	}
	return nil
}

// waitStop blocks until ctx ends, then stops a within grace.
func waitStop(ctx context.Context, a *App, grace time.Duration) {
	<-ctx.Done()
	a.Log.Info().Dur("grace", grace).Msg("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	a.Stop(sctx)
}
