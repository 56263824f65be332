package sqlite_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// TestReadsSeeCommittedWrites: a query sees every write committed before
// it, also while other queries are cancelled midway (a dashboard request
// whose browser navigated away). It guards the reads whatever connection
// they run on: read-only connections beside the writer were tried twice
// (see docs/performance.md), and one left inside an old read transaction
// would serve stale rows from then on.
func TestReadsSeeCommittedWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "troupe.db"))
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Migrate(ctx))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var cancels sync.WaitGroup
	for range 4 {
		cancels.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, time.Duration(i%200)*time.Microsecond)
				_, _ = s.JobList(cctx, store.JobListParams{Limit: 200})
				_, _ = s.OutputList(cctx, store.OutputListParams{Limit: 200})
				cancel()
			}
		})
	}
	defer func() { close(stop); cancels.Wait() }()
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				job, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobRunning},
					Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}}})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.JobGetByID(ctx, job.ID); err != nil {
					t.Errorf("g%d i%d: job just created: %v", g, i, err)
					return
				}
				tasks, err := s.TaskListByJob(ctx, job.ID)
				if err != nil || len(tasks) != 1 {
					t.Errorf("g%d i%d: tasks %v %v", g, i, tasks, err)
					return
				}
				if _, err := s.TaskUpdate(ctx, store.TaskUpdateParams{ID: tasks[0].ID, Status: ptr(schemas.TaskRunning)}); err != nil {
					t.Error(err)
					return
				}
				got, err := s.TaskGetByID(ctx, tasks[0].ID)
				if err != nil || got.Status != schemas.TaskRunning {
					t.Errorf("g%d i%d: task after update: %s %v", g, i, got.Status, err)
					return
				}
				n, err := s.TaskCount(ctx, "pm", []string{schemas.TaskRunning})
				if err != nil || n < 1 {
					t.Errorf("count %d %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func ptr[T any](v T) *T { return &v }
