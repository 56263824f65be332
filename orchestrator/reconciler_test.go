package orchestrator

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// TestReconcilerFinishesAJobWhoseLastEventWasLost: every task is promoted
// but the event that would have ended the job never came; the reconciler
// ends it.
func TestReconcilerFinishesAJobWhoseLastEventWasLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	job, _ := jobWith(t, st, schemas.TaskPromoted, schemas.TaskPromoted)
	s := New(Config{Logger: zerolog.New(zerolog.NewTestWriter(t))}, st, nil, nil)
	r := newReconciler(s)

	require.NoError(t, r.decisions(ctx, time.Now().Add(-time.Hour)), "not stale yet: left alone")
	got, err := st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobRunning, got.Status)

	require.NoError(t, r.decisions(ctx, time.Now().Add(time.Second)))
	got, err = st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobDone, got.Status)
}

// TestReconcilerWalksEveryStaleJobOldestFirst: a job whose last event was
// lost, behind 700 older and 600 newer stale jobs that stay running, is
// finished within a few passes: each pass goes on, oldest first, from
// where the last one stopped, rather than reading the newest 500 again.
func TestReconcilerWalksEveryStaleJobOldestFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	old := time.Now().Add(-time.Hour)
	var lost string
	err := st.InTx(ctx, func(q store.Querier) error {
		for i := range 1301 {
			// Stuck jobs have a running task: advancing them does nothing.
			status := schemas.TaskRunning
			if i == 700 {
				status = schemas.TaskPromoted
			}
			at := old.Add(time.Duration(i) * time.Millisecond)
			job := store.Job{ID: uuid.NewString(), Title: "J", Status: schemas.JobRunning, CreatedAt: at, UpdatedAt: at}
			task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "t", Role: "developer", Status: status, CreatedAt: at, UpdatedAt: at}
			if _, _, err := q.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}}); err != nil {
				return err
			}
			if i == 700 {
				lost = job.ID
			}
		}
		return nil
	})
	require.NoError(t, err)
	s := New(Config{Logger: zerolog.New(zerolog.NewTestWriter(t))}, st, nil, nil)
	r := newReconciler(s)

	passes := 0
	for ; passes < 4; passes++ {
		got, err := st.JobGetByID(ctx, lost)
		require.NoError(t, err)
		if got.Status == schemas.JobDone {
			break
		}
		require.NoError(t, r.decisions(ctx, time.Now()))
	}
	t.Logf("the job whose last event was lost ended after %d passes", passes)
	got, err := st.JobGetByID(ctx, lost)
	require.NoError(t, err)
	require.Equal(t, schemas.JobDone, got.Status, "finished within 4 passes of 500 jobs each")
}
