package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
)

// blockSenders keeps every sender of s's write-only transactions busy:
// each commits an event whose id another transaction has inserted and not
// committed, and so waits for it. Rolling that back (the returned func)
// lets them finish; the events they wrote are then listed under jobID.
func blockSenders(t *testing.T, s *postgres.Store, other *pgx.Conn, jobID string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := other.Begin(ctx)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range postgres.GroupSenders {
		id := fmt.Sprintf("block-%d", i)
		_, err := tx.Exec(ctx, `INSERT INTO events (id, job_id, kind, occurred_at) VALUES ($1, $2, 'k', 0)`, id, jobID)
		require.NoError(t, err)
		before := s.TxGroupStats().Commits
		wg.Go(func() {
			assert := s.InTx(ctx, func(q store.Querier) error {
				return q.EventInsert(ctx, []store.Event{{ID: id, JobID: jobID, Kind: "k"}})
			})
			if assert != nil {
				t.Errorf("blocking transaction %s: %v", id, assert)
			}
		})
		// Taken alone by a sender of its own before the next one queues.
		require.Eventually(t, func() bool { return s.TxGroupStats().Commits > before }, 5*time.Second, time.Millisecond)
	}
	return func() {
		require.NoError(t, tx.Rollback(ctx))
		wg.Wait()
	}
}

// Write-only transactions queued together are committed together, and
// each keeps its own outcome: one whose write had to change a row and did
// not fails with its own error and leaves nothing, and the others of its
// group commit, their outbox rows handed over once each with their seqs.
func TestWriteOnlyTransactionsCommitTogetherEachWithItsOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, other := pipelineStore(t)
	direct := &store.OutboxDirect{Owner: "relay", Lease: time.Minute}
	var mu sync.Mutex
	handed := map[string]int64{}
	direct.Committed = func(rows []store.OutboxMessage) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rows {
			if _, dup := handed[r.MsgID]; dup {
				t.Errorf("row %s handed over twice", r.MsgID)
			}
			handed[r.MsgID] = r.Seq
		}
	}
	s.SetOutboxDirect(direct)
	job := runningJob(t, s)
	release := blockSenders(t, s, other, job.ID)
	before := s.TxGroupStats()

	const n = 20
	errOdd := errors.New("odd: no such task")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		// In order, each queued before the next: the first group holds
		// a transaction that commits before one that fails.
		wg.Go(func() {
			errs[i] = s.InTx(ctx, func(q store.Querier) error {
				if err := q.LessonInsert(ctx, []store.Lesson{{ID: fmt.Sprintf("lesson-%d", i), Text: "t", Scope: "all"}}); err != nil {
					return err
				}
				if err := q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "s", MsgID: fmt.Sprintf("msg-%d", i), Payload: []byte("p")}}); err != nil {
					return err
				}
				if i%2 == 1 {
					_, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: "no-such-task", Else: errOdd})
					return err
				}
				return nil
			})
		})
		require.Eventually(t, func() bool { return postgres.GroupQueued(s) == i+1 }, 5*time.Second, time.Millisecond)
	}
	release()
	wg.Wait()

	lessons, err := s.LessonList(ctx, store.LessonListParams{Limit: 100})
	require.NoError(t, err)
	kept := map[string]bool{}
	for _, l := range lessons {
		kept[l.ID] = true
	}
	unsent, err := s.OutboxListUnsent(ctx, 100)
	require.NoError(t, err)
	seqs := map[string]int64{}
	for _, m := range unsent {
		seqs[m.MsgID] = m.Seq
	}
	for i := range n {
		lesson, msg := fmt.Sprintf("lesson-%d", i), fmt.Sprintf("msg-%d", i)
		if i%2 == 1 {
			require.ErrorIs(t, errs[i], errOdd, "transaction %d", i)
			require.False(t, kept[lesson], "transaction %d failed but its lesson was kept", i)
			require.NotContains(t, seqs, msg)
			require.NotContains(t, handed, msg)
			continue
		}
		require.NoError(t, errs[i], "transaction %d", i)
		require.True(t, kept[lesson], "transaction %d committed without its lesson", i)
		require.Contains(t, seqs, msg)
		require.Equal(t, seqs[msg], handed[msg], "transaction %d's row was handed over with another seq", i)
	}
	after := s.TxGroupStats()
	require.Equal(t, int64(n), after.Transactions-before.Transactions)
	require.Less(t, after.Commits-before.Commits-(after.Again-before.Again), int64(n), "no two of them were committed together")
	require.Positive(t, after.Again-before.Again, "a group with a failed transaction was not sent again one by one")
	events, err := s.EventListByJob(ctx, job.ID)
	require.NoError(t, err)
	require.Len(t, events, postgres.GroupSenders)
}

