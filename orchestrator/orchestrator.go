// Package orchestrator is Troupe's main agent: it takes jobs on the API,
// plans them into role-tagged tasks, publishes a task when every task it
// depends on is promoted, revises rejected tasks with the reviewer's
// feedback, and decides when a job is done or failed.
package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/callbook"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Config configures the orchestrator.
type Config struct {
	// Prefix of every subject. Defaults to "troupe".
	Prefix string
	// Secrets are the configured secrets (API keys, passwords): jobs.get
	// masks them, and what the secret scanner finds, in outputs' summaries
	// and paths (a rejected output may hold one).
	Secrets []string
	// MaxRevisions is how many times a rejected task is revised before it
	// and its job fail. Defaults to 2 (set NoRevisions for 0).
	MaxRevisions int
	// NoRevisions makes the first rejection fail the task.
	NoRevisions bool
	// RequestTimeout bounds one API request. Defaults to 10s.
	RequestTimeout time.Duration
	// Notify is called after a transaction wrote outbox rows (the relay's
	// Notify). Optional.
	Notify func()
	// Prices are the prices per million tokens by model reference, for
	// the cost in job totals.
	Prices map[string]config.Price
	// Planner, when set, plans jobs that name no tasks; without one they
	// get the default plan.
	Planner llm.Completer
	// DefaultBudget is the token budget of a job that names none; 0 is
	// unlimited.
	DefaultBudget int64
	// OnDeadLetter is what a dead-lettered task does to its job:
	// OnDeadLetterFail (the default) or OnDeadLetterWait.
	OnDeadLetter string
	// Metrics, when set, count dead letters and the planner's calls.
	Metrics *telemetry.Metrics
	// Reconcile configures the reconciler.
	Reconcile ReconcileConfig
	// Watch configures the topology watcher (none without a Topology).
	Watch WatchConfig
	// Concurrency is how many events (and advisories) are handled at
	// once. Defaults to 64.
	Concurrency int
	// MaxImageBytes bounds the decoded pixels of an image attachment; a
	// submission with a larger one is refused. Defaults to
	// imagecheck.DefaultMaxBytes.
	MaxImageBytes int64
	// Replies are the reply subjects API requests are answered on
	// (inboxes); their Log is the service's.
	Replies bus.Replies
	Logger  zerolog.Logger
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if c.MaxRevisions == 0 && !c.NoRevisions {
		c.MaxRevisions = 2
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.Notify == nil {
		c.Notify = func() {}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	return c
}

// Service is the orchestrator.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	store store.Store
	nc    *nats.Conn
	js    jetstream.JetStream
	subj  bus.Subjects
	dl    *DeadLetters

	mu     sync.Mutex
	svc    micro.Service
	ccs    []*bus.Consumption
	wg     sync.WaitGroup // event and advisory handlers in flight
	api    *bus.Tracker   // API requests in flight; set by Start
	stop   context.CancelFunc
	runCtx context.Context
	recon  *reconciler
	watch  *topoWatcher
	calls  *callbook.Book // the planner's model calls
}

// New returns an orchestrator; Start runs it.
func New(cfg Config, st store.Store, nc *nats.Conn, js jetstream.JetStream) *Service {
	cfg = cfg.withDefaults()
	log := cfg.Logger.With().Str("service", "orchestrator").Logger()
	subj := bus.Subjects{Prefix: cfg.Prefix}
	return &Service{
		cfg: cfg, log: log, store: st, nc: nc, js: js, subj: subj, calls: callbook.New(st, log),
		dl: &DeadLetters{Store: st, Subjects: subj, OnDeadLetter: cfg.OnDeadLetter, Notify: cfg.Notify, Metrics: cfg.Metrics, Log: log},
	}
}

// replies are the reply subjects the API answers on, logged as the
// orchestrator.
func (s *Service) replies() bus.Replies {
	r := s.cfg.Replies
	r.Log = s.log
	return r
}

// Start serves the jobs and artifacts API and consumes the events the
// orchestrator schedules on. The topology must exist (bus.Topology.Ensure).

func (s *Service) Start(ctx context.Context) error {
	ctx, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	s.runCtx = ctx
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        "troupe",
		Version:     "0.1.0",
		Description: "Troupe: jobs and artifacts",
	})
	if err != nil {
		return fmt.Errorf("starting the api: %w", err)
	}
	s.svc = svc
	jobs := svc.AddGroup(s.cfg.Prefix + ".api.jobs")
	arts := svc.AddGroup(s.cfg.Prefix + ".api.artifacts")
	dlq := svc.AddGroup(s.cfg.Prefix + ".api.dlq")
	// A new tracker each start: requests of an earlier run that outlived
	// its Stop leave the old one.
	api := &bus.Tracker{}
	s.mu.Lock()
	s.api = api
	s.mu.Unlock()
	ep := bus.EndpointConfig{Ctx: ctx, Log: s.log, Timeout: s.cfg.RequestTimeout, MaxPayload: s.nc.MaxPayload(), Track: api, Replies: s.replies(), Available: s.available}
	long := ep
	long.Timeout = 4 * ep.Timeout
	endpoints := []struct {
		g    micro.Group
		name string
		h    micro.Handler
	}{
		{jobs, "submit", bus.Endpoint(ep, schemas.SchemaSubmission, s.Submit)},
		{jobs, "submit_batch", bus.Endpoint(long, schemas.SchemaSubmissionBatch, s.SubmitBatch)},
		{jobs, "get", bus.Endpoint(ep, schemas.SchemaIDRequest, s.getJob)},
		{jobs, "list", bus.Endpoint(ep, schemas.SchemaListRequest, s.listJobs)},
		{jobs, "cancel", bus.Endpoint(ep, schemas.SchemaIDRequest, s.cancelJob)},
		{arts, "list", bus.Endpoint(ep, schemas.SchemaArtifactListRequest, s.listArtifacts)},
		{arts, "get", bus.Endpoint(ep, schemas.SchemaArtifactGetRequest, s.getArtifact)},
		{dlq, "list", bus.Endpoint(ep, schemas.SchemaDeadLetterListRequest, s.listDeadLetters)},
		{dlq, "get", bus.Endpoint(ep, schemas.SchemaIDRequest, s.getDeadLetter)},
		{dlq, "replay", bus.Endpoint(long, schemas.SchemaDeadLetterAction, s.replayDeadLetters)},
		{dlq, "discard", bus.Endpoint(long, schemas.SchemaDeadLetterAction, s.discardDeadLetters)},
	}
	for _, e := range endpoints {
		if e.g == dlq && (e.name == "replay" || e.name == "discard") {
			// Served on dlq.<action>.<user> as well, which records who
			// acts: see bus.Caller.
			if err := e.g.AddEndpoint(e.name+"_as", e.h, micro.WithEndpointSubject(e.name+".*")); err != nil {
				_ = svc.Stop()
				return fmt.Errorf("adding endpoint %s_as: %w", e.name, err)
			}
		}
		if err := e.g.AddEndpoint(e.name, e.h); err != nil {
			_ = svc.Stop()
			return fmt.Errorf("adding endpoint %s: %w", e.name, err)
		}
	}
	consumers := []struct {
		stream, consumer string
		handle           bus.MsgHandler
	}{
		{bus.StreamEvents, bus.ConsumerOrchestrator, s.handleEvent},
		{bus.StreamAdvisories, bus.ConsumerSweeper, s.sweep},
	}
	for _, c := range consumers {
		cons, err := s.js.Consumer(ctx, c.stream, c.consumer)
		if err != nil {
			s.stopConsumers(ctx)
			_ = svc.Stop()
			return fmt.Errorf("binding consumer %s: %w", c.consumer, err)
		}
		settler := &bus.Settler{JS: s.js, Subjects: s.subj, Source: c.consumer, Log: s.log, Record: s.dl.Record,
			MaxDeliver: cons.CachedInfo().Config.MaxDeliver, Available: s.available}
		handle := c.handle
		cc, err := bus.Consume(s.js, cons, s.log, bus.Parallel(s.cfg.Concurrency, &s.wg, func(msg jetstream.Msg) {
			settler.Handle(ctx, msg, handle)
		}), jetstream.PullMaxMessages(2*s.cfg.Concurrency))
		if err != nil {
			s.stopConsumers(ctx)
			_ = svc.Stop()
			return fmt.Errorf("consuming %s: %w", c.consumer, err)
		}
		s.ccs = append(s.ccs, cc)
	}
	s.recon = newReconciler(s)
	s.recon.start(ctx)
	if s.cfg.Watch.Topology != nil {
		s.watch = newTopoWatcher(s, s.cfg.Watch)
		s.watch.start(ctx)
	}
	s.log.Info().Msg("orchestrator started")
	return nil
}

