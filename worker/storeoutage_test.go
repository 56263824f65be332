package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// outageStore is a store whose model-call writes fail while it is down.
type outageStore struct {
	store.Store
	down atomic.Bool
}

func (s *outageStore) ModelCallInsert(ctx context.Context, calls []store.ModelCall) error {
	if s.down.Load() {
		return errors.New("connection refused")
	}
	return s.Store.ModelCallInsert(ctx, calls)
}

// TestWorkerKeepsModelCallsThroughAStoreOutage: a task under a token
// budget records each model call as it returns; the store refuses those
// writes for a while, and the calls reach model_calls once it answers.
func TestWorkerKeepsModelCallsThroughAStoreOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, 30*time.Second)
	st := &outageStore{Store: f.store}
	st.down.Store(true)

	job := store.Job{ID: uuid.NewString(), Title: "Budget", Status: schemas.JobRunning, BudgetTokens: 1_000_000}
	task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "impl", Role: "developer", Instructions: "Build it.", Status: schemas.TaskQueued}
	_, _, err := f.store.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
	require.NoError(t, err)
	msg := []byte(`{"task_id":"` + task.ID + `","job_id":"` + job.ID + `","key":"impl","role":"developer","revision":0}`)
	require.NoError(t, bus.Publish(ctx, f.js, "troupe.tasks.developer", "task."+task.ID+".0", msg, nil))

	w, err := New(Config{Role: "developer", Logger: zerolog.New(zerolog.NewTestWriter(t)),
		BudgetSpent: func(context.Context, string) (bool, error) { return false, nil }}, st, f.js, &llm.Offline{})
	require.NoError(t, err)
	w.calls.Retry = 50 * time.Millisecond
	require.NoError(t, w.Start(ctx))
	t.Cleanup(func() { _ = w.Stop(ctx) })
	f.waitStaged(t, []string{task.ID})
	tokens, err := f.store.ModelCallTokens(ctx, job.ID)
	require.NoError(t, err)
	require.Zero(t, tokens, "the store refused the call's record")

	st.down.Store(false)
	require.Eventually(t, func() bool {
		tokens, err := f.store.ModelCallTokens(ctx, job.ID)
		return err == nil && tokens > 0
	}, 30*time.Second, 10*time.Millisecond, "the call kept through the outage is recorded")
}
