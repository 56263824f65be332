package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/troupe-dev/troupe/store/internal/sqlcore"
)

// RunTx runs fn in a transaction on one of db's connections, through pgx
// itself rather than database/sql, so that statements go to the server
// together (pipelined): BEGIN with the transaction's first statement, the
// writes fn does not read back (sqlcore.Deferrer) with the statement after
// them, and the last of them with COMMIT. The transaction that submits a
// job (a job, its task, two events and three messages) is two round trips
// instead of seven. Each round trip costs the server a wake-up and a
// reply besides the statement's own work: with pgbench here, seven inserts
// ran 1.7 times as many transactions a second pipelined as one at a time.
// A transaction that sent nothing before its commit goes with others that
// did the same, in one (txGroup).
func (d dialect) RunTx(ctx context.Context, db *sql.DB, fn func(sqlcore.DBTX) error) error {
	tx := &pipeTx{db: db}
	defer tx.end(ctx)
	if err := fn(tx); err != nil {
		if tx.lost(ctx, err) { // COMMIT has not gone
			return &connLostError{err}
		}
		return err
	}
	if d.group != nil && tx.conn == nil && tx.failed == nil && len(tx.held) > 0 {
		// Nothing sent, so no connection taken: committed with others.
		return d.group.commit(ctx, tx.held)
	}
	return tx.finish(ctx, tx.commit(ctx))
}

// connect takes a connection of the pool for the transaction, at its
// first round trip: one that sends nothing before its commit takes none
// (see txGroup).
func (t *pipeTx) connect(ctx context.Context) error {
	if t.conn != nil {
		return nil
	}
	conn, release, err := takeConn(ctx, t.db)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	t.conn, t.release = conn, release
	return nil
}

// takeConn takes one of db's connections and returns it as pgx's, with
// release, which gives it back. database/sql lends a driver's connection
// for the duration of a function (Conn.Raw): a goroutine runs that
// function until release.
func takeConn(ctx context.Context, db *sql.DB) (*pgx.Conn, func(), error) {
	c, err := db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	got := make(chan any, 1)
	done := make(chan struct{})
	go func() {
		defer c.Close()
		if err := c.Raw(func(driverConn any) error {
			got <- driverConn
			<-done
			return nil
		}); err != nil {
			got <- err // f did not run
		}
	}()
	switch v := (<-got).(type) {
	case *stdlib.Conn:
		return v.Conn(), func() { close(done) }, nil
	case error:
		return nil, nil, v
	default:
		close(done)
		return nil, nil, fmt.Errorf("connection is a %T, not pgx's", v)
	}
}

// end rolls back what the transaction began and did not commit (also
// while a panic unwinds) and gives its connection back.
func (t *pipeTx) end(ctx context.Context) {
	if t.conn == nil {
		return
	}
	t.rollback(ctx)
	t.release()
}

// lost reports whether err lost the connection with nothing of the
// transaction kept, so that another connection may run it.
func (t *pipeTx) lost(ctx context.Context, err error) bool {
	return t.conn != nil && t.conn.IsClosed() && ctx.Err() == nil && lostConnection(err)
}

// finish is commit's err as a transaction's outcome: the connection lost
// before COMMIT went (nothing kept) is a connLostError, which runs the
// transaction again; otherwise COMMIT may have been carried out, and the
// error stands.
func (t *pipeTx) finish(ctx context.Context, err error) error {
	var skipped *commitSkippedError
	if err != nil && errors.As(err, &skipped) && t.lost(ctx, err) {
		return &connLostError{err}
	}
	return err
}

// lostConnection reports whether err says the connection was lost: the
// server ended it (class 08, or 57P01–57P03: an administrator, a crash,
// a shutdown) or the network failed. A timeout or a cancelled context
// closes the connection too, but says nothing about the server.
func lostConnection(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	return true
}

// connLostError is a transaction's error when its connection was lost
// before it committed. IsRetryable says yes: a pool keeps connections the
// server has ended (a restart, pg_terminate_backend) until it uses them.
type connLostError struct{ err error }

func (e *connLostError) Error() string { return e.err.Error() }
func (e *connLostError) Unwrap() error { return e.err }

// commitSkippedError is commit's error when the server failed BEGIN or a
// write held back, which were sent with COMMIT: the server then skips the
// rest of the pipeline, COMMIT included.
type commitSkippedError struct{ err error }

func (e *commitSkippedError) Error() string { return e.err.Error() }
func (e *commitSkippedError) Unwrap() error { return e.err }

// Once COMMIT has gone, a cancelled context does not cut the wait for its
// answer short (see commit): after commitPatience, or when the caller's
// context ends, the server is asked to cancel; after commitGiveUp without
// an answer the connection is closed and the outcome is not known.
var commitPatience = 30 * time.Second

const commitGiveUp = 5 * time.Minute