// A write-only transaction whose context ends while it waits for a sender
// is withdrawn: its caller is told, and it never commits.
func TestWriteOnlyTransactionCancelledWhileQueuedIsWithdrawn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, other := pipelineStore(t)
	job := runningJob(t, s)
	release := blockSenders(t, s, other, job.ID)

	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := s.InTx(tctx, func(q store.Querier) error {
		return q.LessonInsert(ctx, []store.Lesson{{ID: "withdrawn", Text: "t", Scope: "all"}})
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	release()
	// The senders are free: anything still queued would commit now.
	require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
		return q.LessonInsert(ctx, []store.Lesson{{ID: "after", Text: "t", Scope: "all"}})
	}))
	lessons, err := s.LessonList(ctx, store.LessonListParams{})
	require.NoError(t, err)
	require.Len(t, lessons, 1)
	require.Equal(t, "after", lessons[0].ID)
}

// A group waits for none of its members: when one waits for a lock and its
// context ends, the server is asked to cancel, and the others commit alone
// at once, long before the commit's own patience runs out.
func TestWriteOnlyTransactionGroupGivesUpWithItsMember(t *testing.T) {
	// Not parallel: the patience is the package's, which the parallel
	// tests read.
	defer postgres.SetCommitPatience(time.Minute)()
	ctx := context.Background()
	s, other := pipelineStore(t)
	job := runningJob(t, s)
	// Event e1, inserted and not committed on a connection of the pool.
	holder, err := s.DB().BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback() }()
	_, err = holder.ExecContext(ctx, `INSERT INTO events (id, job_id, kind, occurred_at) VALUES ('e1', $1, 'k', 0)`, job.ID)
	require.NoError(t, err)
	release := blockSenders(t, s, other, job.ID)

	var wg sync.WaitGroup
	var waited, innocent error
	var innocentTook time.Duration
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	wg.Go(func() { // waits for e1's lock
		waited = s.InTx(wctx, func(q store.Querier) error {
			return q.EventInsert(wctx, []store.Event{{ID: "e1", JobID: job.ID, Kind: "k"}})
		})
	})
	require.Eventually(t, func() bool { return postgres.GroupQueued(s) == 1 }, 5*time.Second, time.Millisecond)
	wg.Go(func() {
		start := time.Now()
		innocent = s.InTx(ctx, func(q store.Querier) error {
			return q.LessonInsert(ctx, []store.Lesson{{ID: "innocent", Text: "t", Scope: "all"}})
		})
		innocentTook = time.Since(start)
	})
	require.Eventually(t, func() bool { return postgres.GroupQueued(s) == 2 }, 5*time.Second, time.Millisecond)
	release() // one sender takes both, in one group
	wg.Wait()

	require.ErrorIs(t, waited, context.DeadlineExceeded)
	require.NoError(t, innocent)
	require.Less(t, innocentTook, 20*time.Second, "the innocent member waited for the commit's patience")
	lessons, err := s.LessonList(ctx, store.LessonListParams{})
	require.NoError(t, err)
	require.Len(t, lessons, 1)
	require.NoError(t, holder.Rollback())
	events, err := s.EventListByJob(ctx, job.ID)
	require.NoError(t, err)
	for _, e := range events {
		require.NotEqual(t, "e1", e.ID, "the member that gave up was committed")
	}
}
