package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// benchFlags are troupe bench's settings.
type benchFlags struct {
	jobs        int
	submitters  int
	rate        float64
	batch       int
	role        string
	concurrency int
	latency     time.Duration
	jitter      time.Duration
	databaseURL string
	natsURL     string
	embedded    bool
	baseline    int
	timeout     time.Duration
	json        bool
	keep        bool
	cpuProfile  string
	natsSync    string
}

// benchReport is what troupe bench prints (--json: as JSON).
type benchReport struct {
	Mode           string  `json:"mode"`
	Store          string  `json:"store"`
	Jobs           int     `json:"jobs"`
	Role           string  `json:"role"`
	Concurrency    int     `json:"worker_concurrency"`
	ModelLatencyMS float64 `json:"model_latency_ms"`
	ModelJitterMS  float64 `json:"model_jitter_ms"`
	Rate           float64 `json:"rate,omitempty"` // jobs a second asked for; 0: unpaced

	SubmitSeconds float64 `json:"submit_seconds"`
	SubmitRate    float64 `json:"submit_rate"` // jobs per second
	TotalSeconds  float64 `json:"total_seconds"`
	JobsPerSecond float64 `json:"jobs_per_second"` // submitted → promoted, end to end
	// SteadyPerSecond leaves out the ramp up and the tail: the jobs that
	// ended between the first tenth's last end and the last tenth's first.
	SteadyPerSecond float64 `json:"steady_jobs_per_second"`
	// IdealPerSecond is what a worker could do with the simulated model:
	// its concurrency over the model's mean latency (0 offline).
	IdealPerSecond float64 `json:"ideal_jobs_per_second,omitempty"`

	Dispatch *quantiles `json:"dispatch_ms,omitempty"` // task stored in JetStream → worker start
	// DispatchFrom says where Dispatch came from when it is not every
	// task's own figure: a running Troupe's workers' histograms.
	DispatchFrom string     `json:"dispatch_from,omitempty"`
	EndToEnd     quantiles  `json:"end_to_end_ms"` // submit reply → job_done
	Raw          *quantiles `json:"raw_jetstream_ms,omitempty"`
	RawRatio     float64    `json:"dispatch_p99_over_raw_p99,omitempty"`
	InFlight     *inFlight  `json:"in_flight,omitempty"`
	CPU          float64    `json:"cpu_seconds,omitempty"`
	PeakRSSMB    float64    `json:"peak_rss_mb,omitempty"`
	Process      string     `json:"process,omitempty"`
	// Processes are a running Troupe's processes, as they answered
	// <prefix>.processes.ping before and after the run.
	Processes []processUse `json:"processes,omitempty"`
	// GroupCommit is what the SQLite store's group commit did in the run.
	GroupCommit *sqlite.GroupCommitStats `json:"group_commit,omitempty"`
	// TxGroup is what the PostgreSQL store's grouping of write-only
	// transactions did in the run.
	TxGroup *postgres.TxGroupStats `json:"tx_group,omitempty"`
	// Postgres is what PostgreSQL counted for the database in the run.
	Postgres *pgCounts `json:"postgres,omitempty"`

	Done, Failed, Other int
	Promoted            int      `json:"promoted_outputs"`
	ExactlyOnce         bool     `json:"exactly_once"`
	Problems            []string `json:"problems,omitempty"`
	// Notes say what could not be measured; unlike problems they do not
	// fail the run.
	Notes []string `json:"notes,omitempty"`
}

type quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type inFlight struct {
	Max  int     `json:"max"`
	Mean float64 `json:"mean"` // over the samples taken while jobs ran
	// Workers is how many of a running Troupe's workers of the role
	// answered the samples; Max is theirs, Mean their mean.
	Workers int `json:"workers,omitempty"`
}

func quantilesOf(ds []time.Duration) quantiles {
	if len(ds) == 0 {
		return quantiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := min(len(s)-1, int(p*float64(len(s))))
		return float64(s[i]) / float64(time.Millisecond)
	}
	return quantiles{N: len(s), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(s[len(s)-1]) / float64(time.Millisecond)}
}