// pipeTx is a transaction on a pgx connection that sends BEGIN and the
// writes held back (Defer) with its next statement.
type pipeTx struct {
	db *sql.DB
	// conn is taken at the first round trip (connect); release gives
	// it back.
	conn    *pgx.Conn
	release func()
	// begun is set once BEGIN has been sent.
	begun bool
	held  []heldWrite
	// failed is the error of a round trip that failed before the
	// statement it carried: BEGIN or held writes may not have reached
	// the server, so nothing more may run in this transaction.
	failed error
}

var (
	_ sqlcore.DBTX     = (*pipeTx)(nil)
	_ sqlcore.Deferrer = (*pipeTx)(nil)
)

// heldWrite is a write waiting for the transaction's next round trip.
type heldWrite struct {
	query string
	args  []any
	scan  func(sqlcore.Row) error
	onErr func(error) error
}

// Defer holds a write back until the next statement or the commit.
func (t *pipeTx) Defer(query string, args []any, scan func(sqlcore.Row) error, onErr func(error) error) {
	t.held = append(t.held, heldWrite{query: query, args: args, scan: scan, onErr: onErr})
}

// noRowChanged is the SQLSTATE of troupe_expect_rows (migration 0004),
// which fails a statement that had to change a row and changed none.
const noRowChanged = "TR001"

// DeferChange holds back a write that must change a row. The server
// counts the rows it changed and fails the statement when there are none,
// so that the rest of the round trip, COMMIT included, does not run: a
// transaction of such writes needs one round trip, not one for each write
// and another for COMMIT.
func (t *pipeTx) DeferChange(query string, args []any, none error, onErr func(error) error) {
	t.Defer(`WITH changed AS (`+query+` RETURNING 1) SELECT troupe_expect_rows(count(*)) FROM changed`, args, nil,
		func(err error) error {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == noRowChanged {
				return none
			}
			if onErr != nil {
				return onErr(err)
			}
			return fmt.Errorf("%s: %w", statementName(query), err)
		})
}

// send sends BEGIN when it has not gone, the writes held back, and then
// last (unless it is ""), all in one round trip, and reads the results of
// all but last. A write's error ends it: last has not run then (the server
// skips the rest of a pipeline after an error) and the transaction is
// aborted.
func (t *pipeTx) send(ctx context.Context, last string, args []any) (pgx.BatchResults, error) {
	if t.failed != nil {
		return nil, fmt.Errorf("an earlier statement of this transaction failed: %w", t.failed)
	}
	if err := t.connect(ctx); err != nil {
		t.failed = err
		return nil, err
	}
	br, err := t.sendBatch(ctx, last, args)
	if err != nil {
		t.failed = err
	}
	return br, err
}

