package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// mustChange checks the writes that must change a row (the Else of
// TaskUpdateParams, JobSetStatusParams and OutputSetStatusParams, and
// OutputAdd's exists): when one changes none, the whole transaction fails
// with that error, what came before it and after it included; when each
// changes its row, all of it commits.
func mustChange(t *testing.T, ctx context.Context, s store.Store) {
	errNo := errors.New("no row changed")
	task := newTask(t, s) // running, revision 0
	running := []string{schemas.TaskRunning}
	staged := schemas.TaskStaged

	// The task is not queued: the transaction fails at the update, and
	// the writes before and after it are not kept.
	before := store.Lesson{ID: uuid.NewString(), Text: "before", Scope: "all"}
	after := store.Lesson{ID: uuid.NewString(), Text: "after", Scope: "all"}
	err := s.InTx(ctx, func(q store.Querier) error {
		if err := q.LessonInsert(ctx, []store.Lesson{before}); err != nil {
			return err
		}
		moved, err := q.TaskUpdate(ctx, store.TaskUpdateParams{
			ID: task.ID, From: []string{schemas.TaskQueued}, Status: &staged, Else: errNo,
		})
		if err != nil {
			return err
		}
		require.True(t, moved, "a write that must change reports true")
		return q.LessonInsert(ctx, []store.Lesson{after})
	})
	require.ErrorIs(t, err, errNo)
	lessons, err := s.LessonList(ctx, store.LessonListParams{})
	require.NoError(t, err)
	require.Empty(t, lessons, "a failed transaction kept writes")
	got, err := s.TaskGetByID(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, task, got)

	// The same for a job and an output that are not where From says.
	out := store.Output{ID: uuid.NewString(), TaskID: task.ID, JobID: task.JobID, Role: task.Role, Content: "c"}
	_, _, err = s.OutputStage(ctx, out)
	require.NoError(t, err)
	for name, update := range map[string]func(q store.Querier) error{
		"JobSetStatus": func(q store.Querier) error {
			_, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: task.JobID, From: []string{schemas.JobDone}, To: schemas.JobFailed, Else: errNo})
			return err
		},
		"OutputSetStatus": func(q store.Querier) error {
			_, err := q.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: []string{schemas.OutputPromoted}, To: schemas.OutputRejected, Else: errNo})
			return err
		},
		"NoSuchTask": func(q store.Querier) error {
			_, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: uuid.NewString(), Status: &staged, Else: errNo})
			return err
		},
		// A second output of the task's revision.
		"OutputAdd": func(q store.Querier) error {
			return q.OutputAdd(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role}, errNo)
		},
	} {
		err := s.InTx(ctx, func(q store.Querier) error {
			if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, From: running, Status: &staged, Else: errors.New("task")}); err != nil {
				return err
			}
			return update(q)
		})
		require.ErrorIs(t, err, errNo, name)
		got, err := s.TaskGetByID(ctx, task.ID)
		require.NoError(t, err)
		require.Equal(t, schemas.TaskRunning, got.Status, "%s: the task's update was kept", name)
	}
	// Outside a transaction the update returns the error itself.
	_, err = s.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, From: []string{schemas.TaskQueued}, Status: &staged, Else: errNo})
	require.ErrorIs(t, err, errNo)

	// Each changes its row: everything commits.
	task2 := newTask(t, s)
	out2 := store.Output{ID: uuid.NewString(), TaskID: task2.ID, JobID: task2.JobID, Role: task2.Role, Content: "c2"}
	err = s.InTx(ctx, func(q store.Querier) error {
		if err := q.OutputAdd(ctx, out2, errNo); err != nil {
			return err
		}
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: task2.ID, From: running, Status: &staged, Else: errNo}); err != nil {
			return err
		}
		if _, err := q.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out2.ID, From: []string{schemas.OutputStaged}, To: schemas.OutputPromoted, Else: errNo}); err != nil {
			return err
		}
		if _, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: task2.JobID, From: []string{schemas.JobRunning}, To: schemas.JobDone, Else: errNo}); err != nil {
			return err
		}
		return q.LessonInsert(ctx, []store.Lesson{after})
	})
	require.NoError(t, err)
	got, err = s.TaskGetByID(ctx, task2.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskStaged, got.Status)
	gotOut, err := s.OutputGetByID(ctx, out2.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.OutputPromoted, gotOut.Status)
	require.Equal(t, "c2", gotOut.Content)
	job, err := s.JobGetByID(ctx, task2.JobID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobDone, job.Status)
	lessons, err = s.LessonList(ctx, store.LessonListParams{})
	require.NoError(t, err)
	require.Len(t, lessons, 1)

	// OutputAdd of a task that does not exist: ErrNotFound, not exists.
	err = s.InTx(ctx, func(q store.Querier) error {
		return q.OutputAdd(ctx, store.Output{TaskID: uuid.NewString(), JobID: task.JobID, Role: "pm"}, errNo)
	})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NotErrorIs(t, err, errNo)
}

// jobGetWithTasks checks JobGetWithTasks against JobGetByID and
// TaskListByJob: a job with tasks, one without, and none.
func jobGetWithTasks(t *testing.T, ctx context.Context, s store.Store) {
	keys := []string{"z", "a", "m"}
	var tasks []store.Task
	for _, k := range keys {
		tasks = append(tasks, store.Task{Key: k, Role: "pm", Status: schemas.TaskPending})
	}
	job, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobRunning}, Tasks: tasks})
	require.NoError(t, err)
	_, _, err = s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "other", Status: schemas.JobRunning}, Tasks: tasks[:1]})
	require.NoError(t, err)
	bare, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "planning", Status: schemas.JobPlanning}})
	require.NoError(t, err)

	for _, id := range []string{job.ID, bare.ID} {
		wantJob, err := s.JobGetByID(ctx, id)
		require.NoError(t, err)
		wantTasks, err := s.TaskListByJob(ctx, id)
		require.NoError(t, err)
		gotJob, gotTasks, err := s.JobGetWithTasks(ctx, id)
		require.NoError(t, err)
		require.Equal(t, wantJob, gotJob)
		require.Equal(t, len(wantTasks), len(gotTasks))
		if len(wantTasks) > 0 {
			require.Equal(t, wantTasks, gotTasks)
		}
	}
	_, gotTasks, err := s.JobGetWithTasks(ctx, job.ID)
	require.NoError(t, err)
	var gotKeys []string
	for _, task := range gotTasks {
		gotKeys = append(gotKeys, task.Key)
	}
	require.Equal(t, keys, gotKeys, "plan order")

	_, _, err = s.JobGetWithTasks(ctx, uuid.NewString())
	require.ErrorIs(t, err, store.ErrNotFound)
}
