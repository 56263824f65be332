// Package worker is the role worker runtime: it binds to its role's durable
// consumer, runs a bounded number of tasks at once, calls the model with
// heartbeats so JetStream knows the task is alive, stages the output once
// per task revision, and asks for review.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/callbook"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Config configures a worker of one role.
type Config struct {
	// Role the worker serves. Required.
	Role string
	// Concurrency is how many tasks the worker runs at once; it is also how
	// many messages it buffers. Defaults to 4.
	Concurrency int
	// Prefix of every subject. Defaults to "troupe".
	Prefix string
	// Heartbeat is how often a running task tells JetStream it is alive.
	// Defaults to 5s; keep it well under the consumer's AckWait.
	Heartbeat time.Duration
	// LessonBytes bounds the lessons put into a prompt. Defaults to 4096.
	LessonBytes int
	// Notify is called after staging wrote outbox rows. Optional.
	Notify func()
	// RecordDeadLetter records a dead letter (and what it means for its
	// task). Defaults to inserting it into the store.
	RecordDeadLetter func(ctx context.Context, d schemas.DeadLetter) error
	// Backoff are the delays before retrying a failed task, by delivery.
	// Defaults to 1s doubling up to a minute.
	Backoff []time.Duration
	// Available, when set, reports whether the store answers: while it
	// does not, the worker fetches nothing and holds what it runs.
	Available func(ctx context.Context) error
	// Metrics, when set, count tasks and model calls.
	Metrics *telemetry.Metrics
	// BudgetSpent, when set, is asked before each model call of a task
	// whose job has a token budget whether the job has spent it (and stops
	// the job if so); the task is then not run.
	BudgetSpent func(ctx context.Context, jobID string) (bool, error)
	// Replies are the reply subjects pings are answered on (inboxes);
	// their Log is the worker's.
	Replies bus.Replies
	Logger  zerolog.Logger
}

func (c Config) withDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.LessonBytes == 0 {
		c.LessonBytes = 4096
	}
	if c.Notify == nil {
		c.Notify = func() {}
	}
	return c
}

// Worker runs one role's tasks.
type Worker struct {
	cfg     Config
	log     zerolog.Logger
	store   store.Store
	js      jetstream.JetStream
	modelMu sync.RWMutex
	model   llm.Model // the model now; SetModel swaps it
	subj    bus.Subjects
	system  string
	settler *bus.Settler

	sem *slots // one per running task
	// dispatch counts how long the tasks it started had waited, for the
	// ping answer (troupe bench against a running Troupe).
	dispatch telemetry.Histogram
	wg       sync.WaitGroup

	// fetchCancel stops fetching; runCancel aborts running tasks (their
	// messages are nacked and redelivered) when the grace period is over.
	fetchCancel, runCancel context.CancelFunc
	fetched                chan struct{} // closed when the fetch loop has returned
	// stopping is closed when Stop begins: a task waiting for the
	// provider hands its message back at once.
	stopping <-chan struct{}

	// calls records model calls, and keeps those a store outage refused.
	calls *callbook.Book

	// info is what the worker answers on the workers ping subject.
	info schemas.WorkerInfo
	ping *nats.Subscription
}

// New returns a worker; Start runs it.
func New(cfg Config, st store.Store, js jetstream.JetStream, model llm.Model) (*Worker, error) {
	cfg = cfg.withDefaults()
	if !schemas.IsRole(cfg.Role) {
		return nil, fmt.Errorf("role %q is not a role; the roles are %s", cfg.Role, strings.Join(schemas.Roles, ", "))
	}
	system, err := RolePrompt(cfg.Role)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With().Str("service", "worker").Str("role", cfg.Role).Logger()
	w := &Worker{
		cfg: cfg, log: log, store: st, js: js, model: model, calls: callbook.New(st, log),
		subj: bus.Subjects{Prefix: cfg.Prefix}, system: system,
		sem: newSlots(cfg.Concurrency),
	}
	record := cfg.RecordDeadLetter
	if record == nil {
		record = func(ctx context.Context, d schemas.DeadLetter) error {
			_, err := st.DeadLetterInsert(ctx, d)
			return err
		}
	}
	w.settler = &bus.Settler{
		JS: js, Subjects: w.subj, Source: bus.WorkerConsumer(cfg.Role), Log: log, Record: record,
		Backoff: cfg.Backoff, Available: cfg.Available,
	}
	return w, nil
}

