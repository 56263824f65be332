package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// slowModel answers like the offline model after a gate opens, counting
// the calls running at once.
type slowModel struct {
	llm.Offline
	delay   time.Duration
	running atomic.Int32
	peak    atomic.Int32
	calls   atomic.Int32
}

func (m *slowModel) Generate(ctx context.Context, req llm.Request) (llm.Response, error) {
	m.calls.Add(1)
	n := m.running.Add(1)
	defer m.running.Add(-1)
	for {
		p := m.peak.Load()
		if n <= p || m.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-time.After(m.delay):
	case <-ctx.Done():
		return llm.Response{}, ctx.Err()
	}
	return m.Offline.Generate(ctx, req)
}

type fixture struct {
	store *sqlite.Store
	js    jetstream.JetStream
	topo  bus.Topology
}

func setup(t *testing.T, ackWait time.Duration) fixture {
	t.Helper()
	return setupWith(t, bus.Topology{Roles: []string{"developer"}, AckWait: ackWait})
}

// setupWith starts a server with topo's streams and consumers.
func setupWith(t *testing.T, topo bus.Topology) fixture {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(srv.ClientURL(), "test", zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, topo.Ensure(context.Background(), js))
	return fixture{store: sqlite.NewTestStore(t), js: js, topo: topo}
}

// queue stores n developer tasks and publishes their messages.
func (f fixture) queue(t *testing.T, n int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for range n {
		job := store.Job{ID: uuid.NewString(), Title: "Limiter", Status: schemas.JobRunning}
		task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "impl", Role: "developer", Instructions: "Build it.", Status: schemas.TaskQueued}
		_, _, err := f.store.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
		require.NoError(t, err)
		msg := []byte(`{"task_id":"` + task.ID + `","job_id":"` + job.ID + `","key":"impl","role":"developer","revision":0}`)
		require.NoError(t, bus.Publish(ctx, f.js, "troupe.tasks.developer", "task."+task.ID+".0", msg, nil))
		ids = append(ids, task.ID)
	}
	return ids
}

func (f fixture) waitStaged(t *testing.T, ids []string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, id := range ids {
			task, err := f.store.TaskGetByID(context.Background(), id)
			if err != nil || task.Status != schemas.TaskStaged {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond)
}

func startWorker(t *testing.T, f fixture, cfg Config, m llm.Model) *Worker {
	t.Helper()
	cfg.Role = "developer"
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	w, err := New(cfg, f.store, f.js, m)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	t.Cleanup(func() { _ = w.Stop(context.Background()) })
	return w
}

// TestHeartbeatKeepsSlowTaskAlive: a model call three times longer than
// AckWait is not redelivered, because the worker sends InProgress.
func TestHeartbeatKeepsSlowTaskAlive(t *testing.T) {
	t.Parallel()
	f := setup(t, time.Second)
	m := &slowModel{delay: 3 * time.Second}
	startWorker(t, f, Config{Concurrency: 1, Heartbeat: 200 * time.Millisecond}, m)
	ids := f.queue(t, 1)
	f.waitStaged(t, ids)

	task, err := f.store.TaskGetByID(context.Background(), ids[0])
	require.NoError(t, err)
	require.Equal(t, 1, task.Attempts)
	require.EqualValues(t, 1, m.calls.Load(), "the model was called once")
	cons, err := f.js.Consumer(context.Background(), bus.StreamTasks, "workers-developer")
	require.NoError(t, err)
	info, err := cons.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.NumRedelivered)
}

// TestConcurrencyIsBounded: never more model calls at once than the
// worker's concurrency, and all tasks staged exactly once.
func TestConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	m := &slowModel{delay: 100 * time.Millisecond}
	startWorker(t, f, Config{Concurrency: 3}, m)
	ids := f.queue(t, 12)
	f.waitStaged(t, ids)
	require.EqualValues(t, 3, m.peak.Load())
	require.EqualValues(t, 12, m.calls.Load())
	outputs := 0
	for _, id := range ids {
		_, err := f.store.OutputGetByTaskRevision(context.Background(), id, 0)
		require.NoError(t, err)
		outputs++
	}
	require.Equal(t, 12, outputs)
}

