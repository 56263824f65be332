package postgres

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// txGroup commits write-only transactions together. A transaction whose
// function sent nothing to the server (every write of it held back, see
// pipeTx.Defer) needs no connection of its own: it queues here, and one of
// a few senders takes whatever has queued, up to groupMax, and sends all of
// it as one transaction, BEGIN to COMMIT, in one round trip. On this
// 2-core machine one COMMIT (a WAL flush) and one round trip for several
// small transactions cost the server a good part less than one each
// (pgbench, eight five-insert transactions in one: 1.7-1.9 times as many
// a second).
//
// Each transaction keeps its outcome: when a statement of the group fails
// (a write that had to change a row, say), the server skips the rest and
// COMMIT, so nothing of the group is kept, and each of them is sent again
// alone. When COMMIT itself fails, or its outcome is not known, every one
// of them gets that error, as it would alone.
type txGroup struct {
	db   *sql.DB
	in   chan *groupMember
	stop chan struct{}
	wg   sync.WaitGroup
	// What it did (TxGroupStats).
	commits, transactions, again atomic.Int64
}

// TxGroupStats is what a store's txGroup did.
type TxGroupStats struct {
	// Transactions is how many write-only transactions its senders took
	// (and did not find given up), in Commits database transactions
	// (groups, and those sent again alone).
	Transactions, Commits int64
	// Again is how many were sent again alone after a statement of their
	// group failed.
	Again int64
}

func (g *txGroup) stats() TxGroupStats {
	return TxGroupStats{Transactions: g.transactions.Load(), Commits: g.commits.Load(), Again: g.again.Load()}
}

// groupSenders is how many groups may be on their way at once, each on a
// connection of its own; groupMax is the most transactions in one.
const (
	groupSenders = 4
	groupMax     = 64
)

// A member is queued until a sender takes it or its caller withdraws it
// (its context ended, or the store closed): whichever comes first.
const (
	memberQueued int32 = iota
	memberTaken
	memberWithdrawn
)

type groupMember struct {
	ctx      context.Context // the caller's
	held     []heldWrite
	state    atomic.Int32
	done     chan error // the outcome, once taken
	answered atomic.Bool
}

// answer gives m its outcome, unless it has one.
func (m *groupMember) answer(err error) {
	if m.answered.CompareAndSwap(false, true) {
		m.done <- err
	}
}

// groupPanic is the outcome of a transaction whose sender panicked (a held
// write's scan, say): its caller panics with it, as it would have alone.
type groupPanic struct {
	value any
	stack []byte
}

func (p *groupPanic) Error() string {
	return fmt.Sprintf("committing transaction: panic: %v\n\n%s", p.value, p.stack)
}

// errStoreClosed is the error of a transaction queued when the store closed.
var errStoreClosed = errors.New("committing transaction: the store is closed")

func newTxGroup(db *sql.DB) *txGroup {
	g := &txGroup{db: db, in: make(chan *groupMember, 4*groupMax), stop: make(chan struct{})}
	for range groupSenders {
		g.wg.Go(g.send)
	}
	return g
}

// close stops the senders once the groups on their way are done; what is
// still queued is withdrawn by its callers.
func (g *txGroup) close() {
	close(g.stop)
	g.wg.Wait()
}

// commit commits held, the writes of one transaction, with the others
// queued meanwhile. Once a sender has taken it, its outcome is waited for
// whatever happens to ctx, as for a COMMIT that has gone.
func (g *txGroup) commit(ctx context.Context, held []heldWrite) error {
	if err := ctx.Err(); err != nil {
		return err // nothing sent: nothing kept
	}
	m := &groupMember{ctx: ctx, held: held, done: make(chan error, 1)}
	select {
	case g.in <- m:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.stop:
		return errStoreClosed
	}
	select {
	case err := <-m.done:
		return outcome(err)
	case <-ctx.Done():
	case <-g.stop:
	}
	if m.state.CompareAndSwap(memberQueued, memberWithdrawn) {
		return cmp.Or(ctx.Err(), errStoreClosed)
	}
	return outcome(<-m.done)
}

// outcome is a member's answer as its caller gets it.
func outcome(err error) error {
	if p, ok := err.(*groupPanic); ok {
		panic(p)
	}
	return err
}

// send takes what has queued, up to groupMax, and commits it, until the
// group stops.
func (g *txGroup) send() {
	for {
		var batch []*groupMember
		select {
		case m := <-g.in:
			batch = take(batch, m)
		case <-g.stop:
			return
		}
	more:
		for len(batch) < groupMax {
			select {
			case m := <-g.in:
				batch = take(batch, m)
			default:
				break more
			}
		}
		if len(batch) > 0 {
			g.run(batch)
		}
	}
}

// take adds m to batch unless its caller withdrew it.
func take(batch []*groupMember, m *groupMember) []*groupMember {
	if m.state.CompareAndSwap(memberQueued, memberTaken) {
		return append(batch, m)
	}
	return batch
}

// run commits batch as one transaction, or, when a statement of it failed
// and so nothing of it was kept, each member alone.
//
// Each member's context counts as it would alone. One that ended before
// anything was sent gets its error. While the group is on its way, the end
// of any member's context asks the server to cancel (see pipeTx.commit):
// unless COMMIT was done, nothing of the group is kept, and each member is
// sent again alone, on its own context, so that one waiting for a lock
// holds up neither the others nor this sender.
func (g *txGroup) run(batch []*groupMember) {
	defer func() {
		if r := recover(); r != nil {
			p := &groupPanic{value: r, stack: debug.Stack()}
			for _, m := range batch {
				m.answer(p)
			}
		}
	}()
	live := batch[:0:0]
	for _, m := range batch {
		if err := m.ctx.Err(); err != nil {
			m.answer(err) // nothing sent: nothing kept
			continue
		}
		live = append(live, m)
	}
	g.transactions.Add(int64(len(live)))
	switch len(live) {
	case 0:
		return
	case 1:
		live[0].answer(g.commitOne(live[0].ctx, live[0].held))
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var held []heldWrite
	for _, m := range live {
		held = append(held, m.held...)
		defer context.AfterFunc(m.ctx, cancel)()
	}
	err := g.commitOne(ctx, held)
	var skipped *commitSkippedError
	if err == nil || !errors.As(err, &skipped) {
		for _, m := range live {
			m.answer(err)
		}
		return
	}
	g.again.Add(int64(len(live)))
	for _, m := range live {
		g.wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					m.answer(&groupPanic{value: r, stack: debug.Stack()})
				}
			}()
			m.answer(g.commitOne(m.ctx, m.held))
		})
	}
}

// commitOne sends held with BEGIN and COMMIT on a connection of the pool.
func (g *txGroup) commitOne(ctx context.Context, held []heldWrite) error {
	g.commits.Add(1)
	tx := &pipeTx{db: g.db, held: held}
	defer tx.end(ctx)
	return tx.finish(ctx, tx.commit(ctx))
}