// Start binds to the role's consumer and runs tasks until Stop.
func (w *Worker) Start(ctx context.Context) error {
	base := context.WithoutCancel(ctx)
	cons, err := w.js.Consumer(ctx, bus.StreamTasks, bus.WorkerConsumer(w.cfg.Role))
	if err != nil {
		return fmt.Errorf("binding consumer %s: %w", bus.WorkerConsumer(w.cfg.Role), err)
	}
	// The consumer's MaxDeliver, not this process's configuration, says
	// which delivery is the last: a task failing on it is dead-lettered.
	w.settler.MaxDeliver = cons.CachedInfo().Config.MaxDeliver
	var fetchCtx, runCtx context.Context
	fetchCtx, w.fetchCancel = context.WithCancel(base)
	w.stopping = fetchCtx.Done()
	runCtx, w.runCancel = context.WithCancel(base)
	w.fetched = make(chan struct{})
	if err := w.answerPings(); err != nil {
		return err
	}
	go w.fetch(fetchCtx, runCtx, cons)
	w.log.Info().Int("concurrency", w.cfg.Concurrency).Str("model", w.modelNow().Name()).Msg("worker started")
	return nil
}

// fetch pulls as many messages as the worker has free slots, and no more:
// a message never waits in a client buffer while its AckWait runs, and a
// worker never holds a task another worker could run now.
func (w *Worker) fetch(ctx, runCtx context.Context, cons jetstream.Consumer) {
	defer close(w.fetched)
	lost := false // the consumer is gone: said once, until it is back
	for {
		if w.cfg.Available != nil && w.cfg.Available(ctx) != nil {
			// The store is away: take no work that would fail.
			select {
			case <-time.After(time.Second):
				continue
			case <-ctx.Done():
				return
			}
		}
		if !w.sem.reserve(ctx) {
			return
		}
		free := 1
		for w.sem.tryReserve() {
			free++
		}
		pullCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(free, jetstream.FetchContext(pullCtx))
		got := 0
		if err == nil {
			for msg := range batch.Messages() {
				got++
				if ctx.Err() != nil {
					w.sem.unreserve(1)
					_ = msg.Nak() // stopping: let another worker have it now
					continue
				}
				if w.sem.start() {
					w.run(runCtx, msg)
					continue
				}
				// The limit was lowered since the pull was sent: the
				// message keeps its reservation, so no more is pulled, and
				// waits, kept alive, for a running task to end. A nak would
				// spend one of its deliveries.
				w.wg.Add(1)
				go func() {
					defer w.wg.Done()
					if !w.waitForSlot(ctx, msg) {
						_ = msg.Nak() // stopping: let another worker have it now
						return
					}
					w.run(runCtx, msg)
				}()
			}
			err = batch.Error()
		}
		cancel()
		w.sem.unreserve(free - got)
		if err == nil && lost {
			lost = false
			w.log.Info().Msg("the role's consumer is back: fetching tasks again")
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			switch {
			case bus.IsConsumerLost(err) && !lost:
				lost = true
				w.log.Warn().Err(err).Msg("the role's consumer is gone (a broker restarted on an empty store, a stream deleted): " +
					"fetching again every second until the orchestrator has created it again")
			case !bus.IsConsumerLost(err):
				w.log.Warn().Err(err).Msg("fetching tasks; retrying in 1s")
			}
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
}

// run handles a message that has its slot, which it frees at the end.
func (w *Worker) run(ctx context.Context, msg jetstream.Msg) {
	w.wg.Add(1)
	w.cfg.Metrics.InFlight(w.cfg.Role, 1)
	if md, err := msg.Metadata(); err == nil {
		d := time.Since(md.Timestamp)
		w.cfg.Metrics.Dispatch(w.cfg.Role, d)
		w.dispatch.Observe(d)
	}
	go func() {
		defer func() { w.sem.release(); w.cfg.Metrics.InFlight(w.cfg.Role, -1); w.wg.Done() }()
		w.settler.Handle(ctx, msg, w.handle)
	}()
}

// waitForSlot waits for a slot for a message that start refused, telling
// JetStream meanwhile that the message is in progress; false when ctx
// ended first.
func (w *Worker) waitForSlot(ctx context.Context, msg jetstream.Msg) bool {
	alive, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(w.cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
			case <-alive.Done():
				return
			}
		}
	}()
	return w.sem.waitStart(ctx)
}

