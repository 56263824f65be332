package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-dev/troupe/store"
)

// groupCommit runs the transactions that concurrent callers ask for
// together: whatever has queued while the previous group committed goes
// into one database transaction, each caller's function inside its own
// savepoint, and one COMMIT (one WAL write, one fsync where the database
// makes one) ends them all. A caller's function that fails or panics is
// rolled back to its savepoint, alone; the others commit. Nothing waits
// for a group to fill: a caller alone runs at once, and groups grow only
// while the database is busy, which is when they pay.
//
// No goroutine runs while nobody asks: the first caller of a burst starts
// one, and it ends when the queue is empty.
type groupCommit struct {
	// store is the Queries outside a transaction that own this: its pool,
	// dialect and OutboxDirect are the group's.
	store *Queries
	// max bounds a group: the callers of one group wait for its commit,
	// so a bigger group is more throughput and more latency.
	max int

	mu      sync.Mutex
	queue   []*groupTx
	running bool
	stats   GroupCommitStats
}

// GroupCommitStats counts what group commit has done.
type GroupCommitStats struct {
	// Groups is how many database transactions ran groups of callers.
	Groups int64
	// Transactions is how many callers' transactions they held.
	Transactions int64
	// Alone is how many transactions ran alone: only one caller was
	// waiting, or a caller ran again in its own transaction after its
	// group could not commit.
	Alone int64
	// Busy is how long the writer spent running transactions: near the
	// time elapsed, the writer is the bottleneck.
	Busy time.Duration
}

// groupTx is one caller's transaction.
type groupTx struct {
	ctx  context.Context
	fn   func(q *Queries) error
	done chan groupResult
	// rows are the outbox rows fn wrote, for direct once committed.
	rows []store.OutboxMessage
	// state is queued, then taken (by the committer, to run) or
	// withdrawn (by the caller, whose context ended first).
	state atomic.Int32
}

const (
	txQueued int32 = iota
	txTaken
	txWithdrawn
)

type groupResult struct {
	err error
	// panicked and panicValue carry a panic of fn back to the caller's
	// goroutine, which panics again with it.
	panicked   bool
	panicValue any
}

func newGroupCommit(owner *Queries, max int) *groupCommit {
	return &groupCommit{store: owner, max: max}
}

// do runs fn in a transaction shared with other callers' and returns once
// it committed (nil) or was rolled back (fn's error, or the database's).
func (g *groupCommit) do(ctx context.Context, fn func(q *Queries) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := &groupTx{ctx: ctx, fn: fn, done: make(chan groupResult, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, t)
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	var res groupResult
	select {
	case res = <-t.done:
	case <-ctx.Done():
		// Not taken yet: withdraw. (A function that writes through the
		// store instead of its Querier waits here for the committer that
		// runs it; its deadline gets it out, as it did when it waited for
		// the connection.) Taken: its function may have run already, and
		// the commit decides.
		if t.state.CompareAndSwap(txQueued, txWithdrawn) {
			return ctx.Err()
		}
		res = <-t.done
	}
	if res.panicked {
		panic(res.panicValue)
	}
	return res.err
}

// Stats returns the counts so far.
func (g *groupCommit) Stats() GroupCommitStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stats
}

func (g *groupCommit) run() {
	var group []*groupTx
	finished := false
	defer func() {
		if finished {
			return
		}
		// A function called runtime.Goexit (t.FailNow in a test does):
		// the group's transaction was rolled back on the way out. Answer
		// its callers, and carry on in a new goroutine.
		for _, t := range group {
			select {
			case t.done <- groupResult{err: errGoexit}:
			default:
			}
		}
		g.mu.Lock()
		g.running = len(g.queue) > 0
		if g.running {
			go g.run()
		}
		g.mu.Unlock()
	}()
	for {
		g.mu.Lock()
		if len(g.queue) == 0 {
			g.running = false
			g.queue = nil
			g.mu.Unlock()
			finished = true
			return
		}
		n := min(len(g.queue), g.max)
		group = make([]*groupTx, n)
		copy(group, g.queue)
		g.queue = g.queue[n:]
		g.mu.Unlock()
		start := time.Now()
		g.commit(group)
		busy := time.Since(start)
		g.mu.Lock()
		g.stats.Busy += busy
		g.mu.Unlock()
	}
}

