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
// instead of seven; the server's work per round trip, not per statement,
// is most of what a small transaction costs it.
func (dialect) RunTx(ctx context.Context, db *sql.DB, fn func(sqlcore.DBTX) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		sc, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("beginning transaction: connection is a %T, not pgx's", driverConn)
		}
		tx := &pipeTx{conn: sc.Conn()}
		committed := false
		defer func() {
			// Also runs while a panic unwinds; the panic then goes on.
			if !committed {
				tx.rollback(ctx)
			}
		}()
		if err := fn(tx); err != nil {
			if tx.conn.IsClosed() && ctx.Err() == nil {
				// The connection was lost (the server ended it, or
				// the network) before COMMIT went: nothing of this
				// transaction is kept, and another connection may do.
				return &connLostError{err}
			}
			return err
		}
		if err := tx.commit(ctx); err != nil {
			err = fmt.Errorf("committing transaction: %w", err)
			var before *beforeCommitError
			var pgErr *pgconn.PgError
			if errors.As(err, &before) && errors.As(err, &pgErr) && tx.conn.IsClosed() && ctx.Err() == nil {
				// The server failed a statement before COMMIT, so it
				// skipped COMMIT, and then ended the connection.
				return &connLostError{err}
			}
			// Otherwise not run again on a lost connection: COMMIT
			// may have been carried out.
			return err
		}
		committed = true
		return nil
	})
}

// connLostError is a transaction's error when its connection was lost
// before it committed. IsRetryable says yes: a pool keeps connections the
// server has ended (a restart, pg_terminate_backend) until it uses them.
type connLostError struct{ err error }

func (e *connLostError) Error() string { return e.err.Error() }
func (e *connLostError) Unwrap() error { return e.err }

// beforeCommitError is commit's error when it came before COMMIT: from
// BEGIN or a write held back, which the server answered before it would
// have reached COMMIT, or from sending.
type beforeCommitError struct{ err error }

func (e *beforeCommitError) Error() string { return e.err.Error() }
func (e *beforeCommitError) Unwrap() error { return e.err }

// pipeTx is a transaction on a pgx connection that sends BEGIN and the
// writes held back (Defer) with its next statement.
type pipeTx struct {
	conn *pgx.Conn
	// begun is set once BEGIN has been sent.
	begun bool
	held  []heldWrite
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

// send sends BEGIN when it has not gone, the writes held back, and then
// last (unless it is ""), all in one round trip, and reads the results of
// all but last. A write's error ends it: last has not run then (the server
// skips the rest of a pipeline after an error) and the transaction is
// aborted.
func (t *pipeTx) send(ctx context.Context, last string, args []any) (pgx.BatchResults, error) {
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
			return nil, fmt.Errorf("beginning transaction: %w", err)
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
		return w.onErr(err)
	}
	return fmt.Errorf("%s: %w", statementName(w.query), err)
}

// statementName is what an error of a held-back write names it by: its
// first words, as in "INSERT INTO events".
func statementName(query string) string {
	f := strings.Fields(query)
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

// commit sends what is held back with COMMIT.
func (t *pipeTx) commit(ctx context.Context) error {
	if !t.begun && len(t.held) == 0 {
		return nil // nothing ran
	}
	br, err := t.send(ctx, "COMMIT", nil)
	if err != nil {
		return &beforeCommitError{err}
	}
	_, err = br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
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