func (t *pipeTx) sendBatch(ctx context.Context, last string, args []any) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	begin := !t.begun
	if begin {
		b.Queue("BEGIN")
		t.begun = true
	}
	held := t.held
	t.held = nil
	for _, w := range held {
		b.Queue(w.query, w.args...)
	}
	if last != "" {
		b.Queue(last, args...)
	}
	br := t.conn.SendBatch(ctx, b)
	if begin {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return nil, fmt.Errorf("beginning transaction: %w", err)
			}
			return nil, err
		}
	}
	for _, w := range held {
		if err := w.read(br); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

// read reads w's result.
func (w heldWrite) read(br pgx.BatchResults) error {
	var err error
	if w.scan != nil {
		err = w.scan(br.QueryRow())
	} else {
		_, err = br.Exec()
	}
	if err == nil {
		return nil
	}
	if w.onErr != nil {
		if mapped := w.onErr(err); mapped != nil {
			return mapped
		}
	}
	return fmt.Errorf("%s: %w", statementName(w.query), err)
}

// statementName is what an error of a held-back write names it by: the
// table it writes, as in "INSERT INTO events", else its first words.
func statementName(query string) string {
	f := strings.Fields(query)
	for i, w := range f {
		if strings.EqualFold(w, "INTO") && i > 0 && i+1 < len(f) {
			return f[i-1] + " INTO " + strings.TrimSuffix(f[i+1], "(")
		}
	}
	return strings.Join(f[:min(len(f), 3)], " ")
}

func (t *pipeTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if len(args) == 0 {
		// It may be several statements (a migration), which only the
		// simple protocol runs: on its own, after what goes before it.
		if !t.begun || len(t.held) > 0 {
			br, err := t.send(ctx, "", nil)
			if err != nil {
				return nil, err
			}
			if err := br.Close(); err != nil {
				return nil, err
			}
		}
		tag, err := t.conn.Exec(ctx, query)
		if err != nil {
			t.failed = err
			return nil, err
		}
		return result(tag.RowsAffected()), nil
	}
	br, err := t.send(ctx, query, args)
	if err != nil {
		return nil, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return result(tag.RowsAffected()), nil
}

func (t *pipeTx) QueryContext(ctx context.Context, query string, args ...any) (sqlcore.Rows, error) {
	br, err := t.send(ctx, query, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &pipeRows{Rows: rows, br: br}, nil
}

func (t *pipeTx) QueryRowContext(ctx context.Context, query string, args ...any) sqlcore.Row {
	br, err := t.send(ctx, query, args)
	if err != nil {
		return errRow{err}
	}
	return pipeRow{row: br.QueryRow(), br: br}
}

// commit sends what is held back with COMMIT, in one round trip.
//
// Once COMMIT has gone, its outcome is read whatever happens to ctx:
// giving up would close the connection, and the server may commit all the
// same, after the caller was told of an error. A cancelled ctx (or a wait
// past commitPatience) sends the server a cancel request instead, which
// fails the statement it is running (a held write waiting for a lock, say),
// so that it skips COMMIT, unless COMMIT is already done; either way the
// answer says which. Only a server silent for commitGiveUp leaves it
// unknown, and the error says so.
func (t *pipeTx) commit(ctx context.Context) error {
	if t.failed != nil {
		return fmt.Errorf("committing transaction: an earlier statement of it failed: %w", t.failed)
	}
	if !t.begun && len(t.held) == 0 {
		return nil // nothing ran
	}
	if t.begun && t.conn.PgConn().TxStatus() == 'E' {
		// A statement failed and fn went on; COMMIT would roll back.
		return errors.New("committing transaction: a statement of it failed earlier; rolled back")
	}
	if err := ctx.Err(); err != nil {
		return &commitSkippedError{err} // nothing sent: nothing kept
	}
	if err := t.connect(ctx); err != nil {
		return &commitSkippedError{err} // nothing sent
	}
	wait, giveUp := context.WithTimeout(context.WithoutCancel(ctx), commitGiveUp)
	defer giveUp()
	patience, cancel := context.WithTimeout(ctx, commitPatience)
	defer cancel()
	stop := context.AfterFunc(patience, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = t.conn.PgConn().CancelRequest(cctx)
	})
	defer func() {
		if !stop() {
			// A cancel request went, or goes: it could land on the
			// next statement of whoever has this connection next.
			_ = t.conn.Close(context.Background())
		}
	}()

	br, err := t.send(wait, "COMMIT", nil)
	if err != nil {
		return withCtxErr(ctx, t.commitFailed(wait, err, true))
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return withCtxErr(ctx, t.commitFailed(wait, err, false))
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("committing transaction: %w", pgx.ErrTxCommitRollback)
	}
	return nil
}

// commitFailed says what commit's err means: before is set when it came
// from BEGIN or a held write, sent with COMMIT, and not from COMMIT.
func (t *pipeTx) commitFailed(wait context.Context, err error, before bool) error {
	var pgErr *pgconn.PgError
	switch {
	case wait.Err() != nil:
		// Not wrapped: the caller's context did not end.
		return fmt.Errorf("committing transaction: no answer from the server in %s; whether it committed is not known (%v)", commitGiveUp, err)
	case before && (errors.As(err, &pgErr) || pgconn.SafeToRetry(err)),
		before && !t.conn.IsClosed() && t.conn.PgConn().TxStatus() == 'E':
		// The server failed a statement before COMMIT, and so skipped
		// COMMIT (the transaction is left aborted, whatever error the
		// statement's onErr made of it), or nothing was sent.
		return &commitSkippedError{fmt.Errorf("committing transaction: %w", err)}
	case before && !t.conn.IsClosed() && t.conn.PgConn().TxStatus() == 'I':
		// This side failed (reading a result) and the server went on
		// through COMMIT.
		return fmt.Errorf("committing transaction: %w (COMMIT ran; whether it committed is not known)", err)
	default:
		return fmt.Errorf("committing transaction: %w", err)
	}
}

// withCtxErr adds ctx's error to err when ctx has ended, so that a
// statement cancelled on the caller's behalf reads as cancelled.
func withCtxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

// rollback ends a transaction that did not commit. It does not take ctx's
// cancellation: a rollback must run even when the caller gave up, and a
// connection it cannot roll back is closed, which database/sql then drops.
func (t *pipeTx) rollback(ctx context.Context) {
	pc := t.conn.PgConn()
	if pc.IsClosed() || pc.TxStatus() == 'I' {
		return // nothing to end: never begun, committed, or gone
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := t.conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = t.conn.Close(ctx)
	}
}

// result is an exec's sql.Result.
type result int64

func (r result) LastInsertId() (int64, error) {
	return 0, errors.New("LastInsertId is not supported by PostgreSQL; use RETURNING")
}

func (r result) RowsAffected() (int64, error) { return int64(r), nil }

// pipeRows are a query's rows; closing them reads the rest of the batch.
type pipeRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *pipeRows) Close() error {
	r.Rows.Close()
	err := r.Rows.Err()
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// pipeRow is a query's one row; scanning it reads the rest of the batch.
type pipeRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r pipeRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// errRow is a row whose query failed before it ran.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
