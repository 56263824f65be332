package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// reconcile prints the accounting every fault test ends with: every
// submitted job ended, and no task has more than one output per revision.
func reconcile(t *testing.T, d *dev, ids []string) map[string]int {
	t.Helper()
	ends := map[string]int{}
	for _, id := range ids {
		job := call[schemas.Job](d, "jobs.get", schemas.IDRequest{ID: id})
		ends[job.Status]++
		for _, task := range job.Tasks {
			seen := map[int]bool{}
			for _, o := range task.Outputs {
				require.False(t, seen[o.Revision], "task %s staged revision %d twice", task.Key, o.Revision)
				seen[o.Revision] = true
			}
			if task.Status == schemas.TaskPromoted {
				promoted := 0
				for _, o := range task.Outputs {
					if o.Status == schemas.OutputPromoted {
						promoted++
					}
				}
				require.Equal(t, 1, promoted, "task %s promoted once", task.Key)
			}
		}
	}
	dead := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{Limit: 1000})
	report(t, "reconciliation: submitted %d = done %d + failed %d + cancelled %d; dead letters %d",
		len(ids), ends[schemas.JobDone], ends[schemas.JobFailed], ends[schemas.JobCancelled], len(dead.DeadLetters))
	require.Equal(t, len(ids), ends[schemas.JobDone]+ends[schemas.JobFailed]+ends[schemas.JobCancelled], "every job ended: %v", ends)
	return ends
}

func streamMsgs(t *testing.T, d *dev, stream string) uint64 {
	t.Helper()
	js, err := jetstream.New(d.NC)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	info, err := s.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "troupe.json")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o644))
	return path
}

// TestPoisonTask: a task that panics its worker on every delivery ends in
// TROUPE_DLQ after MaxDeliver with its reason and is gone from
// TROUPE_TASKS; its job fails saying why; the worker keeps serving others.
func TestPoisonTask(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, `{"roles": {"developer": {"maxDeliver": 3, "backoff": ["50ms"]}}}`)
	d := startDevIn(t, t.TempDir(), []string{"TROUPE_FAULT_PANIC_ON=POISON"}, "--config", cfg)
	events := d.events("*.*")

	poison := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Poisoned", Tasks: []schemas.PlanTask{
		{Key: "impl", Role: "developer", Instructions: "This task is POISON."},
	}})
	healthy := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Healthy", Tasks: []schemas.PlanTask{
		{Key: "impl", Role: "developer", Instructions: "Build it."},
	}})

	failed := d.waitJobEnd(events, poison.ID)
	require.Equal(t, schemas.JobFailed, failed.Status)
	require.Contains(t, failed.Reason, "dead-lettered: task impl (developer)")
	require.Contains(t, failed.Reason, "simulated crash")
	require.Equal(t, schemas.TaskDeadLettered, failed.Tasks[0].Status)
	require.Equal(t, 3, failed.Tasks[0].Attempts, "delivered MaxDeliver times")

	done := d.waitJobEnd(events, healthy.ID)
	require.Equal(t, schemas.JobDone, done.Status)

	list := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{DeadLetterFilter: schemas.DeadLetterFilter{JobID: poison.ID}})
	require.Len(t, list.DeadLetters, 1)
	dl := list.DeadLetters[0]
	require.Equal(t, "workers-developer", dl.Source)
	require.Equal(t, "exhausted", dl.Class)
	require.Equal(t, 3, dl.Attempts)
	require.Equal(t, "troupe.tasks.developer", dl.Subject)
	require.Contains(t, dl.Reason, "simulated crash")
	require.Zero(t, streamMsgs(t, d, "TROUPE_TASKS"), "gone from the work queue")
	require.EqualValues(t, 1, streamMsgs(t, d, "TROUPE_DLQ"))

	stdout, stderr, code := d.cli("submit", "--wait", "--title", "Poisoned again", "--task", "impl:developer:POISON")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stdout, "dead-lettered")
	reconcile(t, d, []string{poison.ID, healthy.ID})
}

