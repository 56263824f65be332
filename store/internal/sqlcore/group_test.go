package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"
)

// testDialect is enough of SQLite's for statements run through exec.
type testDialect struct{}

func (testDialect) Rebind(q string) string                                  { return q }
func (testDialect) LockXact(context.Context, DBTX, string) error            { return nil }
func (testDialect) TableExists(context.Context, DBTX, string) (bool, error) { return false, nil }
func (testDialect) IsForeignKeyViolation(error) bool                        { return false }
func (testDialect) IsRetryable(error) bool                                  { return false }
func (testDialect) SkipLocked() string                                      { return "" }
func (testDialect) LockRow() string                                         { return "" }
func (testDialect) WritingWith() bool                                       { return false }

// groupTestDB is a SQLite database on one connection, as store/sqlite opens
// it, with a parent table and a child table referring to it.
func groupTestDB(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "group.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=temp_store(MEMORY)&_txlock=immediate")
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	for _, stmt := range []string{
		`CREATE TABLE parent (id INTEGER PRIMARY KEY)`,
		`CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent (id))`,
	} {
		_, err := db.Exec(stmt)
		require.NoError(t, err)
	}
	return db
}

func parentIDs(t *testing.T, db *sql.DB) []int {
	t.Helper()
	rows, err := db.Query(`SELECT id FROM parent ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	var ids []int
	for rows.Next() {
		var id int
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	return ids
}

// inOneGroup runs fns[i] for i in 0..n-1 as concurrent callers and makes
// them one group: a first caller holds the committer until all n are
// queued. It returns each caller's error, or the panic it re-raised.
func inOneGroup(t *testing.T, g *groupCommit, ctxs []context.Context, fns []func(q *Queries) error, beforeRun func()) []any {
	t.Helper()
	release := make(chan struct{})
	blocker := make(chan error, 1)
	go func() {
		blocker <- g.do(context.Background(), func(*Queries) error { <-release; return nil })
	}()
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.running && len(g.queue) == 0
	}, 5*time.Second, time.Millisecond, "the blocker never started")

	out := make([]any, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() {
			defer func() {
				if v := recover(); v != nil {
					out[i] = fmt.Sprintf("panic: %v", v)
				}
			}()
			if err := g.do(ctxs[i], fn); err != nil {
				out[i] = err
			}
		})
	}
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue) == len(fns)
	}, 5*time.Second, time.Millisecond, "the callers never queued")
	if beforeRun != nil {
		beforeRun()
	}
	close(release)
	require.NoError(t, <-blocker)
	wg.Wait()
	return out
}

func insertParent(id int) func(q *Queries) error {
	return func(q *Queries) error {
		_, err := q.exec(context.Background(), `INSERT INTO parent (id) VALUES (?)`, id)
		return err
	}
}

func background(n int) []context.Context {
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		ctxs[i] = context.Background()
	}
	return ctxs
}

// One caller's failure or panic is rolled back alone; the rest of its group
// commits, in one database transaction.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	t.Parallel()
	db := groupTestDB(t)
	g := newGroupCommit(&Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, 64)
	boom := errors.New("boom")
	_, err := db.Exec(`INSERT INTO parent (id) VALUES (100)`)
	require.NoError(t, err)

	fns := make([]func(q *Queries) error, 10)
	for i := range fns {
		ins := insertParent(i)
		switch i {
		case 3:
			fns[i] = func(q *Queries) error {
				if err := ins(q); err != nil {
					return err
				}
				return boom
			}
		case 5:
			fns[i] = func(q *Queries) error {
				if err := ins(q); err != nil {
					return err
				}
				panic("five")
			}
		case 8:
			// A statement error (a duplicate key) is fn's error too.
			fns[i] = insertParent(100)
		default:
			fns[i] = ins
		}
	}
	out := inOneGroup(t, g, background(len(fns)), fns, nil)

	require.ErrorIs(t, out[3].(error), boom)
	require.Equal(t, "panic: five", out[5])
	require.ErrorContains(t, out[8].(error), "UNIQUE")
	for _, i := range []int{0, 1, 2, 4, 6, 7, 9} {
		require.Nil(t, out[i], "caller %d", i)
	}
	require.Equal(t, []int{0, 1, 2, 4, 6, 7, 9, 100}, parentIDs(t, db))
	st := g.Stats()
	require.Equal(t, int64(1), st.Groups, "the ten callers were not one group")
	require.Equal(t, int64(7), st.Transactions)
}

// When the group's COMMIT fails, no caller is told it committed: those that
// had succeeded run again alone and commit; the one whose work made the
// commit fail is told so.
func TestGroupCommitRerunsWhenCommitFails(t *testing.T) {
	t.Parallel()
	db := groupTestDB(t)
	g := newGroupCommit(&Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, 64)

	fns := make([]func(q *Queries) error, 6)
	for i := range fns {
		fns[i] = insertParent(i)
	}
	// A foreign key checked only at COMMIT, and broken.
	fns[2] = func(q *Queries) error {
		if _, err := q.exec(context.Background(), `PRAGMA defer_foreign_keys = ON`); err != nil {
			return err
		}
		_, err := q.exec(context.Background(), `INSERT INTO child (id, parent_id) VALUES (1, 999)`)
		return err
	}
	out := inOneGroup(t, g, background(len(fns)), fns, nil)

	require.ErrorContains(t, out[2].(error), "FOREIGN KEY")
	for _, i := range []int{0, 1, 3, 4, 5} {
		require.Nil(t, out[i], "caller %d", i)
	}
	require.Equal(t, []int{0, 1, 3, 4, 5}, parentIDs(t, db))
	var children int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM child`).Scan(&children))
	require.Zero(t, children)
	require.GreaterOrEqual(t, g.Stats().Alone, int64(1+6), "the blocker and the six reruns ran alone")
}