// Stop stops fetching, lets running tasks finish within ctx, then aborts
// what is left: those messages are nacked and redelivered.
func (w *Worker) Stop(ctx context.Context) error {
	if w.fetchCancel == nil {
		return nil
	}
	if w.ping != nil {
		_ = w.ping.Unsubscribe()
	}
	w.fetchCancel()
	<-w.fetched
	var err error
	if !bus.Wait(ctx, &w.wg) {
		err = fmt.Errorf("%s worker: grace period over; running tasks were aborted and will be redelivered", w.cfg.Role)
		w.runCancel()
		w.wg.Wait()
	}
	w.runCancel()
	w.calls.Close(ctx)
	return err
}

// modelNow is the model the worker calls now.
func (w *Worker) modelNow() llm.Model {
	w.modelMu.RLock()
	defer w.modelMu.RUnlock()
	return w.model
}

type taskModelKey struct{}

// taskModel is the model a task started with (SetModel does not change it
// midway), or the model now outside a task.
func (w *Worker) taskModel(ctx context.Context) llm.Model {
	if m, ok := ctx.Value(taskModelKey{}).(llm.Model); ok {
		return m
	}
	return w.modelNow()
}

// SetModel makes later tasks call m (a configuration change); running
// tasks finish on the model they started with.
func (w *Worker) SetModel(m llm.Model) {
	w.modelMu.Lock()
	w.model = m
	w.modelMu.Unlock()
}

// SetConcurrency changes how many tasks the worker runs at once. Running
// tasks above a lower limit finish; no new ones start until under it.
func (w *Worker) SetConcurrency(n int) {
	if n > 0 {
		w.sem.setLimit(n)
	}
}

// Role is the role the worker serves.
func (w *Worker) Role() string { return w.cfg.Role }