// TestBadMessagesDeadLettered: messages published by hand that are not
// JSON, fail their schema or name an unknown task are dead-lettered on
// their first delivery with the validation error.
func TestBadMessagesDeadLettered(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	cases := []struct {
		subject, body, source, want string
	}{
		{"troupe.tasks.developer", `not json`, "workers-developer", "invalid JSON"},
		{"troupe.tasks.developer", `{"task_id": 5, "job_id": "j", "key": "k", "role": "developer", "revision": 0}`, "workers-developer", "task_id: must be a string"},
		{"troupe.tasks.tester", `{"task_id":"no-such-task","job_id":"j","key":"k","role":"tester","revision":0}`, "workers-tester", `unknown task "no-such-task"`},
		{"troupe.tasks.pm", `{"task_id":"t","job_id":"j","key":"k","role":"developer","revision":0}`, "workers-pm", `is for role "developer" but arrived on troupe.tasks.pm`},
		{"troupe.review.writer", `{"output_id": "x"}`, "review", "job_id: is required"},
		{"troupe.review.writer", `{"output_id":"nope","task_id":"t","job_id":"j","role":"writer","revision":0}`, "review", `unknown output "nope"`},
	}
	for _, c := range cases {
		require.NoError(t, d.NC.Publish(c.subject, []byte(c.body)))
	}
	var list schemas.DeadLetterList
	require.Eventually(t, func() bool {
		list = call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{})
		return len(list.DeadLetters) == len(cases)
	}, 30*time.Second, 20*time.Millisecond)
	for _, c := range cases {
		found := false
		for _, dl := range list.DeadLetters {
			if dl.Payload == c.body {
				found = true
				require.Equal(t, c.source, dl.Source, c.body)
				require.Equal(t, "permanent", dl.Class, c.body)
				require.Equal(t, 1, dl.Attempts, "dead-lettered on the first delivery: %s", c.body)
				require.Contains(t, dl.Reason, c.want)
				require.Equal(t, c.subject, dl.Subject)
			}
		}
		require.True(t, found, "no dead letter for %s", c.body)
	}
	require.Zero(t, streamMsgs(t, d, "TROUPE_TASKS"))
	require.Zero(t, streamMsgs(t, d, "TROUPE_REVIEW"))

	// The DLQ stream holds them with the headers that say why.
	js, err := jetstream.New(d.NC)
	require.NoError(t, err)
	cons, err := js.OrderedConsumer(context.Background(), "TROUPE_DLQ", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	require.NotEmpty(t, msg.Headers().Get("Troupe-Reason"))
	require.Equal(t, "permanent", msg.Headers().Get("Troupe-Error-Class"))
	require.Equal(t, "1", msg.Headers().Get("Troupe-Deliveries"))
	require.NotEmpty(t, msg.Headers().Get("Troupe-Original-Subject"))
	require.NotEmpty(t, msg.Headers().Get("Troupe-Stream-Seq"))

	// Discard keeps a record.
	stdout, stderr, code := d.cli("dlq", "discard", "--all", "--source", "review")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "2 dead letter(s) discarded")
	discarded := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{DeadLetterFilter: schemas.DeadLetterFilter{Status: "discarded"}})
	require.Len(t, discarded.DeadLetters, 2)
	require.NotEmpty(t, discarded.DeadLetters[0].ResolvedBy)
}