// A caller whose context ends while it waits in the queue is not run.
func TestGroupCommitSkipsCancelledCallers(t *testing.T) {
	t.Parallel()
	db := groupTestDB(t)
	g := newGroupCommit(&Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, 64)

	ctxs := background(4)
	cancelled, cancel := context.WithCancel(context.Background())
	ctxs[1] = cancelled
	fns := make([]func(q *Queries) error, 4)
	for i := range fns {
		fns[i] = insertParent(i)
	}
	out := inOneGroup(t, g, ctxs, fns, cancel)

	require.ErrorIs(t, out[1].(error), context.Canceled)
	require.Equal(t, []int{0, 2, 3}, parentIDs(t, db))
}

// Many callers at once: every one is answered, every success is in the
// database, and groups formed.
func TestGroupCommitUnderLoad(t *testing.T) {
	t.Parallel()
	db := groupTestDB(t)
	g := newGroupCommit(&Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, 16)
	var wg sync.WaitGroup
	errs := make([]error, 500)
	for i := range errs {
		wg.Go(func() {
			fn := insertParent(i)
			if i%7 == 0 {
				fn = func(q *Queries) error {
					if err := insertParent(i)(q); err != nil {
						return err
					}
					return errors.New("no")
				}
			}
			errs[i] = g.do(context.Background(), fn)
		})
	}
	wg.Wait()
	var want []int
	for i, err := range errs {
		if i%7 == 0 {
			require.Error(t, err)
			continue
		}
		require.NoError(t, err)
		want = append(want, i)
	}
	got := parentIDs(t, db)
	sort.Ints(got)
	require.Equal(t, want, got)
	st := g.Stats()
	require.Positive(t, st.Groups)
	t.Logf("%d groups held %d transactions; %d ran alone", st.Groups, st.Transactions, st.Alone)
}

// A caller whose context ends while it waits to be run withdraws, as it
// gave up waiting for the connection before group commit: a function that
// writes through the store instead of its Querier gets its deadline's
// error instead of waiting for ever for the committer running it.
func TestGroupCommitWithdrawsOnDeadline(t *testing.T) {
	t.Parallel()
	db := groupTestDB(t)
	g := newGroupCommit(&Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, 64)
	err := g.do(context.Background(), func(q *Queries) error {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		return g.do(ctx, insertParent(1))
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, g.do(context.Background(), insertParent(2)), "the store is stuck")
	require.Equal(t, []int{2}, parentIDs(t, db))
}

// A function that calls runtime.Goexit (t.FailNow does) fails its caller
// and leaves the store working.
func TestGroupCommitSurvivesGoexit(t *testing.T) {
	t.Parallel()
	db := groupTestDB(t)
	g := newGroupCommit(&Queries{db: stdDB{db}, dialect: testDialect{}, pool: db}, 64)
	err := g.do(context.Background(), func(q *Queries) error {
		if err := insertParent(1)(q); err != nil {
			return err
		}
		runtime.Goexit()
		return nil
	})
	require.ErrorIs(t, err, errGoexit)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.do(ctx, insertParent(2)), "the store is stuck")
	require.Equal(t, []int{2}, parentIDs(t, db), "the function that exited was committed")
}