// answerPings answers <prefix>.workers.ping with who this worker is and
// how many tasks it runs, so the dashboard can list connected workers.
func (w *Worker) answerPings() error {
	host, _ := os.Hostname()
	w.info = schemas.WorkerInfo{
		ID: uuid.NewString(), Role: w.cfg.Role, Host: host, PID: os.Getpid(),
		Model: w.modelNow().Name(), Concurrency: w.cfg.Concurrency, StartedAt: time.Now().UTC(),
	}
	replies := w.cfg.Replies
	replies.Log = w.log
	sub, err := w.js.Conn().Subscribe(w.subj.WorkersPing(), func(m *nats.Msg) {
		if !replies.Allowed(m.Subject, m.Reply) {
			return
		}
		info := w.info
		info.InFlight = w.sem.inUse()
		info.Dispatch = w.dispatch.Buckets()
		info.Concurrency = w.sem.limitNow()
		info.Model = w.modelNow().Name()
		data, _ := json.Marshal(info)
		_ = m.Respond(data)
	})
	if err != nil {
		return fmt.Errorf("answering worker pings: %w", err)
	}
	w.ping = sub
	return nil
}

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) error {
	ctx = context.WithValue(ctx, taskModelKey{}, w.modelNow())
	m, err := schemas.Decode[schemas.TaskMessage](schemas.SchemaTask, msg.Data())
	if err != nil {
		return bus.Permanent(err)
	}
	if m.Role != w.cfg.Role || msg.Subject() != w.subj.Task(m.Role) {
		return bus.Permanent(fmt.Errorf("task %s is for role %q but arrived on %s", m.TaskID, m.Role, msg.Subject()))
	}
	log := w.log.With().Str("job_id", m.JobID).Str("task_id", m.TaskID).Int("revision", m.Revision).Logger()
	// Most messages start their task: one write marks it running and reads
	// it with its job. Anything else is told apart by reading.
	// The same write records task_started, only when it starts the task.
	ev, evMsg, err := bus.EventMessage(w.subj, schemas.Event{JobID: m.JobID, TaskID: m.TaskID, Kind: schemas.EventTaskStarted, Role: m.Role, Revision: m.Revision})
	if err != nil {
		return err
	}
	st, started, err := w.store.TaskStart(ctx, store.TaskStartParams{ID: m.TaskID, JobID: m.JobID, Role: m.Role, Revision: m.Revision, Lessons: maxLessons,
		Event: &ev, EventMessage: evMsg})
	if err != nil {
		return err
	}
	if !started {
		return w.notStarted(ctx, log, m)
	}
	w.cfg.Notify()
	task := st.Task
	req, budget, err := w.request(ctx, task, st.Job, st.Lessons)
	if err != nil {
		return err
	}
	// A job without a token budget has none to spend: no checks.
	checkBudget := w.cfg.BudgetSpent != nil && budget > 0
	if checkBudget {
		spent, err := w.cfg.BudgetSpent(ctx, task.JobID)
		if err != nil {
			return fmt.Errorf("checking the job's budget: %w", err)
		}
		if spent {
			log.Info().Msg("job's token budget spent; task not run")
			return nil
		}
	}
	// Under a token budget that is checked, every call is recorded as soon
	// as it returns, so the check before the next one (a repair, a
	// fallback, another task) sees it. Otherwise the calls are recorded
	// with the stage, in its transaction: one write fewer per task.
	calls := &callRows{}
	req.Record = func(c llm.Call) {
		w.cfg.Metrics.ModelCall(c.Model, c.Outcome, c.Latency, c.PromptTokens, c.CompletionTokens)
		if !checkBudget {
			calls.add(callRow(c, task))
			return
		}
		w.calls.Record(ctx, []store.ModelCall{callRow(c, task)})
	}
	// Calls not recorded with a stage are recorded on their own.
	defer func() { w.calls.Record(ctx, calls.take()) }()
	if checkBudget {
		req.Before = func(ctx context.Context) error {
			spent, err := w.cfg.BudgetSpent(ctx, task.JobID)
			if err == nil && spent {
				err = errBudgetSpent
			}
			return err
		}
	}
	log.Info().Msg("task started")
	start := time.Now()
	resp, err := w.generate(ctx, log, msg, task, req)
	switch {
	case errors.Is(err, errBudgetSpent):
		log.Info().Msg("job's token budget spent before the next model call; task stopped")
		return nil
	case errors.Is(err, errTaskLeft):
		log.Info().Msg("task no longer running (its job cancelled or failed); model call or wait for the provider stopped")
		return nil
	}
	if err != nil {
		w.cfg.Metrics.TaskDone(task.Role, "failed", 0)
		// The task says what went wrong while it waits for the retry.
		reason, rev := redact.String(fmt.Sprintf("attempt %d failed: %s", task.Attempts, bus.Clip(err.Error(), 1000))), task.Revision
		if _, uerr := w.store.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, From: []string{schemas.TaskRunning}, Revision: &rev, Reason: &reason}); uerr != nil {
			log.Warn().Err(uerr).Msg("recording the failure on the task")
		}
		var retry *llm.RetryError
		switch {
		case errors.As(err, &retry):
			return bus.RetryAfter(err, retry.RetryAfter)
		case errors.Is(err, llm.ErrRejected):
			return bus.Permanent(err)
		}
		return fmt.Errorf("model %s: %w", w.taskModel(ctx).Name(), err)
	}
	if resp.Latency == 0 {
		resp.Latency = time.Since(start)
	}
	if err := w.stage(ctx, log, task, req, resp, calls); err != nil {
		return err
	}
	w.cfg.Metrics.TaskDone(task.Role, "staged", time.Since(start))
	return nil
}

// notStarted handles a task message that TaskStart did not start: one for
// another job or role (dead-lettered), a stale one (skipped), or one whose
// output of this revision exists already (its stage is finished).
func (w *Worker) notStarted(ctx context.Context, log zerolog.Logger, m schemas.TaskMessage) error {
	task, err := w.store.TaskGetByID(ctx, m.TaskID)
	if errors.Is(err, store.ErrNotFound) {
		return bus.Permanent(fmt.Errorf("unknown task %q", m.TaskID))
	}
	if err != nil {
		return fmt.Errorf("reading task: %w", err)
	}
	if task.JobID != m.JobID || task.Role != m.Role {
		return bus.Permanent(fmt.Errorf("task %s belongs to job %s as %s, not to job %s as %s", task.ID, task.JobID, task.Role, m.JobID, m.Role))
	}
	if task.Revision != m.Revision || (task.Status != schemas.TaskQueued && task.Status != schemas.TaskRunning) {
		log.Debug().Str("status", task.Status).Int("current_revision", task.Revision).Msg("stale task message; skipped")
		return nil
	}
	out, err := w.store.OutputGetByTaskRevision(ctx, task.ID, task.Revision)
	if errors.Is(err, store.ErrNotFound) {
		// Startable now, though TaskStart refused it: it came back to
		// queued after (a dead letter replayed, a task redispatched), and
		// the message that brought it back runs it.
		log.Debug().Msg("task came back meanwhile; its new message runs it")
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading output: %w", err)
	}
	// Staged before, but the task was not moved on (it was put back by a
	// replay, or the stage raced a dead letter): finish the stage.
	return w.finishStage(ctx, log, task, out)
}

