package worker

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// TestTaskOfAFailedJobWaits: a dead letter failed the job (onDeadLetter
// "fail") and left a sibling task queued; a worker that takes the
// sibling's message does not run it (no model call), and leaves it queued
// for a replay that revives the job.
func TestTaskOfAFailedJobWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, 30*time.Second)
	job := store.Job{ID: uuid.NewString(), Title: "Failed", Status: schemas.JobFailed, Reason: "dead-lettered: task a (pm): boom"}
	task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "impl", Role: "developer", Instructions: "Build it.", Status: schemas.TaskQueued}
	_, _, err := f.store.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
	require.NoError(t, err)
	msg := []byte(`{"task_id":"` + task.ID + `","job_id":"` + job.ID + `","key":"impl","role":"developer","revision":0}`)
	require.NoError(t, bus.Publish(ctx, f.js, "troupe.tasks.developer", "task."+task.ID+".0", msg, nil))

	model := &slowModel{}
	startWorker(t, f, Config{}, model)
	stream, err := f.js.Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 30*time.Second, 10*time.Millisecond, "the message is settled")
	got, err := f.store.TaskGetByID(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskQueued, got.Status)
	require.Zero(t, model.calls.Load(), "no call spent on a failed job")
}
