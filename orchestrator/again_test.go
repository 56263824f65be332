package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// againStore is a store whose next transaction, once armed, runs its
// function, is rolled back, lets meanwhile run, and runs the function
// again: what the store does after a deadlock, a lost connection or a
// group that did not commit.
type againStore struct {
	store.Store
	armed     atomic.Bool
	meanwhile func()
}

var errRunAgain = errors.New("run again (injected)")

func (s *againStore) InTx(ctx context.Context, fn func(q store.Querier) error) error {
	if !s.armed.CompareAndSwap(true, false) {
		return s.Store.InTx(ctx, fn)
	}
	err := s.Store.InTx(ctx, func(q store.Querier) error {
		if err := fn(q); err != nil {
			return err
		}
		return errRunAgain // rolled back
	})
	if !errors.Is(err, errRunAgain) {
		return err
	}
	if s.meanwhile != nil {
		s.meanwhile()
	}
	return s.Store.InTx(ctx, fn)
}

// logLines is a logger's output, safe for concurrent writes.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count is how many lines have the message msg.
func (l *logLines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), `"message":"`+msg+`"`)
}

func capturedLogger(t *testing.T) (zerolog.Logger, *logLines) {
	lines := &logLines{}
	return zerolog.New(zerolog.MultiLevelWriter(lines, zerolog.NewTestWriter(t))), lines
}

// TestJobDoneLoggedOnceWhenItsTransactionRunsAgain: the transaction that
// finishes a job (one with a token budget, checked first) runs again after
// another replica finished the job meanwhile: "job done" is logged once,
// by the one that did it.
func TestJobDoneLoggedOnceWhenItsTransactionRunsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	log, lines := capturedLogger(t)
	job := store.Job{ID: "job-1", Title: "J", Status: schemas.JobRunning, BudgetTokens: 1000}
	_, _, err := st.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{
		{ID: "t-1", JobID: job.ID, Key: "a", Role: "developer", Status: schemas.TaskPromoted},
	}})
	require.NoError(t, err)

	again := &againStore{Store: st}
	s := New(Config{Logger: log}, again, nil, nil)
	other := New(Config{Logger: log}, st, nil, nil)
	again.meanwhile = func() { require.NoError(t, other.advance(ctx, job.ID)) }
	again.armed.Store(true)
	require.NoError(t, s.advance(ctx, job.ID))
	require.False(t, again.armed.Load(), "the transaction ran again")

	got, err := st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobDone, got.Status)
	events, err := st.EventListByJob(ctx, job.ID)
	require.NoError(t, err)
	done := 0
	for _, e := range events {
		if e.Kind == schemas.EventJobDone {
			done++
		}
	}
	require.Equal(t, 1, done)
	require.Equal(t, 1, lines.count("job done"), "one job, done once")
}

// TestRevisionLoggedOnceWhenItsTransactionRunsAgain: a revision whose
// transaction runs again is logged once, after it committed.
func TestRevisionLoggedOnceWhenItsTransactionRunsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	log, lines := capturedLogger(t)
	_, tasks := jobWith(t, st, schemas.TaskRejected)
	again := &againStore{Store: st}
	s := New(Config{Logger: log}, again, nil, nil)
	again.armed.Store(true)
	require.NoError(t, s.revise(ctx, schemas.Event{JobID: tasks[0].JobID, TaskID: tasks[0].ID, Kind: schemas.EventOutputRejected}))
	require.False(t, again.armed.Load(), "the transaction ran again")
	got, err := st.TaskGetByID(ctx, tasks[0].ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskQueued, got.Status)
	require.Equal(t, 1, got.Revision)
	require.Equal(t, 1, lines.count("task sent back for revision"))
}

// TestDeadLetterCountedOnceWhenItsTransactionRunsAgain: a dead letter
// whose transaction runs again after another service recorded it
// meanwhile (a redelivery, say) is counted once.
func TestDeadLetterCountedOnceWhenItsTransactionRunsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	metrics := telemetry.NewMetrics()
	_, tasks := jobWith(t, st, schemas.TaskRunning)
	letter := taskLetter(tasks[0], 0)
	again := &againStore{Store: st}
	b := &DeadLetters{Store: again, Subjects: bus.Subjects{Prefix: "troupe"}, Metrics: metrics, Log: zerolog.New(zerolog.NewTestWriter(t))}
	other := &DeadLetters{Store: st, Subjects: bus.Subjects{Prefix: "troupe"}, Metrics: metrics, Log: zerolog.New(zerolog.NewTestWriter(t))}
	again.meanwhile = func() { require.NoError(t, other.Record(ctx, letter)) }
	again.armed.Store(true)
	require.NoError(t, b.Record(ctx, letter))
	require.False(t, again.armed.Load(), "the transaction ran again")

	rec := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	var counted string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "troupe_dead_letters_total{") {
			counted = line
		}
	}
	require.Equal(t, `troupe_dead_letters_total{class="exhausted",source="workers-developer"} 1`, counted)
}

// TestBudgetStopReportedOnlyWhenItsRunAgainStopped: a budget check whose
// stop runs again after the job was cancelled meanwhile does not report
// the job stopped for its budget.
func TestBudgetStopReportedOnlyWhenItsRunAgainStopped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	job := store.Job{ID: "job-b", Title: "J", Status: schemas.JobRunning, BudgetTokens: 10}
	_, _, err := st.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: []store.Task{
		{ID: "t-b", JobID: job.ID, Key: "a", Role: "developer", Status: schemas.TaskRunning},
	}})
	require.NoError(t, err)
	require.NoError(t, st.ModelCallInsert(ctx, []store.ModelCall{{JobID: job.ID, TaskID: "t-b", Role: "developer", Model: "m", PromptTokens: 20, Outcome: "ok"}}))
	again := &againStore{Store: st}
	again.meanwhile = func() {
		moved, err := st.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobRunning}, To: schemas.JobCancelled})
		require.NoError(t, err)
		require.True(t, moved)
	}
	again.armed.Store(true)
	b := &Budgets{Store: again, Subjects: bus.Subjects{Prefix: "troupe"}}
	spent, err := b.Spent(ctx, job.ID)
	require.NoError(t, err)
	require.False(t, again.armed.Load(), "the transaction ran again")
	require.False(t, spent, "the job was cancelled, not stopped for its budget")
	got, err := st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobCancelled, got.Status)
}