// callRows are model calls waiting to be recorded with a stage.
type callRows struct {
	mu   sync.Mutex
	rows []store.ModelCall
}

func (c *callRows) add(rows ...store.ModelCall) {
	c.mu.Lock()
	c.rows = append(c.rows, rows...)
	c.mu.Unlock()
}

func (c *callRows) take() []store.ModelCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := c.rows
	c.rows = nil
	return rows
}

// errBudgetSpent stops a task whose job spent its token budget (and
// errTaskLeft, in provider.go, one that left running while its model
// worked or waited).
var errBudgetSpent = errors.New("the job's token budget is spent")

// callRow is a model call as a store row.
func callRow(c llm.Call, t store.Task) store.ModelCall {
	return store.ModelCall{
		ID: uuid.NewString(), JobID: t.JobID, TaskID: t.ID, Role: t.Role, Revision: t.Revision, Model: c.Model,
		PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens, LatencyMS: c.Latency.Milliseconds(),
		Outcome: c.Outcome, Error: bus.Clip(c.Err, 2000),
	}
}

// maxLessons is how many of the newest lessons of a task's role (and of
// every role) TaskStart reads for its prompt; review.SelectLessons picks
// among them what fits.
const maxLessons = 500

// request gathers what the task reads from the shared area: its job, the
// promoted outputs of its upstream tasks, the lessons that apply (rows,
// read by TaskStart) and the feedback on its previous revision.
func (w *Worker) request(ctx context.Context, task store.Task, job store.Job, rows []store.Lesson) (llm.Request, int64, error) {
	tc := llm.TaskContext{
		JobID: job.ID, JobTitle: job.Title, Brief: job.Brief, TaskID: task.ID, Key: task.Key,
		Instructions: task.Instructions, Revision: task.Revision, Attachments: job.Attachments,
	}
	if task.Revision > 0 {
		tc.Feedback = task.Feedback
	}
	if len(task.DependsOn) > 0 {
		tasks, err := w.store.TaskListByJob(ctx, task.JobID)
		if err != nil {
			return llm.Request{}, 0, fmt.Errorf("reading upstream tasks: %w", err)
		}
		for _, up := range tasks {
			if !slices.Contains(task.DependsOn, up.Key) {
				continue
			}
			arts, err := w.store.ArtifactListByTask(ctx, up.ID)
			if err != nil {
				return llm.Request{}, 0, fmt.Errorf("reading inputs of %s: %w", up.Key, err)
			}
			for _, a := range arts {
				tc.Inputs = append(tc.Inputs, llm.Input{Path: a.Path, Role: up.Role, TaskKey: up.Key, Content: a.Content})
			}
		}
	}
	lessons := make([]schemas.Lesson, len(rows))
	for i, l := range rows {
		lessons[i] = l.Schema()
	}
	tc.Lessons = review.SelectLessons(lessons, task.Role, job.Title+" "+task.Instructions, w.cfg.LessonBytes)
	system := renderSystem(w.system, tc.Lessons)
	return llm.Request{Role: task.Role, System: system, Prompt: renderPrompt(fitInputs(tc, w.promptBudget(ctx, len(system)))), Task: tc}, job.BudgetTokens, nil
}

// promptBudget is how many bytes of prompt the model's context window
// leaves after the system prompt and the answer (about 3 bytes a token, to
// be safe); 0 means no limit.
func (w *Worker) promptBudget(ctx context.Context, systemBytes int) int {
	s, ok := w.taskModel(ctx).(interface{ Spec() llm.Spec })
	if !ok || s.Spec().ContextWindow == 0 {
		return 0
	}
	spec := s.Spec()
	return max((spec.ContextWindow-spec.MaxTokens)*3-systemBytes, 4096)
}