// TestRedeliveryStagesOnce: the same task message delivered again after it
// was staged neither calls the model nor stages a second output.
func TestRedeliveryStagesOnce(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	m := &slowModel{}
	startWorker(t, f, Config{Concurrency: 2}, m)
	ids := f.queue(t, 1)
	f.waitStaged(t, ids)
	// Publish the same task again with a fresh message id, as the
	// reconciler would.
	task, err := f.store.TaskGetByID(context.Background(), ids[0])
	require.NoError(t, err)
	msg := []byte(`{"task_id":"` + task.ID + `","job_id":"` + task.JobID + `","key":"impl","role":"developer","revision":0}`)
	require.NoError(t, bus.Publish(context.Background(), f.js, "troupe.tasks.developer", "again", msg, nil))
	s, err := f.js.Stream(context.Background(), bus.StreamTasks)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond, "the duplicate was acked")
	require.EqualValues(t, 1, m.calls.Load())
	outs, err := f.store.OutputListByJob(context.Background(), task.JobID)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	// The timeline says when the task started, once: the duplicate
	// started nothing.
	events, err := f.store.EventListByJob(context.Background(), task.JobID)
	require.NoError(t, err)
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.Kind)
	}
	require.Equal(t, []string{schemas.EventTaskStarted, schemas.EventOutputStaged}, kinds)
}

// TestNoPrefetchBeyondConcurrency: two workers of concurrency 1 with a
// model slower than AckWait: no task waits in a worker's buffer while
// another worker is free, so every task runs exactly once.
func TestNoPrefetchBeyondConcurrency(t *testing.T) {
	t.Parallel()
	f := setup(t, time.Second)
	m := &slowModel{delay: 2500 * time.Millisecond}
	startWorker(t, f, Config{Concurrency: 1, Heartbeat: 200 * time.Millisecond}, m)
	startWorker(t, f, Config{Concurrency: 1, Heartbeat: 200 * time.Millisecond}, m)
	ids := f.queue(t, 3)
	f.waitStaged(t, ids)
	require.EqualValues(t, 3, m.calls.Load(), "one model call per task")
	for _, id := range ids {
		task, err := f.store.TaskGetByID(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, 1, task.Attempts, "task %s ran once", id)
	}
}

// TestStopWaitsForRunningTasks: Stop lets running tasks finish and stage,
// and starts nothing after it returns.
func TestStopWaitsForRunningTasks(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	m := &slowModel{delay: 500 * time.Millisecond}
	w := startWorker(t, f, Config{Concurrency: 2}, m)
	ids := f.queue(t, 5)
	require.Eventually(t, func() bool { return m.running.Load() == 2 }, 10*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(ctx))
	calls := m.calls.Load()
	require.EqualValues(t, 2, calls, "only the running tasks ran")
	staged := 0
	for _, id := range ids {
		task, err := f.store.TaskGetByID(context.Background(), id)
		require.NoError(t, err)
		if task.Status == schemas.TaskStaged {
			staged++
		}
	}
	require.Equal(t, 2, staged, "the running tasks finished")
	// Nothing starts after Stop returned.
	require.Equal(t, calls, m.calls.Load())
}

