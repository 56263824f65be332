package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// abortingStore runs the first transaction twice, as the store does
// when the database aborts one (a deadlock, a serialization failure):
// the first run is rolled back, then between runs happens.
type abortingStore struct {
	store.Store
	between func()
	once    sync.Once
}

var errAborted = errors.New("aborted by the database")

func (s *abortingStore) InTx(ctx context.Context, fn func(q store.Querier) error) error {
	s.once.Do(func() {
		_ = s.Store.InTx(ctx, func(q store.Querier) error {
			if err := fn(q); err != nil {
				return err
			}
			return errAborted
		})
		s.between()
	})
	return s.Store.InTx(ctx, fn)
}

// TestRetriedTransactionSaysOnlyWhatItDid: a job's completion whose first
// run the database aborted runs again and finds the job finished by
// someone else meanwhile: it does not say "job done" (the other did),
// nor wake the relay for rows it did not write.
func TestRetriedTransactionSaysOnlyWhatItDid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	job := store.Job{ID: "6c1e6f5e-3b7a-4f0e-9c55-1d3f9b0e2a10", Title: "J", Status: schemas.JobRunning, BudgetTokens: 1_000_000}
	task := store.Task{ID: "0e9f4c8a-5b1d-4e27-8f3a-2c6d7b9e1f04", JobID: job.ID, Key: "t", Role: "developer", Status: schemas.TaskPromoted}
	_, _, err := st.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
	require.NoError(t, err)
	aborting := &abortingStore{Store: st, between: func() {
		_, err := st.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobRunning}, To: schemas.JobDone})
		require.NoError(t, err)
	}}
	var logs bytes.Buffer
	notified := 0
	s := New(Config{Logger: zerolog.New(&logs), Notify: func() { notified++ }}, aborting, nil, nil)

	require.NoError(t, s.advance(ctx, job.ID))
	require.NotContains(t, logs.String(), "job done", "someone else finished it")
	require.Zero(t, notified)
}

// TestRetriedRevisionLogsOnce: a revision whose first run the database
// aborted is logged once, for the run that committed.
func TestRetriedRevisionLogsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	job, tasks := jobWith(t, st, schemas.TaskRejected)
	aborting := &abortingStore{Store: st, between: func() {}}
	var logs bytes.Buffer
	s := New(Config{Logger: zerolog.New(&logs)}, aborting, nil, nil)

	require.NoError(t, s.revise(ctx, schemas.Event{JobID: job.ID, TaskID: tasks[0].ID, Revision: 0}))
	require.Equal(t, 1, strings.Count(logs.String(), "task sent back for revision"), logs.String())
	got, err := st.TaskGetByID(ctx, tasks[0].ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskQueued, got.Status)
	require.Equal(t, 1, got.Revision)
}