// finishStage moves a task whose output of this revision exists to staged
// and, while the output waits for review, asks for it again.
func (w *Worker) finishStage(ctx context.Context, log zerolog.Logger, task store.Task, out store.Output) error {
	var moved bool
	err := w.store.InTx(ctx, func(q store.Querier) error {
		staged, rev := schemas.TaskStaged, task.Revision
		var err error
		moved, err = q.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, From: []string{schemas.TaskQueued, schemas.TaskRunning}, Revision: &rev, Status: &staged})
		if err != nil || !moved || out.Status != schemas.OutputStaged {
			return err
		}
		m, err := bus.OutboxJSON(w.subj.Review(task.Role), fmt.Sprintf("review.%s.again.%d", out.ID, time.Now().UnixNano()), schemas.ReviewRequest{
			OutputID: out.ID, TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision,
		})
		if err != nil {
			return err
		}
		return q.OutboxInsert(ctx, []store.OutboxMessage{m})
	})
	if err != nil {
		return fmt.Errorf("finishing an earlier stage: %w", err)
	}
	if moved {
		w.cfg.Notify()
		log.Info().Str("output_id", out.ID).Msg("output staged earlier; sent for review again")
	} else {
		log.Debug().Msg("output already staged; skipped")
	}
	return nil
}

// errTaskMoved rolls back a stage whose task is no longer running, and
// errStagedAlready one whose task revision has its output already.
var (
	errTaskMoved     = errors.New("task moved on")
	errStagedAlready = errors.New("output staged already")
)

// stage stores the output of this revision once, with the review request in
// the same transaction.
func (w *Worker) stage(ctx context.Context, log zerolog.Logger, task store.Task, req llm.Request, resp llm.Response, calls *callRows) error {
	out := store.Output{
		ID: uuid.NewString(), TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision,
		Status: schemas.OutputStaged, Content: resp.Content, Files: resp.Files, Model: resp.Model,
		PromptTokens: resp.PromptTokens, CompletionTokens: resp.CompletionTokens,
		LatencyMS: resp.Latency.Milliseconds(), Prompt: req.System + "\n\n" + req.Prompt,
	}
	if out.Model == "" {
		out.Model = w.taskModel(ctx).Name()
	}
	if resp.ParseError != "" {
		// Review rejects it with this reason, for the next revision.
		out.Checks = []schemas.Check{{Name: "answer_format", Passed: false, Detail: bus.Clip(resp.ParseError, 2000)}}
	}
	var nul *schemas.Check
	if out.Content, nul = storableSummary(out.Content); nul != nil {
		out.Checks = append(out.Checks, *nul)
	}
	rows := calls.take()
	// The output must be new and the task still waiting for it, else
	// the transaction fails; on PostgreSQL it is one round trip.
	err := w.store.InTx(ctx, func(q store.Querier) error {
		if err := q.OutputAdd(ctx, out, errStagedAlready); err != nil {
			return err
		}
		if len(rows) > 0 {
			if err := q.ModelCallInsert(ctx, rows); err != nil {
				return err
			}
		}
		staged, rev, noReason := schemas.TaskStaged, task.Revision, ""
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{
			ID: task.ID, From: []string{schemas.TaskQueued, schemas.TaskRunning}, Revision: &rev, Status: &staged, Reason: &noReason,
			Else: errTaskMoved, // cancelled, failed or dead-lettered while the model worked
		}); err != nil {
			return err
		}
		m, err := bus.OutboxJSON(w.subj.Review(task.Role), "review."+out.ID, schemas.ReviewRequest{
			OutputID: out.ID, TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision,
		})
		if err != nil {
			return err
		}
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{m}); err != nil {
			return err
		}
		return bus.Emit(ctx, q, w.subj, schemas.Event{
			JobID: task.JobID, TaskID: task.ID, OutputID: out.ID, Kind: schemas.EventOutputStaged,
			Role: task.Role, Revision: task.Revision, Message: fmt.Sprintf("%d files", len(out.Files)),
		})
	})
	if err != nil {
		calls.add(rows...) // rolled back: recorded on their own
	}
	switch {
	case errors.Is(err, errStagedAlready):
		// An earlier delivery staged this revision: nothing to add.
		return nil
	case errors.Is(err, errTaskMoved):
		log.Info().Msg("task moved on while the model worked; output dropped")
		return nil
	case err != nil:
		return fmt.Errorf("staging output: %w", err)
	}
	w.cfg.Notify()
	log.Info().Str("output_id", out.ID).Int("files", len(out.Files)).Msg("output staged")
	return nil
}