// TestStopAbortsAfterGrace: past the grace period, running tasks are
// aborted and their messages go back for another worker.
func TestStopAbortsAfterGrace(t *testing.T) {
	t.Parallel()
	// AckWait longer than waitStaged waits: only the nak brings it back in time.
	f := setup(t, 2*time.Minute)
	m := &slowModel{delay: time.Minute}
	w := startWorker(t, f, Config{Concurrency: 1}, m)
	ids := f.queue(t, 1)
	require.Eventually(t, func() bool { return m.running.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.Error(t, w.Stop(ctx), "Stop says the grace period ran out")

	// Another worker gets the task at once (a nak, not an AckWait timeout).
	fast := &slowModel{}
	startWorker(t, f, Config{Concurrency: 1}, fast)
	f.waitStaged(t, ids)
	require.EqualValues(t, 1, fast.calls.Load())
}

// refusing answers like the offline model, except that its first call
// for a task whose instructions say "limited" fails with err. Its next
// call notes the reason the task showed meanwhile.
type refusing struct {
	llm.Offline
	err    error
	store  store.Store
	mu     sync.Mutex
	once   bool
	order  []string
	reason string
}

func (m *refusing) Generate(ctx context.Context, req llm.Request) (llm.Response, error) {
	m.mu.Lock()
	m.order = append(m.order, req.Task.Instructions)
	first := !m.once && req.Task.Instructions == "limited"
	again := m.once && req.Task.Instructions == "limited"
	if first {
		m.once = true
	}
	m.mu.Unlock()
	if first {
		return llm.Response{}, m.err
	}
	if again {
		task, err := m.store.TaskGetByID(ctx, req.Task.TaskID)
		if err != nil {
			return llm.Response{}, err
		}
		m.mu.Lock()
		m.reason = task.Reason
		m.mu.Unlock()
	}
	return m.Offline.Generate(ctx, req)
}

// queueInstructions stores a developer task per instruction, in order,
// and publishes their messages.
func (f fixture) queueInstructions(t *testing.T, instructions ...string) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for _, instr := range instructions {
		job := store.Job{ID: uuid.NewString(), Title: "J", Status: schemas.JobRunning}
		task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "impl", Role: "developer", Instructions: instr, Status: schemas.TaskQueued}
		_, _, err := f.store.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
		require.NoError(t, err)
		msg := []byte(`{"task_id":"` + task.ID + `","job_id":"` + job.ID + `","key":"impl","role":"developer","revision":0}`)
		require.NoError(t, bus.Publish(ctx, f.js, "troupe.tasks.developer", "task."+task.ID+".0", msg, nil))
		ids = append(ids, task.ID)
	}
	return ids
}

// TestRateLimitSpendsNoDelivery: a provider's 429 is waited out with the
// task held: the call is made again after its Retry-After on the same
// delivery (a nak would spend one, and a long storm would dead-letter the
// task), the task says whom it waits for and until when, and the slot is
// not given to the next task meanwhile.
func TestRateLimitSpendsNoDelivery(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	m := &refusing{store: f.store, err: &llm.RetryError{Err: errors.New("fake/text: 429 too many requests"), RetryAfter: 300 * time.Millisecond, RateLimited: true}}
	startWorker(t, f, Config{Concurrency: 1}, m)
	ids := f.queueInstructions(t, "limited", "fine")
	f.waitStaged(t, ids)
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Equal(t, []string{"limited", "limited", "fine"}, m.order, "the task kept its slot while it waited")
	require.Regexp(t, `^waiting for the provider until 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ: fake/text: 429 too many requests$`, m.reason)
	limited, err := f.store.TaskGetByID(context.Background(), ids[0])
	require.NoError(t, err)
	require.Equal(t, 1, limited.Attempts, "one delivery")
	require.Empty(t, limited.Reason, "staged: the wait is over")
}

// TestServerErrorFreesTheSlot: a transient failure other than a rate
// limit (a 503) goes back to JetStream with the NAK delay: the worker's
// only slot serves the next task meanwhile, and the failed task runs again
// afterwards.
func TestServerErrorFreesTheSlot(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	m := &refusing{store: f.store, err: &llm.RetryError{Err: errors.New("fake/text: 503 unavailable"), RetryAfter: 300 * time.Millisecond}}
	startWorker(t, f, Config{Concurrency: 1}, m)
	ids := f.queueInstructions(t, "limited", "fine")
	f.waitStaged(t, ids)
	m.mu.Lock()
	defer m.mu.Unlock()
	require.Equal(t, []string{"limited", "fine", "limited"}, m.order, "the slot served the next task while the first waited")
	require.Contains(t, m.reason, "attempt 1 failed: fake/text: 503 unavailable")
	limited, err := f.store.TaskGetByID(context.Background(), ids[0])
	require.NoError(t, err)
	require.Equal(t, 2, limited.Attempts)
}