// commit runs one group and answers every caller in it.
func (g *groupCommit) commit(group []*groupTx) {
	live := make([]*groupTx, 0, len(group))
	for _, t := range group {
		if !t.state.CompareAndSwap(txQueued, txTaken) {
			continue // withdrawn: its caller has gone with its context's error
		}
		if err := t.ctx.Err(); err != nil {
			t.done <- groupResult{err: err}
			continue
		}
		live = append(live, t)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		g.alone(live[0])
		return
	}
	ok, again, err := g.together(live)
	if err == nil {
		g.mu.Lock()
		g.stats.Groups++
		g.stats.Transactions += int64(len(ok))
		g.mu.Unlock()
	}
	if err != nil {
		// The group did not commit: nothing of it is in the database.
		// Each caller that had succeeded runs again, alone, so one
		// caller's trouble is not the others'.
		again = append(again, ok...)
		ok = nil
	}
	var rows []store.OutboxMessage
	for _, t := range ok {
		rows = append(rows, t.rows...)
	}
	if len(rows) > 0 {
		g.store.direct.Committed(rows)
	}
	for _, t := range ok {
		t.done <- groupResult{}
	}
	for _, t := range again {
		g.alone(t)
	}
}

// alone runs t in its own transaction, retried as Queries.inTx retries.
func (g *groupCommit) alone(t *groupTx) {
	g.mu.Lock()
	g.stats.Alone++
	g.mu.Unlock()
	q := &Queries{db: stdDB{g.store.pool}, dialect: g.store.dialect, pool: g.store.pool, direct: g.store.direct, retried: g.store.retried}
	t.done <- capture(func() error { return q.retryTx(t.ctx, t.fn) })
}

// together runs the group in one transaction. It answers the callers whose
// function failed (their savepoint is rolled back), and returns those
// whose function succeeded, to be answered once the commit is known, and
// those to run again alone: a function that failed with an error the
// database says to retry (a deadlock), and, when the transaction itself
// broke, every caller not yet run. err is set when the group did not
// commit.
func (g *groupCommit) together(group []*groupTx) (ok, again []*groupTx, err error) {
	// The transaction is the group's, not any caller's: one caller's
	// context ending must not roll back the others.
	bg := context.Background()
	tx, err := g.store.pool.BeginTx(bg, nil)
	if err != nil {
		return nil, group, fmt.Errorf("beginning transaction: %w", err)
	}
	committed := false
	defer func() {
		// Also on the way out of runtime.Goexit.
		if !committed {
			_ = tx.Rollback()
		}
	}()
	for i, t := range group {
		t.rows = nil
		q := &Queries{db: stdDB{uncancelled{tx}}, dialect: g.store.dialect, direct: g.store.direct, committed: &t.rows}
		if _, err := tx.ExecContext(bg, `SAVEPOINT troupe_group`); err != nil {
			return ok, append(again, group[i:]...), fmt.Errorf("opening savepoint: %w", err)
		}
		res := capture(func() error { return t.fn(q) })
		if res.err != nil || res.panicked {
			if _, err := tx.ExecContext(bg, `ROLLBACK TO SAVEPOINT troupe_group`); err != nil {
				// The transaction is gone with what ran before; t's
				// own outcome stands.
				t.done <- res
				return ok, append(again, group[i+1:]...), fmt.Errorf("rolling back to savepoint: %w", err)
			}
			t.rows = nil // rolled back with them
			if res.err != nil && g.store.dialect.IsRetryable(res.err) {
				again = append(again, t)
			} else {
				t.done <- res
			}
		} else {
			ok = append(ok, t)
		}
		if _, err := tx.ExecContext(bg, `RELEASE SAVEPOINT troupe_group`); err != nil {
			return ok, append(again, group[i+1:]...), fmt.Errorf("releasing savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		committed = true // nothing left to roll back
		return ok, again, fmt.Errorf("committing transaction: %w", err)
	}
	committed = true
	return ok, again, nil
}

var errGoexit = errors.New("a transaction of the group it ran in called runtime.Goexit; nothing of the group was committed")

// capture runs fn and returns its error, or the panic it raised.
func capture(fn func() error) (res groupResult) {
	defer func() {
		if v := recover(); v != nil {
			res = groupResult{panicked: true, panicValue: v}
		}
	}()
	return groupResult{err: fn()}
}

// uncancelled runs statements on a transaction without their contexts'
// cancellation, which would otherwise interrupt a statement of a
// transaction other callers share (SQLite rolls the whole transaction back
// when a statement in it is interrupted).
type uncancelled struct{ tx *sql.Tx }

func (u uncancelled) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return u.tx.ExecContext(context.WithoutCancel(ctx), query, args...)
}

func (u uncancelled) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return u.tx.QueryContext(context.WithoutCancel(ctx), query, args...)
}

func (u uncancelled) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return u.tx.QueryRowContext(context.WithoutCancel(ctx), query, args...)
}

// staticResult is an exec's outcome read while its transaction was open.
type staticResult struct {
	lastID, rows       int64
	lastIDErr, rowsErr error
}

func (r staticResult) LastInsertId() (int64, error) { return r.lastID, r.lastIDErr }
func (r staticResult) RowsAffected() (int64, error) { return r.rows, r.rowsErr }

func readResult(res sql.Result) sql.Result {
	var r staticResult
	r.lastID, r.lastIDErr = res.LastInsertId()
	r.rows, r.rowsErr = res.RowsAffected()
	return r
}