// Stop stops the API, drains the event consumer and waits for in-flight
// handlers, within ctx.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svc != nil {
		_ = s.svc.Stop()
		s.svc = nil
	}
	if s.watch != nil {
		s.watch.stop()
		s.watch = nil
	}
	if s.recon != nil {
		s.recon.stop()
		s.recon = nil
	}
	s.stopConsumers(ctx)
	groups := []*sync.WaitGroup{&s.wg}
	if s.api != nil { // s.mu is held
		groups = append(groups, s.api.Close())
	}
	bus.Wait(ctx, groups...)
	s.calls.Close(ctx)
	if s.stop != nil {
		s.stop()
	}
	return nil
}

// stopConsumers drains the consumers, waiting within ctx.
func (s *Service) stopConsumers(ctx context.Context) {
	for _, cc := range s.ccs {
		cc.Drain(ctx)
	}
	s.ccs = nil
}

// available reports whether the store answers, within two seconds.
func (s *Service) available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.store.Ping(ctx)
}

// DeadLetters is the orchestrator's dead-letter book.
func (s *Service) DeadLetters() *DeadLetters { return s.dl }

// Submit creates a job from a submission: it validates the plan (or uses
// the default one), stores the job with its tasks and queues the tasks that
// depend on nothing, in one transaction. A submission whose idempotency key
// was seen returns the existing job.
func (s *Service) Submit(ctx context.Context, sub schemas.Submission) (any, error) {
	p, err := s.prepare(sub)
	if err != nil {
		return nil, err
	}
	if err := s.store.InTx(ctx, func(q store.Querier) error { return s.create(ctx, q, &p) }); err != nil {
		return nil, fmt.Errorf("creating the job: %w", err)
	}
	// The reply is the job as submitted, before a planner can move it on:
	// a new job as it was written, an existing one as it is now.
	var view schemas.Job
	if p.isNew {
		view = viewOf(p.job, p.tasks)
	} else {
		view, err = s.jobView(ctx, p.job.ID, false)
	}
	s.created(p)
	return view, err
}