// alwaysLimited refuses every call with a 429, counting them.
type alwaysLimited struct {
	llm.Offline
	calls chan struct{}
}

func (m *alwaysLimited) Generate(ctx context.Context, req llm.Request) (llm.Response, error) {
	select {
	case m.calls <- struct{}{}:
	default:
	}
	return llm.Response{}, &llm.RetryError{Err: errors.New("429"), RetryAfter: 50 * time.Millisecond, RateLimited: true}
}

// TestWaitForProviderEnds: a task that waits for the provider stops
// waiting when it is cancelled (its message is acked, nothing is staged),
// and a worker stopping past its grace period naks the message it held.
func TestWaitForProviderEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, 30*time.Second)
	m := &alwaysLimited{calls: make(chan struct{}, 1)}
	w := startWorker(t, f, Config{Concurrency: 1}, m)
	ids := f.queueInstructions(t, "cancelled while waiting")
	<-m.calls
	cancelled := schemas.TaskCancelled
	moved, err := f.store.TaskUpdate(ctx, store.TaskUpdateParams{ID: ids[0], From: []string{schemas.TaskRunning}, Status: &cancelled})
	require.NoError(t, err)
	require.True(t, moved)
	cons, err := f.js.Consumer(ctx, bus.StreamTasks, "workers-developer")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0 && ci.AckFloor.Stream == 1
	}, 10*time.Second, 20*time.Millisecond, "the message was acked")

	// A task still waiting when the worker stops is nacked for another at
	// once, within the grace period: it has nothing to finish.
	ids2 := f.queueInstructions(t, "waiting at shutdown")
	<-m.calls
	<-m.calls // waiting between refusals
	grace, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(grace), "handed back within the grace period")
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	got := 0
	for msg := range batch.Messages() {
		got++
		require.Contains(t, string(msg.Data()), ids2[0])
	}
	require.Equal(t, 1, got, "back in the stream for another worker")
}

// TestLiveConcurrencyAndModel: a configuration change raises a running
// worker's concurrency and swaps its model without a restart; the ping
// answer shows both.
func TestLiveConcurrencyAndModel(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	first := &slowModel{delay: 150 * time.Millisecond}
	w := startWorker(t, f, Config{Concurrency: 1}, first)
	ids := f.queue(t, 3)
	f.waitStaged(t, ids)
	require.EqualValues(t, 1, first.peak.Load(), "one at a time before the change")

	second := &slowModel{delay: 150 * time.Millisecond}
	w.SetConcurrency(4)
	w.SetModel(second)
	ids = f.queue(t, 8)
	f.waitStaged(t, ids)
	require.EqualValues(t, 3, first.calls.Load(), "the old model gets no new task")
	require.EqualValues(t, 8, second.calls.Load())
	require.EqualValues(t, 4, second.peak.Load(), "four at a time after the change")

	// The fetch loop, idle now, waits on a pull for four messages: the
	// lower limit must hold for what that pull brings too.
	waitIdlePull(t, w, 4)
	w.SetConcurrency(2)
	third := &slowModel{delay: 150 * time.Millisecond}
	w.SetModel(third)
	ids = f.queue(t, 6)
	f.waitStaged(t, ids)
	require.EqualValues(t, 2, third.peak.Load(), "a lower limit holds too")
}

