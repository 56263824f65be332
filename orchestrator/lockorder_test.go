package orchestrator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
)

// TestRevisionTakesTheJobBeforeItsTask: failing a task at its last
// revision takes its job's row before the task's, as cancelling the job
// does; in the other order the two deadlock on PostgreSQL, which aborts
// one for a retry. The task's row is held by another transaction; the
// revision must then already hold the job's.
func TestRevisionTakesTheJobBeforeItsTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u := postgrestest.TestURL(t)
	st, err := postgres.Open(ctx, u)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })

	job := store.Job{ID: uuid.NewString(), Title: "J", Status: schemas.JobRunning}
	task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "t", Role: "developer", Status: schemas.TaskRejected, Revision: 2}
	_, _, err = st.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{task}})
	require.NoError(t, err)

	holder, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	t.Cleanup(func() { _ = holder.Close(ctx) })
	tx, err := holder.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE`, task.ID)
	require.NoError(t, err)

	s := New(Config{Logger: zerolog.New(zerolog.NewTestWriter(t))}, st, nil, nil)
	done := make(chan error, 1)
	go func() { done <- s.revise(ctx, schemas.Event{JobID: job.ID, TaskID: task.ID, Revision: 2}) }()

	// Wait until the revision waits for the task's row.
	probe, err := pgx.Connect(ctx, u)
	require.NoError(t, err)
	t.Cleanup(func() { _ = probe.Close(ctx) })
	pid := holder.PgConn().PID()
	require.Eventually(t, func() bool {
		var n int
		err := probe.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&n)
		return err == nil && n > 0
	}, 30*time.Second, 10*time.Millisecond, "the revision waits for the task")

	ptx, err := probe.Begin(ctx)
	require.NoError(t, err)
	_, err = ptx.Exec(ctx, `SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE NOWAIT`, job.ID)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr) && pgErr.Code == "55P03", "the revision holds the job's row while it waits for the task's: %v", err)
	require.NoError(t, ptx.Rollback(ctx))

	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, <-done)
	got, err := st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobFailed, got.Status)
	gotTask, err := st.TaskGetByID(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskFailed, gotTask.Status)
}