// SubmitBatch creates many jobs at once: every job is validated on its
// own and, when any is invalid, none is created and the error names each
// wrong job by its index. Valid batches are created in one transaction.
func (s *Service) SubmitBatch(ctx context.Context, b schemas.SubmissionBatch) (any, error) {
	preps := make([]prepared, len(b.Jobs))
	var errs []schemas.JobError
	keys := map[string]int{}
	for i, raw := range b.Jobs {
		sub, err := schemas.Decode[schemas.Submission](schemas.SchemaSubmission, raw)
		if err == nil {
			preps[i], err = s.prepare(sub)
		}
		if err == nil && sub.IdempotencyKey != "" {
			if first, dup := keys[sub.IdempotencyKey]; dup {
				err = fmt.Errorf("idempotency_key: %q is also the key of job %d of this batch", sub.IdempotencyKey, first)
			}
			keys[sub.IdempotencyKey] = i
		}
		if err != nil {
			errs = append(errs, schemas.JobError{Index: i, Error: err.Error()})
		}
	}
	if len(errs) > 0 {
		first := errs[0]
		return nil, &bus.APIError{Status: 400, Code: "invalid_request", Jobs: errs, Message: fmt.Sprintf(
			"%d of %d jobs are invalid, so none was submitted; the first: jobs[%d]: %s", len(errs), len(b.Jobs), first.Index, first.Error)}
	}
	err := s.store.InTx(ctx, func(q store.Querier) error {
		for i := range preps {
			if err := s.create(ctx, q, &preps[i]); err != nil {
				var apiErr *bus.APIError
				if errors.As(err, &apiErr) {
					return &bus.APIError{Status: apiErr.Status, Code: apiErr.Code, Message: fmt.Sprintf("jobs[%d]: %s", i, apiErr.Message),
						Jobs: []schemas.JobError{{Index: i, Error: apiErr.Message}}}
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("creating the jobs: %w", err)
	}
	reply := schemas.SubmissionBatchReply{Jobs: make([]schemas.BatchJob, len(preps))}
	for i, p := range preps {
		s.created(p)
		reply.Jobs[i] = schemas.BatchJob{ID: p.job.ID, Title: p.job.Title, Status: p.job.Status, Created: p.isNew}
		if p.isNew {
			reply.Created++
		}
	}
	return reply, nil
}

// prepared is a submission made into a job and its tasks, not yet stored.
type prepared struct {
	job      store.Job
	tasks    []store.Task
	planning bool
	isNew    bool // set by create: false when the idempotency key named an existing job
}

// prepare validates a submission's plan (or takes the default one) and its
// attachments, and makes the job and its tasks.
func (s *Service) prepare(sub schemas.Submission) (prepared, error) {
	plan := sub.Tasks
	planning := len(plan) == 0 && s.cfg.Planner != nil
	if len(plan) == 0 && !planning {
		plan = DefaultPlan()
	}
	if err := ValidatePlan(plan); err != nil {
		return prepared{}, err
	}
	if err := checkAttachments(sub.Attachments, s.cfg.MaxImageBytes); err != nil {
		return prepared{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond) // what the store keeps
	job := store.Job{
		ID: uuid.NewString(), Title: sub.Title, Brief: sub.Brief, IdempotencyKey: sub.IdempotencyKey,
		Status: schemas.JobRunning, Attachments: sub.Attachments, CreatedAt: now, UpdatedAt: now,
	}
	if planning {
		job.Status = schemas.JobPlanning
	}
	job.BudgetTokens = s.cfg.DefaultBudget
	if sub.Budget != nil {
		job.BudgetTokens = sub.Budget.MaxTokens
	}
	return prepared{job: job, tasks: newTasks(job.ID, plan, now), planning: planning}, nil
}

// create stores a prepared job and queues its ready tasks, within q's
// transaction. With an idempotency key already used, p.job becomes the
// existing job (an error when the submissions differ).
func (s *Service) create(ctx context.Context, q store.Querier, p *prepared) error {
	want := p.job
	job, created, err := q.JobCreate(ctx, store.JobCreateParams{Job: p.job, Tasks: p.tasks})
	if err != nil {
		return err
	}
	p.job, p.isNew = job, created
	if !created {
		if job.Title != want.Title || job.Brief != want.Brief {
			return bus.Conflict("idempotency_key: %q was used for job %s (%q), a different submission; use a new key", want.IdempotencyKey, job.ID, job.Title)
		}
		return nil
	}
	return s.queueReady(ctx, q, p.tasks, schemas.Event{JobID: job.ID, Kind: schemas.EventJobSubmitted, Message: job.Title})
}

// created tells the relay and starts planning once a job is committed.
func (s *Service) created(p prepared) {
	if !p.isNew {
		return
	}
	s.cfg.Notify()
	s.log.Info().Str("job_id", p.job.ID).Int("tasks", len(p.tasks)).Bool("planning", p.planning).Msg("job submitted")
	if p.planning {
		s.planAsync(p.job.ID)
	}
}

// planAsync plans a job in the background; a plan that fails (or a
// process that stops meanwhile) is taken up again by the reconciler.
func (s *Service) planAsync(jobID string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.runCtx, 10*time.Minute)
		defer cancel()
		if err := s.plan(ctx, jobID); err != nil {
			s.log.Warn().Err(err).Str("job_id", jobID).Msg("planning failed; the reconciler tries again")
		}
	}()
}

// newTasks makes the rows of a plan: tasks that depend on nothing are
// queued, the others pending.
func newTasks(jobID string, plan []schemas.PlanTask, now time.Time) []store.Task {
	tasks := make([]store.Task, len(plan))
	for i, p := range plan {
		status := schemas.TaskPending
		if len(p.DependsOn) == 0 {
			status = schemas.TaskQueued
		}
		tasks[i] = store.Task{
			ID: uuid.NewString(), JobID: jobID, Key: p.Key, Role: p.Role, Instructions: p.Instructions,
			DependsOn: p.DependsOn, Status: status, CreatedAt: now, UpdatedAt: now,
		}
	}
	return tasks
}

// queueReady publishes (through the outbox) the queued tasks, with ev and
// a task_queued event each.
func (s *Service) queueReady(ctx context.Context, q store.Querier, tasks []store.Task, ev schemas.Event) error {
	events := []schemas.Event{ev}
	var msgs []store.OutboxMessage
	for _, t := range tasks {
		if t.Status != schemas.TaskQueued {
			continue
		}
		m, err := s.taskMessage(t)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
		events = append(events, queuedEvent(t))
	}
	if err := q.OutboxInsert(ctx, msgs); err != nil {
		return err
	}
	return bus.Emit(ctx, q, s.subj, events...)
}

func (s *Service) taskMessage(t store.Task) (store.OutboxMessage, error) {
	return bus.OutboxJSON(s.subj.Task(t.Role), fmt.Sprintf("task.%s.%d", t.ID, t.Revision), schemas.TaskMessage{
		TaskID: t.ID, JobID: t.JobID, Key: t.Key, Role: t.Role, Revision: t.Revision,
	})
}

func queuedEvent(t store.Task) schemas.Event {
	return schemas.Event{JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventTaskQueued, Role: t.Role, Revision: t.Revision, Message: t.Key}
}

// terminalTask reports whether a task's status is final.
func terminalTask(status string) bool {
	return status == schemas.TaskPromoted || status == schemas.TaskFailed || status == schemas.TaskCancelled
}

var openTaskStatuses = []string{
	schemas.TaskPending, schemas.TaskQueued, schemas.TaskRunning, schemas.TaskStaged,
	schemas.TaskAwaitingReview, schemas.TaskRejected,
}

func (s *Service) cancelJob(ctx context.Context, req schemas.IDRequest) (any, error) {
	err := s.store.InTx(ctx, func(q store.Querier) error {
		// The job first, then its tasks, as every transaction that
		// changes both does (store.Querier.JobLock).
		job, err := q.JobLock(ctx, req.ID)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("id: no job %q", req.ID)}
			}
			return err
		}
		moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{
			ID: job.ID, From: []string{schemas.JobPlanning, schemas.JobRunning}, To: schemas.JobCancelled, Reason: "cancelled on request",
		})
		if err != nil {
			return err
		}
		if !moved {
			return bus.Conflict("job %s is %s already; only a planning or running job can be cancelled", job.ID, job.Status)
		}
		if err := closeOpenTasks(ctx, q, job.ID, schemas.TaskCancelled, "job cancelled"); err != nil {
			return err
		}
		return bus.Emit(ctx, q, s.subj, schemas.Event{JobID: job.ID, Kind: schemas.EventJobCancelled, Message: "cancelled on request"})
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Notify()
	return s.jobView(ctx, req.ID, false)
}

// closeOpenTasks ends every task of a job that has not ended, and takes its
// undecided outputs out of the review queue.
func closeOpenTasks(ctx context.Context, q store.Querier, jobID, status, reason string) error {
	tasks, err := q.TaskListByJob(ctx, jobID)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if terminalTask(t.Status) {
			continue
		}
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: openTaskStatuses, Status: &status, Reason: &reason}); err != nil {
			return err
		}
	}
	outputs, err := q.OutputListByJob(ctx, jobID)
	if err != nil {
		return err
	}
	for _, o := range outputs {
		if o.Status != schemas.OutputStaged && o.Status != schemas.OutputAwaitingReview {
			continue
		}
		if _, err := q.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: o.ID, From: []string{schemas.OutputStaged, schemas.OutputAwaitingReview}, To: schemas.OutputCancelled}); err != nil {
			return err
		}
	}
	return nil
}