// waitIdlePull waits until w runs nothing and its fetch loop waits on a
// pull for n messages.
func waitIdlePull(t *testing.T, w *Worker, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		w.sem.mu.Lock()
		defer w.sem.mu.Unlock()
		return w.sem.running == 0 && w.sem.reserved == n
	}, 10*time.Second, time.Millisecond)
}

// TestLoweredLimitSpendsNoDelivery: a message a pull brings beyond a limit
// lowered since waits for a slot rather than being nacked, which would
// spend a delivery it never used (here its only one), and is kept alive
// while it waits longer than its AckWait.
func TestLoweredLimitSpendsNoDelivery(t *testing.T) {
	t.Parallel()
	f := setupWith(t, bus.Topology{Roles: []string{"developer"}, AckWait: time.Second, RoleMaxDeliver: map[string]int{"developer": 1}})
	nc := f.js.Conn()
	var exhausted atomic.Int32
	_, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", func(*nats.Msg) { exhausted.Add(1) })
	require.NoError(t, err)

	m := &slowModel{delay: 2500 * time.Millisecond} // the second waits 2.5 AckWaits
	w := startWorker(t, f, Config{Concurrency: 2, Heartbeat: 200 * time.Millisecond}, m)
	waitIdlePull(t, w, 2)
	w.SetConcurrency(1)
	f.waitStaged(t, f.queue(t, 2))
	require.EqualValues(t, 2, m.calls.Load())
	require.EqualValues(t, 1, m.peak.Load(), "one at a time under the lower limit")
	require.NoError(t, nc.Flush())
	require.Zero(t, exhausted.Load(), "a waiting message ran out of AckWait")
}

// TestPingCountsRunningTasks: a worker's ping answer counts the tasks it
// runs, not the slots its fetch loop holds for messages still to come.
func TestPingCountsRunningTasks(t *testing.T) {
	t.Parallel()
	f := setup(t, 30*time.Second)
	m := &slowModel{delay: time.Minute}
	w := startWorker(t, f, Config{Concurrency: 3}, m)
	t.Cleanup(func() { // before Stop, which waits for the task
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = w.Stop(ctx)
	})
	ping := func() schemas.WorkerInfo {
		msg, err := f.js.Conn().Request(w.subj.WorkersPing(), nil, 5*time.Second)
		require.NoError(t, err)
		var info schemas.WorkerInfo
		require.NoError(t, json.Unmarshal(msg.Data, &info))
		return info
	}
	require.Eventually(t, func() bool { return w.sem.limitNow() == 3 && ping().InFlight == 0 }, 10*time.Second, 10*time.Millisecond)
	f.queue(t, 1)
	require.Eventually(t, func() bool { return m.running.Load() == 1 }, 10*time.Second, 5*time.Millisecond)
	info := ping()
	require.Equal(t, 1, info.InFlight, "one task runs; two slots wait for messages")
	require.Equal(t, 3, info.Concurrency)
}

