package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// jobWith stores a running job whose tasks have the given statuses.
func jobWith(t *testing.T, st store.Store, statuses ...string) (store.Job, []store.Task) {
	t.Helper()
	job := store.Job{ID: uuid.NewString(), Title: "J", Status: schemas.JobRunning}
	var tasks []store.Task
	for i, s := range statuses {
		tasks = append(tasks, store.Task{ID: uuid.NewString(), JobID: job.ID, Key: fmt.Sprintf("t%d", i), Role: "developer", Status: s})
	}
	_, _, err := st.JobCreate(context.Background(), store.JobCreateParams{Job: job, Tasks: tasks})
	require.NoError(t, err)
	return job, tasks
}

func taskLetter(task store.Task, revision int) schemas.DeadLetter {
	payload, _ := json.Marshal(schemas.TaskMessage{TaskID: task.ID, JobID: task.JobID, Key: task.Key, Role: task.Role, Revision: revision})
	return bus.NewDeadLetter("workers-developer", "TROUPE_TASKS", uint64(time.Now().UnixNano()), time.Now(), "troupe.tasks.developer", payload, nil, "boom", bus.ClassExhausted, 3)
}

func book(t *testing.T) (*DeadLetters, store.Store) {
	st := sqlite.NewTestStore(t)
	return &DeadLetters{Store: st, Subjects: bus.Subjects{Prefix: "troupe"}, Log: zerolog.New(zerolog.NewTestWriter(t))}, st
}

func status(t *testing.T, st store.Store, taskID, jobID string) (string, string) {
	t.Helper()
	task, err := st.TaskGetByID(context.Background(), taskID)
	require.NoError(t, err)
	job, err := st.JobGetByID(context.Background(), jobID)
	require.NoError(t, err)
	return task.Status, job.Status
}

// TestDeadLetterOnlyStopsATaskThatWaitsForIt: a dead letter for an old
// revision, or for a task whose work got done meanwhile, is recorded and
// changes nothing.
func TestDeadLetterOnlyStopsATaskThatWaitsForIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, st := book(t)
	job, tasks := jobWith(t, st, schemas.TaskStaged, schemas.TaskQueued)

	require.NoError(t, b.Record(ctx, taskLetter(tasks[0], 0)), "a task message for a staged task")
	ts, js := status(t, st, tasks[0].ID, job.ID)
	require.Equal(t, schemas.TaskStaged, ts)
	require.Equal(t, schemas.JobRunning, js)

	require.NoError(t, b.Record(ctx, taskLetter(tasks[1], 4)), "an old revision's message")
	ts, _ = status(t, st, tasks[1].ID, job.ID)
	require.Equal(t, schemas.TaskQueued, ts)

	dls, err := st.DeadLetterList(ctx, store.DeadLetterListParams{JobID: job.ID})
	require.NoError(t, err)
	require.Len(t, dls, 2, "both are recorded")

	require.NoError(t, b.Record(ctx, taskLetter(tasks[1], 0)), "the current one stops it")
	ts, js = status(t, st, tasks[1].ID, job.ID)
	require.Equal(t, schemas.TaskDeadLettered, ts)
	require.Equal(t, schemas.JobFailed, js)
}

// TestReplayRevivesOnlyWhenNothingElseWaits: two tasks of a job are
// dead-lettered; the job runs again only after both are replayed; a
// discard fails the task and the job for good.
func TestReplayRevivesOnlyWhenNothingElseWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, st := book(t)
	job, tasks := jobWith(t, st, schemas.TaskRunning, schemas.TaskRunning, schemas.TaskPending)
	first, second := taskLetter(tasks[0], 0), taskLetter(tasks[1], 0)
	require.NoError(t, b.Record(ctx, first))
	require.NoError(t, b.Record(ctx, second))

	_, err := b.Replay(ctx, first.ID, "ops")
	require.NoError(t, err)
	ts, js := status(t, st, tasks[0].ID, job.ID)
	require.Equal(t, schemas.TaskQueued, ts)
	require.Equal(t, schemas.JobFailed, js, "the other task still waits for a replay")

	_, err = b.Replay(ctx, second.ID, "ops")
	require.NoError(t, err)
	_, js = status(t, st, tasks[1].ID, job.ID)
	require.Equal(t, schemas.JobRunning, js)

	unsent, err := st.OutboxListUnsent(ctx, 100)
	require.NoError(t, err)
	replays := 0
	for _, m := range unsent {
		if m.Headers[bus.HeaderReplayOf] != "" {
			replays++
			var tm schemas.TaskMessage
			require.NoError(t, json.Unmarshal(m.Payload, &tm))
			require.Equal(t, 0, tm.Revision)
		}
	}
	require.Equal(t, 2, replays)

	// A third dead letter, discarded: the task fails and so does the job.
	third := taskLetter(tasks[0], 0)
	require.NoError(t, b.Record(ctx, third))
	_, err = b.Discard(ctx, third.ID, "ops")
	require.NoError(t, err)
	ts, js = status(t, st, tasks[0].ID, job.ID)
	require.Equal(t, schemas.TaskFailed, ts)
	require.Equal(t, schemas.JobFailed, js)
	pending, _ := status(t, st, tasks[2].ID, job.ID)
	require.Equal(t, schemas.TaskCancelled, pending, "nothing waits in a failed job")
}