// TestReplayAfterFix: a task dead-lettered by a crash is replayed after
// the cause is fixed (troupe dev restarted without the fault); the job is
// revived and completes, and the lineage shows in dlq show and jobs show.
func TestReplayAfterFix(t *testing.T) {
	forEachStore(t, func(t *testing.T, storeArgs []string) {
		dir := t.TempDir()
		cfg := writeConfig(t, `{"roles": {"developer": {"maxDeliver": 2, "backoff": ["50ms"]}}}`)
		d := startDevIn(t, dir, []string{"TROUPE_FAULT_PANIC_ON=POISON"}, append(storeArgs, "--config", cfg)...)
		events := d.events("*.*")
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Flaky", Tasks: []schemas.PlanTask{
			{Key: "prd", Role: "pm"},
			{Key: "impl", Role: "developer", Instructions: "Crashes with POISON until fixed.", DependsOn: []string{"prd"}},
			{Key: "docs", Role: "writer", DependsOn: []string{"impl"}},
		}})
		require.Equal(t, schemas.JobFailed, d.waitJobEnd(events, job.ID).Status)
		list := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{DeadLetterFilter: schemas.DeadLetterFilter{JobID: job.ID}})
		require.Len(t, list.DeadLetters, 1)
		dlID := list.DeadLetters[0].ID

		// Fix the cause: restart without the fault, on the same data.
		d.Stop()
		d = startDevIn(t, dir, nil, append(storeArgs, "--config", cfg)...)
		events = d.events("*.*")
		stdout, stderr, code := d.cli("dlq", "replay", dlID, "--by", "ops")
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "1 dead letter(s) replayed")

		done := d.waitJobEnd(events, job.ID)
		require.Equal(t, schemas.JobDone, done.Status, done.Reason)

		stdout, _, code = d.cli("dlq", "show", dlID)
		require.Equal(t, 0, code)
		require.Contains(t, stdout, "replayed by ops")
		stdout, _, code = d.cli("jobs", "show", job.ID)
		require.Equal(t, 0, code)
		require.Contains(t, stdout, "task_dead_lettered")
		require.Contains(t, stdout, "dead_letter_replayed: dead letter "+dlID+" replayed by ops")

		// Replaying twice is refused.
		_, stderr, code = d.cli("dlq", "replay", dlID)
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "is replayed already")
		reconcile(t, d, []string{job.ID})
	})
}

// TestReconcilerRedispatchesLostTask: a task message purged from
// TROUPE_TASKS while its job runs is re-dispatched by the reconciler, and
// the job completes.
func TestReconcilerRedispatchesLostTask(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeConfig(t, `{"reliability": {"reconcileInterval": "200ms", "staleAfter": "1s"}}`)
	// No developer worker in troupe dev: the task waits in the stream.
	d := startDevIn(t, dir, nil, "--config", cfg, "--roles", "pm,architect,tester,writer,devops")
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Lost", Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
	require.Eventually(t, func() bool { return streamMsgs(t, d, "TROUPE_TASKS") == 1 }, 10*time.Second, 10*time.Millisecond)

	js, err := jetstream.New(d.NC)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), "TROUPE_TASKS")
	require.NoError(t, err)
	require.NoError(t, s.Purge(context.Background()))

	redispatched := waitEvent(t, events, func(ev schemas.Event) bool {
		return ev.JobID == job.ID && ev.Kind == schemas.EventTaskRedispatched
	})
	require.Contains(t, redispatched.Message, "sent again")

	// A developer worker in its own process picks it up.
	startProc(t, nil, "worker", "--role", "developer", "--nats-url", d.URL, "--database-url", filepath.Join(dir, "data", "troupe.db"))
	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status)
	reconcile(t, d, []string{job.ID})
}

// TestKillWorker: kill -9 of a worker process with tasks in flight; every
// task is promoted exactly once after another worker takes over.
func TestKillWorker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeConfig(t, `{"reliability": {"ackWait": "2s"}}`)
	d := startDevIn(t, dir, nil, "--config", cfg, "--roles", "pm,architect,tester,writer,devops")
	events := d.events("*.*")
	db := filepath.Join(dir, "data", "troupe.db")
	worker := startProc(t, nil, "worker", "--role", "developer", "--concurrency", "4", "--offline-latency", "3s",
		"--nats-url", d.URL, "--database-url", db, "--config", cfg)
	worker.waitLog("worker started")

	var ids []string
	for i := range 8 {
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: fmt.Sprintf("Job %d", i), Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
		ids = append(ids, job.ID)
	}
	// Wait until four tasks run in the worker, then kill it.
	require.Eventually(t, func() bool { return strings.Count(worker.logs.String(), "task started") >= 4 }, 30*time.Second, 10*time.Millisecond)
	worker.kill()

	startProc(t, nil, "worker", "--role", "developer", "--concurrency", "8",
		"--nats-url", d.URL, "--database-url", db, "--config", cfg)
	for _, id := range ids {
		require.Equal(t, schemas.JobDone, d.waitJobEnd(events, id).Status)
	}
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
}