// TestMessagesThatStartNothing: a task message for another job, or for a
// revision the task has left, runs no model; one whose output of that
// revision exists already finishes the stage without calling the model.
func TestMessagesThatStartNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, 30*time.Second)
	var mu sync.Mutex
	var dead []schemas.DeadLetter
	m := &slowModel{}
	startWorker(t, f, Config{Concurrency: 2, RecordDeadLetter: func(_ context.Context, d schemas.DeadLetter) error {
		mu.Lock()
		defer mu.Unlock()
		dead = append(dead, d)
		return nil
	}}, m)

	newTask := func(status string, revision int) store.Task {
		job := store.Job{ID: uuid.NewString(), Title: "Limiter", Status: schemas.JobRunning}
		task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "impl", Role: "developer", Status: status, Revision: revision}
		_, _, err := f.store.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
		require.NoError(t, err)
		return task
	}
	publish := func(taskID, jobID string, revision int) {
		msg := []byte(`{"task_id":"` + taskID + `","job_id":"` + jobID + `","key":"impl","role":"developer","revision":` + strconv.Itoa(revision) + `}`)
		require.NoError(t, bus.Publish(ctx, f.js, "troupe.tasks.developer", uuid.NewString(), msg, nil))
	}

	// Another job's id: dead-lettered, the task untouched.
	wrongJob := newTask(schemas.TaskQueued, 0)
	publish(wrongJob.ID, uuid.NewString(), 0)
	// An old revision: skipped.
	old := newTask(schemas.TaskQueued, 2)
	publish(old.ID, old.JobID, 1)
	// Staged before the task moved on: the stage is finished.
	staged := newTask(schemas.TaskQueued, 0)
	_, _, err := f.store.OutputStage(ctx, store.Output{TaskID: staged.ID, JobID: staged.JobID, Role: "developer", Revision: 0, Content: "done"})
	require.NoError(t, err)
	publish(staged.ID, staged.JobID, 0)

	f.waitStaged(t, []string{staged.ID})
	require.Eventually(t, func() bool {
		info, err := f.js.Consumer(ctx, bus.StreamTasks, "workers-developer")
		if err != nil {
			return false
		}
		ci, err := info.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	}, 10*time.Second, 20*time.Millisecond)
	// Settled, all three: only the one for another job is a dead letter.
	mu.Lock()
	require.Len(t, dead, 1)
	require.Contains(t, dead[0].Reason, "belongs to job "+wrongJob.JobID)
	mu.Unlock()
	for _, task := range []store.Task{wrongJob, old} {
		got, err := f.store.TaskGetByID(ctx, task.ID)
		require.NoError(t, err)
		require.Equal(t, schemas.TaskQueued, got.Status)
		require.Zero(t, got.Attempts)
	}
	require.Zero(t, m.calls.Load(), "the model was called")
	unsent, err := f.store.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, unsent, 1, "the review request of the earlier stage")
	require.Equal(t, "troupe.review.developer", unsent[0].Subject)
}

// blockingModel answers only when its call's context ends, and says so.
type blockingModel struct {
	llm.Offline
	started, stopped chan struct{}
}

func (m *blockingModel) Generate(ctx context.Context, _ llm.Request) (llm.Response, error) {
	close(m.started)
	<-ctx.Done()
	close(m.stopped)
	return llm.Response{}, ctx.Err()
}

// TestModelCallStopsWhenItsTaskLeavesRunning: a task cancelled (its job
// cancelled, or failed by a dead letter under the fail policy) while its
// model works has its call stopped at the worker's next store heartbeat;
// the message is acknowledged, nothing is staged, nothing is retried.
func TestModelCallStopsWhenItsTaskLeavesRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, 30*time.Second)
	m := &blockingModel{started: make(chan struct{}), stopped: make(chan struct{})}
	startWorker(t, f, Config{Concurrency: 1, Heartbeat: 5 * time.Millisecond}, m)
	ids := f.queue(t, 1)
	<-m.started
	cancelled, reason := schemas.TaskCancelled, "job failed: dead-lettered: task other"
	moved, err := f.store.TaskUpdate(ctx, store.TaskUpdateParams{ID: ids[0], From: []string{schemas.TaskRunning}, Status: &cancelled, Reason: &reason})
	require.NoError(t, err)
	require.True(t, moved)
	<-m.stopped
	require.Eventually(t, func() bool {
		cons, err := f.js.Consumer(ctx, bus.StreamTasks, "workers-developer")
		if err != nil {
			return false
		}
		ci, err := cons.Info(ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	}, 10*time.Second, 10*time.Millisecond, "the message was acknowledged")
	task, err := f.store.TaskGetByID(ctx, ids[0])
	require.NoError(t, err)
	require.Equal(t, schemas.TaskCancelled, task.Status)
	require.Equal(t, reason, task.Reason, "the failure was not written over the cancel")
	_, err = f.store.OutputGetByTaskRevision(ctx, ids[0], 0)
	require.ErrorIs(t, err, store.ErrNotFound)
}
