package store_test

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/storetest"
)

// BenchmarkStage times what a worker writes when its model has answered:
// one transaction that stages the output, moves the task to staged, and
// queues the review request and the output_staged event in the outbox —
// the store calls of worker.stage, in its order, through the public store
// API. One op is one stage of a fresh running task; the tasks are seeded
// before the timer starts. Run it with
//
//	go test -run '^$' -bench Stage ./store/
//
// PostgreSQL is benchmarked when TROUPE_TEST_DATABASE_URL is set.
func BenchmarkStage(b *testing.B) {
	storetest.ForEachBackend(b, func(b *testing.B, st store.Store) {
		ctx := context.Background()
		tasks := seedRunning(b, st, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if err := stage(ctx, st, tasks[i]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stages/s")
	})
}

// BenchmarkStageParallel is BenchmarkStage with many stages at once, as
// workers stage concurrently: 4×GOMAXPROCS goroutines (two workers of the
// default concurrency 4 on two CPUs). stages/s is the store's throughput;
// SQLite's one connection takes them in turn.
func BenchmarkStageParallel(b *testing.B) {
	storetest.ForEachBackend(b, func(b *testing.B, st store.Store) {
		ctx := context.Background()
		tasks := seedRunning(b, st, b.N)
		var next atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := stage(ctx, st, tasks[next.Add(1)-1]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stages/s")
	})
}

var subj = bus.Subjects{Prefix: bus.DefaultPrefix}

// What a model answers, in sizes a developer task gives: a summary, three
// files (12 KiB), and the prompt that asked for them (6 KiB).
var (
	benchContent = strings.Repeat("Implemented the per-key limiter with a token bucket; see the files. ", 24)
	benchFiles   = []schemas.File{
		{Path: "limiter/limiter.go", Content: strings.Repeat("// Allow reports whether the key may make a request now.\n", 96)},
		{Path: "limiter/limiter_test.go", Content: strings.Repeat("func TestAllow(t *testing.T) { /* table of keys and rates */ }\n", 64)},
		{Path: "README.md", Content: strings.Repeat("Requests over the limit get 429 with Retry-After.\n", 32)},
	}
	benchPrompt = strings.Repeat("You are the developer. Write the code the design asks for, with tests. ", 88)
)

// stage is worker.stage's transaction.
func stage(ctx context.Context, st store.Store, task store.Task) error {
	out := store.Output{
		ID: uuid.NewString(), TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision,
		Status: schemas.OutputStaged, Content: benchContent, Files: benchFiles, Model: "offline",
		PromptTokens: 2100, CompletionTokens: 4300, LatencyMS: 5200, Prompt: benchPrompt,
	}
	return st.InTx(ctx, func(q store.Querier) error {
		if err := q.OutputAdd(ctx, out, fmt.Errorf("task %s: staged twice", task.ID)); err != nil {
			return err
		}
		staged, rev, noReason := schemas.TaskStaged, task.Revision, ""
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{
			ID: task.ID, From: []string{schemas.TaskQueued, schemas.TaskRunning}, Revision: &rev, Status: &staged, Reason: &noReason,
			Else: errors.New("task moved on"),
		}); err != nil {
			return err
		}
		m, err := bus.OutboxJSON(subj.Review(task.Role), "review."+out.ID, schemas.ReviewRequest{
			OutputID: out.ID, TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision,
		})
		if err != nil {
			return err
		}
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{m}); err != nil {
			return err
		}
		return bus.Emit(ctx, q, subj, schemas.Event{
			JobID: task.JobID, TaskID: task.ID, OutputID: out.ID, Kind: schemas.EventOutputStaged,
			Role: task.Role, Revision: task.Revision, Message: fmt.Sprintf("%d files", len(out.Files)),
		})
	})
}

// seedRunning creates n running tasks at revision 0, six to a job (one per
// role, as the default plan), 100 jobs to a transaction. The seeding runs
// under the pprof label troupe_bench=seed, so a CPU profile can leave it
// out: go tool pprof -tagignore troupe_bench=seed.
func seedRunning(b *testing.B, st store.Store, n int) []store.Task {
	b.Helper()
	tasks := make([]store.Task, 0, n)
	var err error
	pprof.Do(context.Background(), pprof.Labels("troupe_bench", "seed"), func(ctx context.Context) {
		for len(tasks) < n && err == nil {
			var chunk []store.Task
			err = st.InTx(ctx, func(q store.Querier) error {
				chunk = chunk[:0] // InTx may run fn again
				for j := 0; j < 100 && len(tasks)+len(chunk) < n; j++ {
					job := store.Job{ID: uuid.NewString(), Title: "Per-key rate limiting", Brief: "Add per-API-key limits.", Status: schemas.JobRunning}
					var batch []store.Task
					for _, role := range schemas.Roles[:min(len(schemas.Roles), n-len(tasks)-len(chunk))] {
						batch = append(batch, store.Task{
							ID: uuid.NewString(), JobID: job.ID, Key: role, Role: role,
							Instructions: "Do the " + role + " part.", Status: schemas.TaskRunning, Attempts: 1,
						})
					}
					if _, _, err := q.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: batch}); err != nil {
						return err
					}
					chunk = append(chunk, batch...)
				}
				return nil
			})
			if err == nil {
				tasks = append(tasks, chunk...)
			}
		}
	})
	if err != nil {
		b.Fatalf("seeding tasks: %v", err)
	}
	return tasks
}
