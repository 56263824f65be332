package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
)

// TestReviseAndCancelDoNotDeadlock: on PostgreSQL, a rejection that fails
// its job (the task, the job, then the job's other tasks) or sends the task
// back, and a cancel of the same job (the job, then its tasks), run side by
// side for many jobs. Both take the job's row first, so none of them waits
// for the other in a cycle: no transaction is aborted as a deadlock and run
// again, and every job ends failed or cancelled with no task left open.
func TestReviseAndCancelDoNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := postgrestest.NewTestStore(t)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	failing := New(Config{NoRevisions: true, Logger: log}, st, nil, nil)
	revising := New(Config{Logger: log}, st, nil, nil)

	const jobs = 60
	type pair struct {
		job    store.Job
		task   store.Task
		revise *Service
	}
	pairs := make([]pair, jobs)
	for i := range pairs {
		job := store.Job{ID: uuid.NewString(), Title: fmt.Sprintf("job %d", i), Status: schemas.JobRunning}
		var tasks []store.Task
		for k, status := range []string{schemas.TaskRejected, schemas.TaskQueued, schemas.TaskRunning, schemas.TaskPending} {
			tasks = append(tasks, store.Task{ID: uuid.NewString(), JobID: job.ID, Key: fmt.Sprintf("t%d", k), Role: "developer", Status: status})
		}
		_, _, err := st.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: tasks})
		require.NoError(t, err)
		pairs[i] = pair{job: job, task: tasks[0], revise: failing}
		if i%2 == 1 {
			pairs[i].revise = revising // sent back rather than failed
		}
	}
	before := st.TxRetried()

	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2*jobs)
	for _, p := range pairs {
		wg.Go(func() {
			<-start
			errs <- p.revise.revise(ctx, schemas.Event{JobID: p.job.ID, TaskID: p.task.ID, Kind: schemas.EventOutputRejected})
		})
		wg.Go(func() {
			<-start
			_, err := failing.cancelJob(ctx, schemas.IDRequest{ID: p.job.ID})
			var apiErr *bus.APIError
			if errors.As(err, &apiErr) && apiErr.Status == 409 {
				err = nil // failed by the revision first
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, before, st.TxRetried(), "no transaction was aborted as a deadlock and run again")

	for _, p := range pairs {
		job, tasks, err := st.JobGetWithTasks(ctx, p.job.ID)
		require.NoError(t, err)
		require.Contains(t, []string{schemas.JobFailed, schemas.JobCancelled}, job.Status)
		for _, task := range tasks {
			require.True(t, terminalTask(task.Status), "task %s of job %s is %s", task.Key, job.Status, task.Status)
		}
	}
}