// TestSIGTERMWorker: SIGTERM to a worker during a run: it lets running
// tasks finish, exits 0 within the grace period, and nothing is lost.
func TestSIGTERMWorker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := startDevIn(t, dir, nil, "--roles", "pm,architect,tester,writer,devops")
	events := d.events("*.*")
	db := filepath.Join(dir, "data", "troupe.db")
	worker := startProc(t, nil, "worker", "--role", "developer", "--concurrency", "2", "--offline-latency", "1s",
		"--nats-url", d.URL, "--database-url", db, "--grace", "10s")
	worker.waitLog("worker started")
	var ids []string
	for i := range 6 {
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: fmt.Sprintf("Job %d", i), Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
		ids = append(ids, job.ID)
	}
	worker.waitLog("task started")
	code, took := worker.term(15 * time.Second)
	require.Equal(t, 0, code, worker.logs.String())
	t.Logf("worker exited 0 %s after SIGTERM", took.Round(time.Millisecond))
	require.Contains(t, worker.logs.String(), "output staged", "the running task finished before exit")

	startProc(t, nil, "worker", "--role", "developer", "--nats-url", d.URL, "--database-url", db)
	for _, id := range ids {
		require.Equal(t, schemas.JobDone, d.waitJobEnd(events, id).Status)
	}
	reconcile(t, d, ids)
}

var _ = json.Marshal

// TestSweeperCatchesCrashLoop: a task that kills its worker process on
// every delivery is never settled; after MaxDeliver deliveries the sweeper
// (following the MAX_DELIVERIES advisory) dead-letters it and removes it
// from TROUPE_TASKS, and the next worker serves other tasks.
func TestSweeperCatchesCrashLoop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeConfig(t, `{"roles": {"developer": {"maxDeliver": 2}}, "reliability": {"ackWait": "1s"}}`)
	d := startDevIn(t, dir, nil, "--config", cfg, "--roles", "pm,architect,tester,writer,devops")
	events := d.events("*.*")
	db := filepath.Join(dir, "data", "troupe.db")
	env := []string{"TROUPE_FAULT_EXIT_ON=CRASH"}
	args := []string{"worker", "--role", "developer", "--nats-url", d.URL, "--database-url", db, "--config", cfg, "--ops-addr", ""}

	deadly := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Deadly", Tasks: []schemas.PlanTask{
		{Key: "impl", Role: "developer", Instructions: "This one CRASHes the worker."},
	}})
	// A supervisor that restarts the worker each time it dies, as
	// Kubernetes would, until the dead letter shows.
	crashes := 0
	for {
		w := startProc(t, env, args...)
		select {
		case <-w.done:
			crashes++
			require.Contains(t, w.logs.String(), "simulated crash")
			continue
		case <-time.After(5 * time.Second):
		}
		// Alive for 5s: the poison is gone from its queue.
		break
	}
	failed := d.waitJobEnd(events, deadly.ID)
	require.Equal(t, schemas.JobFailed, failed.Status)
	require.Equal(t, 2, crashes, "the worker died on each of MaxDeliver deliveries")
	list := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{DeadLetterFilter: schemas.DeadLetterFilter{JobID: deadly.ID}})
	require.Len(t, list.DeadLetters, 1)
	require.Equal(t, "exhausted", list.DeadLetters[0].Class)
	require.Contains(t, list.DeadLetters[0].Reason, "without being settled (MaxDeliver)")
	require.Zero(t, streamMsgs(t, d, "TROUPE_TASKS"))

	// The surviving worker serves the next task.
	fine := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Fine", Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
	require.Equal(t, schemas.JobDone, d.waitJobEnd(events, fine.ID).Status)
	reconcile(t, d, []string{deadly.ID, fine.ID})
}