func runBench(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench", "bench [--jobs N] [--embedded | --nats-url URL] [--database-url URL] [--model-latency D] [--json]")
	var b benchFlags
	var c common
	c.registerLevel(fs, "error")
	fs.IntVar(&b.jobs, "jobs", 2000, "single-task jobs to submit")
	fs.IntVar(&b.submitters, "submitters", 8, "concurrent submitters")
	fs.Float64Var(&b.rate, "rate", 0, "submit at most this many jobs a second (0: as fast as they are taken), to measure latency below saturation")
	fs.IntVar(&b.batch, "batch", 1, "jobs per submission (more than 1: troupe.api.jobs.submit_batch)")
	fs.StringVar(&b.role, "role", "pm", "the role of every job's one task")
	fs.IntVar(&b.concurrency, "worker-concurrency", 64, "tasks the role's worker runs at once (embedded)")
	fs.DurationVar(&b.latency, "model-latency", 0, "simulated model latency per call (embedded; 0: the offline model at full speed)")
	fs.DurationVar(&b.jitter, "model-jitter", 0, "and up to this much more, at random")
	fs.StringVar(&b.databaseURL, "database-url", "", "the store: postgres://… (default: SQLite in a temporary directory when embedded)")
	fs.BoolVar(&b.embedded, "embedded", true, "run Troupe in this process on an embedded NATS server; false needs --nats-url of a running Troupe")
	fs.IntVar(&b.baseline, "baseline", 0, "messages for the raw JetStream baseline (default: as many as jobs, up to 20000; negative: skip)")
	fs.DurationVar(&b.timeout, "timeout", 10*time.Minute, "give up when the jobs have not ended by then")
	fs.BoolVar(&b.json, "json", false, "print the report as JSON")
	fs.BoolVar(&b.keep, "keep", false, "keep the embedded data directory")
	fs.StringVar(&b.cpuProfile, "cpuprofile", "", "write a CPU profile of the load (after the baseline) to this file")
	fs.StringVar(&b.natsSync, "nats-sync", "always", "embedded JetStream: fsync every write (always, as troupe dev) or periodically (periodic)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	b.natsURL = c.natsURL
	if b.natsURL != "" {
		b.embedded = false
	}
	if !schemas.IsRole(b.role) {
		return fmt.Errorf("--role: %q is not a role; the roles are %s", b.role, strings.Join(schemas.Roles, ", "))
	}
	if b.jobs <= 0 || b.submitters <= 0 || b.batch <= 0 || b.batch > batchLimit {
		return fmt.Errorf("--jobs and --submitters must be positive, --batch between 1 and %d", batchLimit)
	}
	if b.rate < 0 {
		return fmt.Errorf("--rate: %v is negative", b.rate)
	}
	log, err := c.logger(e.stderr)
	if err != nil {
		return err
	}
	rep := benchReport{Jobs: b.jobs, Role: b.role, Concurrency: b.concurrency,
		ModelLatencyMS: ms(b.latency), ModelJitterMS: ms(b.jitter), Rate: b.rate}

	var (
		nc       *nats.Conn
		js       jetstream.JetStream
		st       store.Store
		dispatch = &latencies{}
		flight   = &flightMeter{}
		stop     = func() {}
	)
	cfg, _, err := c.load()
	if err != nil {
		return err
	}
	if b.embedded {
		dir, err := os.MkdirTemp("", "troupe-bench-")
		if err != nil {
			return err
		}
		if !b.keep {
			defer os.RemoveAll(dir)
		}
		cfg.Database.URL = b.databaseURL
		if b.natsSync != "always" && b.natsSync != "periodic" {
			return fmt.Errorf("--nats-sync: %q is neither always nor periodic", b.natsSync)
		}
		cfg.NATS.Sync = b.natsSync
		rc := cfg.Roles[b.role]
		rc.Concurrency, rc.Review = b.concurrency, "rules"
		if cfg.Roles == nil {
			cfg.Roles = map[string]config.Role{}
		}
		cfg.Roles[b.role] = rc
		metrics := telemetry.NewMetrics()
		metrics.SetHooks(telemetry.Hooks{
			Dispatch: func(role string, d time.Duration) { dispatch.add(d) },
			InFlight: func(role string, delta float64) { flight.add(int64(delta)) },
		})
		ops := telemetry.NewOps()
		ops.Metrics = metrics
		a := &App{Config: cfg, Log: log, DataDir: filepath.Join(dir, "data"), Embedded: true, Orchestrator: true, Review: true,
			Roles: []string{b.role}, Ops: ops, Models: func(string) llm.Model {
				if b.latency == 0 && b.jitter == 0 {
					return nil
				}
				return &llm.Simulated{Model: llm.NewOffline(), Latency: b.latency, Jitter: b.jitter}
			}}
		if err := a.Start(ctx); err != nil {
			return err
		}
		stop = func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a.Stop(sctx)
		}
		defer func() { stop() }()
		rep.Mode = "embedded (JetStream sync " + b.natsSync + ")"
		rep.Store = "SQLite"
		if b.databaseURL != "" {
			rep.Store = "PostgreSQL"
		}
		if nc, js, err = bus.Connect(a.NATSURL, "troupe-bench", log); err != nil {
			return err
		}
		st = a.store
	} else {
		if b.natsURL == "" {
			return errors.New("--embedded=false needs --nats-url of a running Troupe")
		}
		// The running Troupe's server, with the credentials and TLS the
		// configuration (and TROUPE_NATS_*) gives.
		opts, err := bus.ConnectOptions(cfg.NATS)
		if err != nil {
			return err
		}
		if nc, js, err = bus.Connect(b.natsURL, "troupe-bench", log, opts...); err != nil {
			return err
		}
		rep.Mode, rep.Store, rep.Concurrency = "remote "+config.RedactDSN(b.natsURL), "remote", 0
		if b.databaseURL != "" {
			if st, err = openStore(ctx, b.databaseURL); err != nil {
				return err
			}
			defer st.Close()
		}
	}
	defer nc.Close()
	subj := bus.Subjects{Prefix: cfg.NATS.Prefix}

	// The baseline first, on an idle server: raw JetStream with the task
	// stream's settings.
	if n := b.baselineCount(); n > 0 {
		q, err := rawJetStream(ctx, js, n)
		if err != nil {
			return fmt.Errorf("raw JetStream baseline: %w", err)
		}
		rep.Raw = &q
	}

	// Follow the jobs' ends before submitting.
	var (
		mu        sync.Mutex
		submitted = map[string]time.Time{}
		ended     = map[string]string{}
		e2e       []time.Duration
		early     = map[string]time.Time{} // ends seen before the submit reply
		endTimes  []time.Time
	)
	allDone := make(chan struct{})
	var once sync.Once
	end := func(id, status string, at time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if _, seen := ended[id]; seen {
			return
		}
		t0, ok := submitted[id]
		if !ok {
			early[id] = at
			ended[id] = status
			endTimes = append(endTimes, at)
			return
		}
		ended[id] = status
		endTimes = append(endTimes, at)
		e2e = append(e2e, at.Sub(t0))
		if len(ended) == b.jobs && len(submitted) == b.jobs {
			once.Do(func() { close(allDone) })
		}
	}
	for _, kind := range []string{schemas.EventJobDone, schemas.EventJobFailed, schemas.EventJobCancelled, schemas.EventJobBudgetExceeded} {
		status := map[string]string{schemas.EventJobDone: schemas.JobDone, schemas.EventJobFailed: schemas.JobFailed,
			schemas.EventJobCancelled: schemas.JobCancelled, schemas.EventJobBudgetExceeded: schemas.JobBudgetExceeded}[kind]
		sub, err := nc.Subscribe(subj.Event("*", kind), func(m *nats.Msg) {
			var ev schemas.Event
			if json.Unmarshal(m.Data, &ev) == nil {
				end(ev.JobID, status, time.Now())
			}
		})
		if err != nil {
			return err
		}
		_ = sub.SetPendingLimits(-1, -1)
		defer sub.Unsubscribe()
	}

	// The check counts what this run adds to the store.
	var doneBefore, promotedBefore int
	if st != nil {
		counts, err := st.JobCountByStatus(ctx)
		if err != nil {
			return err
		}
		if doneBefore = counts[schemas.JobDone]; b.embedded && b.databaseURL != "" && len(counts) > 0 {
			fmt.Fprintf(e.stderr, "troupe bench: the database already holds %d job(s); the check counts only this run's\n", sum(counts))
		}
		if promotedBefore, err = st.OutputCount(ctx, schemas.OutputPromoted, b.role); err != nil {
			return err
		}
	}

	// A running Troupe is measured by its pings: where its processes and
	// workers stand now, their tasks in flight every 100 ms while the jobs
	// run, and where they stand at the end.
	var meter *remoteMeter
	if !b.embedded {
		if meter, err = startRemoteMeter(ctx, nc, subj, b.role); err != nil {
			return fmt.Errorf("asking the running Troupe's processes and workers: %w", err)
		}
	}

	progress := newProgress(e.stderr, b.jobs, b.json)
	sampling := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-sampling:
				return
			case <-t.C:
				flight.sample()
				if meter != nil && i%10 == 0 {
					meter.sample()
				}
				mu.Lock()
				done := len(ended)
				mu.Unlock()
				progress.update(done)
			}
		}
	}()

	if b.cpuProfile != "" {
		f, err := os.Create(b.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	grouped, _ := st.(interface {
		GroupCommitStats() sqlite.GroupCommitStats
	})
	var group0 sqlite.GroupCommitStats
	if grouped != nil {
		group0 = grouped.GroupCommitStats()
	}
	txGrouped, _ := st.(interface{ TxGroupStats() postgres.TxGroupStats })
	var txGroup0 postgres.TxGroupStats
	if txGrouped != nil {
		txGroup0 = txGrouped.TxGroupStats()
	}
	// PostgreSQL's counts, when it is the embedded Troupe's store (a
	// running Troupe's backends would report theirs late): read with every
	// backend's counts reported, before and after.
	pg, _ := st.(*postgres.Store)
	if !b.embedded {
		pg = nil
	}
	var pg0 pgCounts
	if pg != nil {
		var err error
		if pg0, err = readPGCounts(ctx, pg, false); err != nil {
			log.Debug().Err(err).Msg("reading pg_stat_database")
			pg = nil
		}
	}
	cpu0 := telemetry.ProcessCPUSeconds()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.submitters)
	for range b.submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := int(next.Add(int64(b.batch))) - b.batch
				if first >= b.jobs {
					return
				}
				n := min(b.batch, b.jobs-first)
				// End to end starts when the submission is sent (a job can
				// end before its reply arrives), or was due to be sent:
				// submitters that fall behind the rate are the system's
				// delay too.
				now := time.Now()
				if b.rate > 0 {
					// Job first is due first/rate seconds after the start.
					due := start.Add(time.Duration(float64(first) / b.rate * float64(time.Second)))
					select {
					case <-time.After(time.Until(due)):
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					}
					now = due
				}
				ids, err := submitBenchJobs(ctx, nc, subj, b.role, first, n)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, id := range ids {
					submitted[id] = now
					if at, ok := early[id]; ok {
						e2e = append(e2e, at.Sub(now))
						delete(early, id)
					}
				}
				if len(ended) == b.jobs && len(submitted) == b.jobs {
					once.Do(func() { close(allDone) })
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		close(sampling)
		return fmt.Errorf("submitting: %w", err)
	}
	rep.SubmitSeconds = time.Since(start).Seconds()
	rep.SubmitRate = float64(b.jobs) / rep.SubmitSeconds

	select {
	case <-allDone:
	case <-time.After(b.timeout):
		rep.Problems = append(rep.Problems, fmt.Sprintf("only %d of %d jobs ended within %s", len(ended), b.jobs, b.timeout))
	case <-ctx.Done():
		close(sampling)
		return ctx.Err()
	}
	rep.TotalSeconds = time.Since(start).Seconds()
	close(sampling)
	progress.finish()
	if meter != nil {
		meter.finish(ctx, &rep)
		if rep.Raw != nil && rep.Raw.P99 > 0 && rep.Dispatch != nil {
			rep.RawRatio = rep.Dispatch.P99 / rep.Raw.P99
		}
	}
	mu.Lock()
	rep.EndToEnd = quantilesOf(e2e)
	done := 0
	for _, s := range ended {
		switch s {
		case schemas.JobDone:
			done++
		case schemas.JobFailed:
			rep.Failed++
		default:
			rep.Other++
		}
	}
	rep.Done = done
	mu.Unlock()
	rep.JobsPerSecond = float64(done) / rep.TotalSeconds
	rep.SteadyPerSecond = steadyRate(endTimes)
	if mean := b.latency + b.jitter/2; mean > 0 {
		rep.IdealPerSecond = float64(b.concurrency) / mean.Seconds()
	}
	if b.embedded {
		q := quantilesOf(dispatch.all())
		rep.Dispatch = &q
		rep.InFlight = &inFlight{Max: int(flight.max.Load()), Mean: flight.mean()}
		rep.CPU = telemetry.ProcessCPUSeconds() - cpu0
		rep.PeakRSSMB = telemetry.PeakRSSMB()
		rep.Process = "one process: Troupe (every service, embedded NATS and store) and the load generator"
		if rep.Raw != nil && rep.Raw.P99 > 0 {
			rep.RawRatio = q.P99 / rep.Raw.P99
		}
		if grouped != nil {
			g := grouped.GroupCommitStats()
			rep.GroupCommit = &sqlite.GroupCommitStats{
				Groups: g.Groups - group0.Groups, Transactions: g.Transactions - group0.Transactions, Alone: g.Alone - group0.Alone,
				Busy: g.Busy - group0.Busy,
			}
		}
		if txGrouped != nil {
			g := txGrouped.TxGroupStats()
			rep.TxGroup = &postgres.TxGroupStats{
				Transactions: g.Transactions - txGroup0.Transactions, Commits: g.Commits - txGroup0.Commits, Again: g.Again - txGroup0.Again,
			}
		}
	}
	// Exactly once: every job done, with exactly one promoted output.
	if st != nil {
		counts, err := st.JobCountByStatus(ctx)
		if err != nil {
			return err
		}
		promoted, err := st.OutputCount(ctx, schemas.OutputPromoted, b.role)
		if err != nil {
			return err
		}
		rep.Promoted = promoted - promotedBefore
		newDone := counts[schemas.JobDone] - doneBefore
		rep.ExactlyOnce = newDone == b.jobs && rep.Promoted == b.jobs && done == b.jobs
		if !rep.ExactlyOnce {
			rep.Problems = append(rep.Problems, fmt.Sprintf("jobs done %d, promoted outputs %d, of %d jobs", newDone, rep.Promoted, b.jobs))
		}
	}
	if pg != nil {
		pg1, err := readPGCounts(ctx, pg, pgLocal(b.databaseURL))
		if err != nil {
			log.Debug().Err(err).Msg("reading pg_stat_database")
		} else {
			d := pg1.minus(pg0)
			rep.Postgres = &d
		}
	}
	if !b.embedded && st == nil {
		rep.Problems = append(rep.Problems, "no --database-url: promotions were not counted, only job_done events")
	}
	if done != b.jobs {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d of %d jobs done (%d failed, %d other)", done, b.jobs, rep.Failed, rep.Other))
	}
	if b.json {
		if err := printJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		printBench(e.stdout, rep)
	}
	if len(rep.Problems) > 0 {
		return exitError{code: 1}
	}
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (b benchFlags) baselineCount() int {
	switch {
	case b.baseline < 0 || !b.embedded && b.baseline == 0:
		return 0
	case b.baseline > 0:
		return b.baseline
	default:
		return min(b.jobs, 20000)
	}
}

// submitBenchJobs submits n single-task jobs and returns their ids.
func submitBenchJobs(ctx context.Context, nc *nats.Conn, subj bus.Subjects, role string, first, n int) ([]string, error) {
	sub := func(i int) schemas.Submission {
		return schemas.Submission{Title: fmt.Sprintf("bench job %d", first+i),
			Tasks: []schemas.PlanTask{{Key: "only", Role: role, Instructions: "Benchmark task."}}}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if n == 1 {
		var job schemas.Job
		if err := bus.Request(ctx, nc, subj.API("jobs.submit"), sub(0), &job); err != nil {
			return nil, err
		}
		return []string{job.ID}, nil
	}
	req := schemas.SubmissionBatch{Jobs: make([]json.RawMessage, n)}
	for i := range n {
		raw, err := json.Marshal(sub(i))
		if err != nil {
			return nil, err
		}
		req.Jobs[i] = raw
	}
	var reply schemas.SubmissionBatchReply
	if err := bus.Request(ctx, nc, subj.API("jobs.submit_batch"), req, &reply); err != nil {
		return nil, err
	}
	ids := make([]string, len(reply.Jobs))
	for i, j := range reply.Jobs {
		ids[i] = j.ID
	}
	return ids, nil
}

// rawJetStream measures publish → consume → ack on a stream with the task
// stream's settings on the same server: the floor Troupe's dispatch
// latency is compared with.
func rawJetStream(ctx context.Context, js jetstream.JetStream, n int) (quantiles, error) {
	tasks, err := js.Stream(ctx, bus.StreamTasks)
	if err != nil {
		return quantiles{}, err
	}
	cfg := tasks.CachedInfo().Config
	cfg.Name, cfg.Subjects, cfg.Description = "TROUPE_BENCH_RAW", []string{"troupe-bench.raw"}, "troupe bench: the raw JetStream baseline"
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return quantiles{}, err
	}
	defer func() { _ = js.DeleteStream(context.WithoutCancel(ctx), cfg.Name) }()
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
	if err != nil {
		return quantiles{}, err
	}
	lat := make([]time.Duration, 0, n)
	got := make(chan struct{})
	var mu sync.Mutex
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		now := time.Now()
		_ = m.Ack()
		if err != nil {
			return
		}
		mu.Lock()
		lat = append(lat, now.Sub(md.Timestamp))
		if len(lat) == n {
			close(got)
		}
		mu.Unlock()
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		return quantiles{}, err
	}
	defer cc.Stop()
	// One message at a time, each published and acknowledged by the
	// server before the next: the latency of the path, not of a queue.
	payload := make([]byte, 512)
	for i := range n {
		if _, err := js.Publish(ctx, "troupe-bench.raw", payload); err != nil {
			return quantiles{}, fmt.Errorf("publishing %d: %w", i, err)
		}
	}
	select {
	case <-got:
	case <-time.After(2 * time.Minute):
		return quantiles{}, errors.New("the baseline's messages did not all arrive within 2 minutes")
	case <-ctx.Done():
		return quantiles{}, ctx.Err()
	}
	mu.Lock()
	defer mu.Unlock()
	return quantilesOf(lat), nil
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	ds []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

func (l *latencies) all() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ds)
}

