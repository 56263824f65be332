package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// againDialect is testDialect whose next transaction, once armed, runs
// the caller's function, is rolled back and fails as a deadlock does,
// after another transaction (meanwhile) has committed: what a store does
// on a deadlock or a lost connection, when its function runs again.
type againDialect struct {
	testDialect
	armed     atomic.Bool
	meanwhile func()
}

var errDeadlock = errors.New("deadlock detected (injected)")

func (d *againDialect) IsRetryable(err error) bool { return errors.Is(err, errDeadlock) }

func (d *againDialect) RunTx(ctx context.Context, db *sql.DB, fn func(tx DBTX) error) error {
	if !d.armed.CompareAndSwap(true, false) {
		return stdTx(ctx, db, fn)
	}
	err := stdTx(ctx, db, func(tx DBTX) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errDeadlock // rolled back
	})
	if !errors.Is(err, errDeadlock) {
		return err
	}
	d.meanwhile()
	return errDeadlock
}

// againStore is a store on a SQLite database with Troupe's schema whose
// transactions run through d, and a plain store on the same database for
// what happens meanwhile.
func againStore(t *testing.T) (s, plain *Queries, d *againDialect) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "again.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_txlock=immediate")
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	files, err := filepath.Glob("../../sqlite/migrations/*.sql")
	require.NoError(t, err)
	sort.Strings(files)
	for _, f := range files {
		ddl, err := os.ReadFile(f)
		require.NoError(t, err)
		_, err = db.Exec(string(ddl))
		require.NoError(t, err, f)
	}
	d = &againDialect{}
	return &Queries{db: stdDB{db}, dialect: d, pool: db}, &Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, d
}

// A submission whose transaction runs again after another submission took
// its idempotency key meanwhile is told the job exists: not that it
// created one.
func TestJobCreateRunAgainAfterTheKeyWasTaken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, plain, d := againStore(t)
	var other store.Job
	d.meanwhile = func() {
		var err error
		other, _, err = plain.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "other", IdempotencyKey: "k", Status: schemas.JobRunning}})
		require.NoError(t, err)
	}
	d.armed.Store(true)
	job, created, err := s.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "mine", IdempotencyKey: "k", Status: schemas.JobRunning},
		Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
	})
	require.NoError(t, err)
	require.False(t, d.armed.Load(), "the transaction ran again")
	require.False(t, created, "the other submission created the job")
	require.Equal(t, other.ID, job.ID)
	require.Equal(t, "other", job.Title)
}

// A stage whose transaction runs again after another delivery staged the
// same revision meanwhile returns that output, not created.
func TestOutputStageRunAgainAfterAnotherStaged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, plain, d := againStore(t)
	job, _, err := plain.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "j", Status: schemas.JobRunning},
		Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskRunning}},
	})
	require.NoError(t, err)
	tasks, err := plain.TaskListByJob(ctx, job.ID)
	require.NoError(t, err)
	task := tasks[0]
	var other store.Output
	d.meanwhile = func() {
		var err error
		other, _, err = plain.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: job.ID, Role: "pm", Status: schemas.OutputStaged, Content: "theirs"})
		require.NoError(t, err)
	}
	d.armed.Store(true)
	out, created, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: job.ID, Role: "pm", Status: schemas.OutputStaged, Content: "mine"})
	require.NoError(t, err)
	require.False(t, d.armed.Load(), "the transaction ran again")
	require.False(t, created)
	require.Equal(t, other.ID, out.ID)
	require.Equal(t, "theirs", out.Content)
}

// A start whose transaction runs again after the task was cancelled
// meanwhile does not start it.
func TestTaskStartRunAgainAfterTheTaskMoved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, plain, d := againStore(t)
	job, _, err := plain.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "j", Status: schemas.JobRunning},
		Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
	})
	require.NoError(t, err)
	tasks, err := plain.TaskListByJob(ctx, job.ID)
	require.NoError(t, err)
	task := tasks[0]
	d.meanwhile = func() {
		cancelled := schemas.TaskCancelled
		moved, err := plain.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, Status: &cancelled})
		require.NoError(t, err)
		require.True(t, moved)
	}
	d.armed.Store(true)
	_, started, err := s.TaskStart(ctx, store.TaskStartParams{ID: task.ID, JobID: job.ID, Role: "pm"})
	require.NoError(t, err)
	require.False(t, d.armed.Load(), "the transaction ran again")
	require.False(t, started, "the task was cancelled meanwhile")
}
