package review_test

import (
	"context"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/storetest"
)

// BenchmarkPromote times a promotion through Service.Decide, the path of a
// person's decision: it reads the output, then in one transaction moves
// the task and the output to promoted, records the review, adds an
// artifact version per file (three here) and queues the output_promoted
// event in the outbox. A promotion by the rules (the default policy) runs
// the same transaction after the rule checks. One op is one promotion of
// an output parked for review; the outputs are seeded before the timer
// starts. Decide uses the store only, so the service has no NATS
// connection. Run it with
//
//	go test -run '^$' -bench Promote ./review/
//
// PostgreSQL is benchmarked when TROUPE_TEST_DATABASE_URL is set.
func BenchmarkPromote(b *testing.B) {
	storetest.ForEachBackend(b, func(b *testing.B, st store.Store) {
		ctx := context.Background()
		svc := review.NewService(review.Config{Policies: map[string]string{}, Logger: zerolog.Nop()}, st, nil, nil)
		outputs := seedParked(b, st, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			r, err := svc.Decide(ctx, schemas.ReviewDecision{OutputID: outputs[i], Decision: "promote", Reviewer: "alice"})
			if err != nil {
				b.Fatal(err)
			}
			if r.Decision != "promote" {
				b.Fatalf("decision %q", r.Decision)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "promotions/s")
	})
}

// The files of a parked output: 12 KiB in three files.
var benchFiles = []schemas.File{
	{Path: "limiter/limiter.go", Content: strings.Repeat("// Allow reports whether the key may make a request now.\n", 96)},
	{Path: "limiter/limiter_test.go", Content: strings.Repeat("func TestAllow(t *testing.T) { /* table of keys and rates */ }\n", 64)},
	{Path: "README.md", Content: strings.Repeat("Requests over the limit get 429 with Retry-After.\n", 32)},
}

// seedParked creates n outputs that wait for a person, with their tasks,
// six to a job (one per role), 100 jobs to a transaction, and returns the
// outputs' ids. The seeding runs under the pprof label troupe_bench=seed,
// so a CPU profile can leave it out: go tool pprof -tagignore troupe_bench=seed.
func seedParked(b *testing.B, st store.Store, n int) []string {
	b.Helper()
	ids := make([]string, 0, n)
	var err error
	pprof.Do(context.Background(), pprof.Labels("troupe_bench", "seed"), func(ctx context.Context) {
		for len(ids) < n && err == nil {
			var chunk []string
			err = st.InTx(ctx, func(q store.Querier) error {
				chunk = chunk[:0] // InTx may run fn again
				for j := 0; j < 100 && len(ids)+len(chunk) < n; j++ {
					job := store.Job{ID: uuid.NewString(), Title: "Per-key rate limiting", Brief: "Add per-API-key limits.", Status: schemas.JobRunning}
					var tasks []store.Task
					for _, role := range schemas.Roles[:min(len(schemas.Roles), n-len(ids)-len(chunk))] {
						tasks = append(tasks, store.Task{
							ID: uuid.NewString(), JobID: job.ID, Key: role, Role: role,
							Instructions: "Do the " + role + " part.", Status: schemas.TaskAwaitingReview, Attempts: 1,
						})
					}
					if _, _, err := q.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: tasks}); err != nil {
						return err
					}
					for _, t := range tasks {
						out, _, err := q.OutputStage(ctx, store.Output{
							ID: uuid.NewString(), TaskID: t.ID, JobID: job.ID, Role: t.Role,
							Status: schemas.OutputAwaitingReview, Content: "Implemented the limiter.", Files: benchFiles, Model: "offline",
						})
						if err != nil {
							return err
						}
						chunk = append(chunk, out.ID)
					}
				}
				return nil
			})
			if err == nil {
				ids = append(ids, chunk...)
			}
		}
	})
	if err != nil {
		b.Fatalf("seeding outputs: %v", err)
	}
	return ids
}