// flightMeter follows the tasks in flight and samples them.
type flightMeter struct {
	now, max      atomic.Int64
	sum, nSamples atomic.Int64
}

func (f *flightMeter) add(delta int64) {
	v := f.now.Add(delta)
	for {
		m := f.max.Load()
		if v <= m || f.max.CompareAndSwap(m, v) {
			return
		}
	}
}

func (f *flightMeter) sample() {
	if v := f.now.Load(); v > 0 {
		f.sum.Add(v)
		f.nSamples.Add(1)
	}
}

func (f *flightMeter) mean() float64 {
	if n := f.nSamples.Load(); n > 0 {
		return float64(f.sum.Load()) / float64(n)
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// progress draws a progress bar on a terminal, and a line every few
// seconds elsewhere.
type progress struct {
	w        io.Writer
	total    int
	quiet    bool
	terminal bool
	start    time.Time
	last     time.Time
}

func newProgress(w io.Writer, total int, quiet bool) *progress {
	p := &progress{w: w, total: total, quiet: quiet, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) update(done int) {
	if p.quiet {
		return
	}
	now := time.Now()
	every := 100 * time.Millisecond
	if !p.terminal {
		every = 5 * time.Second
	}
	if now.Sub(p.last) < every {
		return
	}
	p.last = now
	const width = 30
	filled := width * done / p.total
	rate := float64(done) / now.Sub(p.start).Seconds()
	line := fmt.Sprintf("[%s%s] %d/%d jobs done, %.0f/s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, p.total, rate)
	if p.terminal {
		fmt.Fprintf(p.w, "\r%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) finish() {
	if !p.quiet && p.terminal {
		fmt.Fprintln(p.w)
	}
}

// steadyRate is the rate at which jobs ended between the 10th and the 90th
// percentile of their end times: the run without its ramp up and its tail.
// It is 0 with too few jobs to tell.
func steadyRate(ends []time.Time) float64 {
	if len(ends) < 20 {
		return 0
	}
	s := slices.Clone(ends)
	slices.SortFunc(s, func(a, b time.Time) int { return a.Compare(b) })
	lo, hi := len(s)/10, len(s)-1-len(s)/10
	d := s[hi].Sub(s[lo])
	if d <= 0 {
		return 0
	}
	return float64(hi-lo) / d.Seconds()
}

func printBench(w io.Writer, r benchReport) {
	fmt.Fprintf(w, "troupe bench: %d single-task %s jobs, %s, store %s, worker concurrency %d", r.Jobs, r.Role, r.Mode, r.Store, r.Concurrency)
	if r.ModelLatencyMS > 0 || r.ModelJitterMS > 0 {
		fmt.Fprintf(w, ", model latency %.0fms +%.0fms", r.ModelLatencyMS, r.ModelJitterMS)
	} else {
		fmt.Fprint(w, ", offline model")
	}
	if r.Rate > 0 {
		fmt.Fprintf(w, ", submitting %.0f jobs/s", r.Rate)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  submitted        %d jobs in %.2fs: %.0f jobs/s\n", r.Jobs, r.SubmitSeconds, r.SubmitRate)
	fmt.Fprintf(w, "  end to end       %d done in %.2fs: %.0f jobs/s (submitted → promoted)\n", r.Done, r.TotalSeconds, r.JobsPerSecond)
	if r.SteadyPerSecond > 0 {
		fmt.Fprintf(w, "  steady           %.0f jobs/s (between the 10th and 90th percentile of job ends)", r.SteadyPerSecond)
		if r.IdealPerSecond > 0 {
			fmt.Fprintf(w, ": %.0f%% of the ideal %.0f/s (concurrency / mean model latency)", 100*r.SteadyPerSecond/r.IdealPerSecond, r.IdealPerSecond)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  e2e latency      p50 %.1fms  p99 %.1fms  max %.1fms\n", r.EndToEnd.P50, r.EndToEnd.P99, r.EndToEnd.Max)
	if r.Dispatch != nil {
		from := ""
		if r.DispatchFrom != "" {
			from = "; from " + r.DispatchFrom
		}
		fmt.Fprintf(w, "  dispatch         p50 %.2fms  p90 %.2fms  p99 %.2fms  (task stored in JetStream → worker start%s)\n", r.Dispatch.P50, r.Dispatch.P90, r.Dispatch.P99, from)
	}
	if r.Raw != nil {
		fmt.Fprintf(w, "  raw JetStream    p50 %.2fms  p90 %.2fms  p99 %.2fms  (%d messages, same stream settings)\n", r.Raw.P50, r.Raw.P90, r.Raw.P99, r.Raw.N)
		if r.RawRatio > 0 {
			fmt.Fprintf(w, "  dispatch p99 / raw p99 = %.1f×\n", r.RawRatio)
		}
	}
	if r.InFlight != nil {
		workers := ""
		if r.InFlight.Workers > 0 {
			workers = fmt.Sprintf(", %d %s worker(s) sampled every 100ms", r.InFlight.Workers, r.Role)
		}
		fmt.Fprintf(w, "  in flight        max %d, mean %.1f per worker (concurrency %d%s)\n", r.InFlight.Max, r.InFlight.Mean, r.Concurrency, workers)
	}
	for _, p := range r.Processes {
		perJob, since := "", ""
		if r.Jobs > 0 {
			perJob = fmt.Sprintf(" (%.2f ms a job)", 1000*p.CPUSeconds/float64(r.Jobs))
		}
		if p.Whole {
			since = ", since it started during the run"
		}
		fmt.Fprintf(w, "  process          %s pid %d (%s): %.1f CPU seconds%s%s, peak RSS %.0f MB, RSS %.0f MB at the end\n",
			p.Host, p.PID, strings.Join(p.Services, ", "), p.CPUSeconds, perJob, since, p.PeakRSSMB, p.RSSMB)
	}
	if r.Process != "" {
		perJob := ""
		if r.Jobs > 0 {
			perJob = fmt.Sprintf(" (%.2f ms a job)", 1000*r.CPU/float64(r.Jobs))
		}
		fmt.Fprintf(w, "  process          %.1f CPU seconds%s, peak RSS %.0f MB (%s)\n", r.CPU, perJob, r.PeakRSSMB, r.Process)
	}
	if g := r.GroupCommit; g != nil && g.Groups > 0 {
		fmt.Fprintf(w, "  group commit     %d transactions in %d groups (%.1f a group), %d alone; the writer busy %.0f%% of the run\n",
			g.Transactions, g.Groups, float64(g.Transactions)/float64(g.Groups), g.Alone, 100*g.Busy.Seconds()/r.TotalSeconds)
	}
	if g := r.TxGroup; g != nil && g.Commits > 0 {
		fmt.Fprintf(w, "  write-only txs   %d committed in %d database transactions (%.1f a transaction), %d sent again alone\n",
			g.Transactions, g.Commits, float64(g.Transactions)/float64(g.Commits), g.Again)
	}
	if p := r.Postgres; p != nil && r.Jobs > 0 {
		n := float64(r.Jobs)
		sessions := ""
		if p.Sessions >= 0 {
			sessions = fmt.Sprintf("; %d sessions opened", p.Sessions)
		}
		fmt.Fprintf(w, "  postgres         a job: %.1f commits, %.1f rows written, %.0f buffers%s (pg_stat_database, every client of the database)\n",
			float64(p.Commits)/n, float64(p.Inserted+p.Updated+p.Deleted)/n, float64(p.Buffers)/n, sessions)
		if p.CPUSeconds > 0 {
			fmt.Fprintf(w, "  postgres CPU     %.1f CPU seconds in the backends open at the end, %.2f ms a job (/proc; at least what the run cost: not the server's background processes, nor connections closed during the run)\n",
				p.CPUSeconds, 1000*p.CPUSeconds/n)
		}
	}
	if r.ExactlyOnce {
		fmt.Fprintf(w, "  check            every job done, %d outputs promoted: each job promoted exactly once\n", r.Promoted)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note             %s\n", n)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  PROBLEM          %s\n", p)
	}
}

// pgCounts are PostgreSQL's counters of the current database
// (pg_stat_database), of every client of it. A statement outside a
// transaction commits too.
type pgCounts struct {
	Commits   int64 `json:"commits"`
	Rollbacks int64 `json:"rollbacks"`
	Buffers   int64 `json:"buffers"` // pages hit in shared buffers or read
	Inserted  int64 `json:"rows_inserted"`
	Updated   int64 `json:"rows_updated"`
	Deleted   int64 `json:"rows_deleted"`
	Sessions  int64 `json:"sessions"` // connections opened; -1: not counted (before PostgreSQL 14)
	// CPUSeconds is the CPU time of the pool's backends open at the end
	// of the run (from /proc), when the server is on this machine; 0 when
	// it could not be read. A lower bound: background processes and
	// connections closed during the run are not in it.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
}

func readPGCounts(ctx context.Context, st *postgres.Store, local bool) (pgCounts, error) {
	var c pgCounts
	if local {
		// The backends end in FlushStats: read them before. They all
		// started after the previous reading, which ended the ones
		// before, so their whole CPU time is this run's.
		c.CPUSeconds = backendCPU(ctx, st)
	}
	if err := st.FlushStats(ctx); err != nil {
		return pgCounts{}, err
	}
	// sessions is counted since PostgreSQL 14: -1 before.
	err := st.DB().QueryRowContext(ctx, `SELECT xact_commit, xact_rollback, blks_hit + blks_read, tup_inserted, tup_updated, tup_deleted,
			COALESCE((to_jsonb(d) ->> 'sessions')::bigint, -1)
		FROM pg_stat_database d WHERE datname = current_database()`).Scan(&c.Commits, &c.Rollbacks, &c.Buffers, &c.Inserted, &c.Updated, &c.Deleted, &c.Sessions)
	return c, err
}

func (c pgCounts) minus(o pgCounts) pgCounts {
	if c.Sessions < 0 || o.Sessions < 0 {
		c.Sessions, o.Sessions = -1, 0
	}
	return pgCounts{
		Commits: c.Commits - o.Commits, Rollbacks: c.Rollbacks - o.Rollbacks, Buffers: c.Buffers - o.Buffers,
		Inserted: c.Inserted - o.Inserted, Updated: c.Updated - o.Updated, Deleted: c.Deleted - o.Deleted, Sessions: c.Sessions - o.Sessions,
		CPUSeconds: c.CPUSeconds,
	}
}

// pgLocal reports whether the database at url is on this machine: a
// loopback host or a Unix socket, whose backends /proc shows.
func pgLocal(url string) bool {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return false
	}
	h := cfg.Host
	if strings.HasPrefix(h, "/") || h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// backendCPU sums the CPU time of the pool's backends from
// /proc/<pid>/stat (utime and stime, in clock ticks of 1/100 s), or
// returns 0 when one cannot be read or is not the backend the server
// names: not a postgres process, or one started at another time (a server
// in a container, whose process ids are not this machine's).
func backendCPU(ctx context.Context, st *postgres.Store) float64 {
	backends, err := st.Backends(ctx)
	if err != nil || len(backends) == 0 {
		return 0
	}
	boot, err := bootTime()
	if err != nil {
		return 0
	}
	var ticks int64
	for _, b := range backends {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.PID))
		if err != nil {
			return 0
		}
		// pid (comm) state ppid …: utime, stime and starttime are fields
		// 14, 15 and 22, counted after the parenthesised command name,
		// which may hold spaces.
		stat := string(raw)
		open, end := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
		if open < 0 || end < open || !strings.HasPrefix(stat[open+1:end], "postgres") {
			return 0
		}
		f := strings.Fields(stat[end+1:])
		if len(f) < 20 {
			return 0
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		started, err3 := strconv.ParseInt(f[19], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return 0
		}
		at := boot.Add(time.Duration(started) * 10 * time.Millisecond)
		if d := at.Sub(b.Start); d > 2*time.Second || d < -2*time.Second {
			return 0
		}
		ticks += utime + stime
	}
	return float64(ticks) / 100
}

// bootTime is when this machine booted, from /proc/stat's btime.
func bootTime() (time.Time, error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, err
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, err
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("no btime in /proc/stat")
}