// handleEvent schedules on a promotion or a rejection. Both are idempotent:
// every change is conditional on the state the event announces.
func (s *Service) handleEvent(ctx context.Context, msg jetstream.Msg) error {
	ev, err := schemas.Decode[schemas.Event](schemas.SchemaEvent, msg.Data())
	if err != nil {
		return bus.Permanent(err)
	}
	switch ev.Kind {
	case schemas.EventOutputPromoted:
		err = s.advance(ctx, ev.JobID)
	case schemas.EventOutputRejected:
		err = s.revise(ctx, ev)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("job %s: %w", ev.JobID, err)
	}
	return nil
}

// advance queues every pending task whose upstream tasks are all promoted,
// and marks the job done when every task is promoted.
//
// It looks at the job first, outside a transaction: most promotions find
// nothing to do (a redelivery), or every task promoted, and finishing a
// job without a token budget is then a transaction that only writes
// (committed with others on PostgreSQL): its tasks stay promoted, and the
// job must still be running, else nothing is written.
func (s *Service) advance(ctx context.Context, jobID string) error {
	job, tasks, err := s.store.JobGetWithTasks(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) {
		return bus.Permanent(fmt.Errorf("unknown job %q", jobID))
	}
	if err != nil || job.Status != schemas.JobRunning {
		return err
	}
	if job.BudgetTokens > 0 || !allPromoted(tasks) {
		return s.advanceInTx(ctx, jobID)
	}
	err = s.store.InTx(ctx, func(q store.Querier) error {
		return s.finish(ctx, q, jobID, len(tasks))
	})
	if errors.Is(err, errJobMoved) {
		return nil // cancelled or failed meanwhile: nothing to do
	}
	if err != nil {
		return err
	}
	s.log.Info().Str("job_id", jobID).Int("tasks", len(tasks)).Msg("job done")
	s.cfg.Notify()
	return nil
}

// finish marks a running job done, with its event; errJobMoved when the
// job is no longer running.
func (s *Service) finish(ctx context.Context, q store.Querier, jobID string, tasks int) error {
	if _, err := q.JobSetStatus(ctx, store.JobSetStatusParams{
		ID: jobID, From: []string{schemas.JobRunning}, To: schemas.JobDone, Else: errJobMoved,
	}); err != nil {
		return err
	}
	return bus.Emit(ctx, q, s.subj, schemas.Event{JobID: jobID, Kind: schemas.EventJobDone, Message: fmt.Sprintf("%d tasks promoted", tasks)})
}

func allPromoted(tasks []store.Task) bool {
	return !slices.ContainsFunc(tasks, func(t store.Task) bool { return t.Status != schemas.TaskPromoted })
}

// advanceInTx is advance in one transaction that reads the job again: for
// a job with tasks to queue, or a token budget to check first.
func (s *Service) advanceInTx(ctx context.Context, jobID string) error {
	var wrote bool
	done := 0 // the job's tasks, once it is done
	err := s.store.InTx(ctx, func(q store.Querier) error {
		// A transaction run again (a deadlock, a lost connection, a group
		// that did not commit) starts from nothing: an earlier run's
		// finish was rolled back, and another may have finished the job.
		wrote, done = false, 0
		job, tasks, err := q.JobGetWithTasks(ctx, jobID)
		if err != nil {
			return err
		}
		if job.Status != schemas.JobRunning {
			return nil
		}
		if stopped, err := stopIfSpent(ctx, q, s.subj, job); err != nil || stopped {
			wrote = stopped
			return err
		}
		if allPromoted(tasks) {
			wrote, done = true, len(tasks)
			return s.finish(ctx, q, jobID, len(tasks))
		}
		promoted := map[string]bool{}
		for _, t := range tasks {
			if t.Status == schemas.TaskPromoted {
				promoted[t.Key] = true
			}
		}
		queued := schemas.TaskQueued
		for _, t := range tasks {
			if t.Status != schemas.TaskPending || !allIn(t.DependsOn, promoted) {
				continue
			}
			moved, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskPending}, Status: &queued})
			if err != nil {
				return err
			}
			if !moved {
				continue
			}
			m, err := s.taskMessage(t)
			if err != nil {
				return err
			}
			if err := q.OutboxInsert(ctx, []store.OutboxMessage{m}); err != nil {
				return err
			}
			if err := bus.Emit(ctx, q, s.subj, queuedEvent(t)); err != nil {
				return err
			}
			wrote = true
		}
		return nil
	})
	if errors.Is(err, errJobMoved) {
		return nil // cancelled or failed meanwhile: nothing to do
	}
	if err == nil && done > 0 {
		s.log.Info().Str("job_id", jobID).Int("tasks", done).Msg("job done")
	}
	if wrote {
		s.cfg.Notify()
	}
	return err
}

// errJobMoved rolls back a job's completion when the job is no longer
// running.
var errJobMoved = errors.New("job moved on")

func allIn(keys []string, set map[string]bool) bool {
	return !slices.ContainsFunc(keys, func(k string) bool { return !set[k] })
}

func clampLimit(n, def, maxN int) int {
	if n <= 0 {
		return def
	}
	return min(n, maxN)
}
