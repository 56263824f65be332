// Package sqlcore is the SQL shared by store/sqlite and store/postgres: every
// Querier method, transactions and migrations, written once with ?
// placeholders against a Dialect that holds what differs.
//
// Times are BIGINT unix microseconds in UTC; slices, maps and structs are
// JSON text.
package sqlcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/troupe-dev/troupe/store"
)

// Store is a store.Store over a *sql.DB.
type Store struct {
	*Queries
	db         *sql.DB
	migrations fs.FS
}

var _ store.Store = (*Store)(nil)

// New returns a Store on db. migrations holds the driver's NNNN_name.sql
// files at its root.
func New(db *sql.DB, d Dialect, migrations fs.FS) *Store {
	return &Store{
		Queries:    &Queries{db: stdDB{db}, dialect: d, pool: db, retried: new(atomic.Int64)},
		db:         db,
		migrations: migrations,
	}
}

// EnableGroupCommit makes the store run concurrent transactions together,
// up to max in one database transaction (see groupCommit). Call it before
// the store is used.
func (s *Store) EnableGroupCommit(max int) {
	if max < 2 {
		s.Queries.group = nil
		return
	}
	s.Queries.group = newGroupCommit(s.Queries, max)
}

// SetOutboxDirect makes every transaction hand the outbox rows it wrote to
// d once it commits (see store.OutboxDirect). Call it before the store is
// used.
func (s *Store) SetOutboxDirect(d *store.OutboxDirect) {
	s.Queries.direct = d
}

// GroupCommitStats returns what group commit has done; zero when it is off.
func (s *Store) GroupCommitStats() GroupCommitStats {
	if s.Queries.group == nil {
		return GroupCommitStats{}
	}
	return s.Queries.group.Stats()
}

// TxRetried is how many times a transaction ran again because the
// database aborted it for another's sake (a deadlock, a serialization
// failure) or lost its connection before it committed.
func (s *Store) TxRetried() int64 { return s.Queries.retried.Load() }

// DB returns the underlying database.
func (s *Store) DB() *sql.DB { return s.db }

// InTx runs fn in one transaction: committed when fn returns nil, rolled
// back when it returns an error or panics (and the panic goes on).
func (s *Store) InTx(ctx context.Context, fn func(q store.Querier) error) error {
	return s.inTx(ctx, func(q *Queries) error { return fn(q) })
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("pinging database: %w", err)
	}
	return nil
}

// Close releases the connections.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing database: %w", err)
	}
	return nil
}

// Queries runs every Querier method on a database or inside a transaction.
type Queries struct {
	db      DBTX
	dialect Dialect
	// pool is set outside a transaction, for methods that must open their
	// own; inside one it is nil and they run in the caller's.
	pool *sql.DB
	// group, when set (outside a transaction, with group commit on), runs
	// the transactions and the single writes made outside one.
	group *groupCommit
	// direct, when set, is handed the outbox rows of each transaction
	// once it commits; committed gathers them inside a transaction.
	direct    *store.OutboxDirect
	committed *[]store.OutboxMessage
	// retried counts the transactions run again (Store.TxRetried); set
	// outside a transaction.
	retried *atomic.Int64
}

var _ store.Querier = (*Queries)(nil)

// inTx runs fn in a new transaction, or in the current one when q is
// already inside a transaction.
func (q *Queries) inTx(ctx context.Context, fn func(q *Queries) error) error {
	if q.pool == nil {
		return fn(q)
	}
	if q.group != nil {
		return q.group.do(ctx, fn)
	}
	return q.retryTx(ctx, fn)
}

// retryTx runs fn in a new transaction of its own, again when the database
// aborted it for another's sake.
func (q *Queries) retryTx(ctx context.Context, fn func(q *Queries) error) error {
	// A deadlock or serialization failure aborts one of the transactions
	// involved; running it again is what the database expects.
	var err error
	for attempt := range 4 {
		err = q.tryTx(ctx, fn)
		if err == nil || !q.dialect.IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		if q.retried != nil {
			q.retried.Add(1)
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	return err
}

func (q *Queries) tryTx(ctx context.Context, fn func(q *Queries) error) error {
	var rows []store.OutboxMessage
	run := func(tx DBTX) error {
		return fn(&Queries{db: tx, dialect: q.dialect, direct: q.direct, committed: &rows})
	}
	var err error
	if r, ok := q.dialect.(TxRunner); ok {
		err = r.RunTx(ctx, q.pool, run)
	} else {
		err = stdTx(ctx, q.pool, run)
	}
	if err != nil {
		return err
	}
	if len(rows) > 0 {
		q.direct.Committed(rows)
	}
	return nil
}

// stdTx runs fn in a database/sql transaction on db.
func stdTx(ctx context.Context, db *sql.DB, fn func(tx DBTX) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	committed := false
	defer func() {
		// Also runs while a panic unwinds; the panic then goes on.
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(stdDB{tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing transaction: %w", err)
	}
	committed = true
	return nil
}

func (q *Queries) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if q.group != nil {
		// A write outside a transaction is a transaction of its own:
		// commit it with the others.
		var res sql.Result
		err := q.group.do(ctx, func(tx *Queries) error {
			r, err := tx.exec(ctx, query, args...)
			if err != nil {
				return err
			}
			res = readResult(r)
			return nil
		})
		return res, err
	}
	return q.db.ExecContext(ctx, q.dialect.Rebind(query), args...)
}

// write runs a write whose result the caller does not read: an error is
// all it may report. Inside a transaction of a Deferrer it is held back and
// sent with the transaction's next statement or its commit, and its error,
// passed through onErr when that is not nil, comes from that statement or
// the commit; elsewhere it runs at once. So inside a transaction any
// statement's error may be an earlier write's: as on PostgreSQL any error
// ends the transaction anyway, callers return it rather than go on.
func (q *Queries) write(ctx context.Context, onErr func(error) error, query string, args ...any) error {
	return q.writeReturning(ctx, nil, onErr, query, args...)
}

// writeReturning is write for a statement that returns one row, which scan
// reads once the statement has run: at once, or when a Deferrer sends it.
func (q *Queries) writeReturning(ctx context.Context, scan func(Row) error, onErr func(error) error, query string, args ...any) error {
	if d, ok := q.db.(Deferrer); ok {
		d.Defer(q.dialect.Rebind(query), args, scan, onErr)
		return nil
	}
	var err error
	if scan != nil {
		err = scan(q.queryRow(ctx, query, args...))
	} else {
		_, err = q.exec(ctx, query, args...)
	}
	if err != nil && onErr != nil {
		return onErr(err)
	}
	return err
}

// writeChange runs a write that must change a row (an update given
// store.TaskUpdateParams.Else, say): when it changes none, it fails with
// none, unwrapped, and so does the transaction. Inside a transaction of a
// Deferrer it is held back like write, and the server itself fails it, so
// that what was sent after it does not run. Any other error goes through
// onErr when that is set.
func (q *Queries) writeChange(ctx context.Context, none error, onErr func(error) error, query string, args ...any) error {
	if none == nil {
		none = errNoRowChanged
	}
	if d, ok := q.db.(Deferrer); ok {
		d.DeferChange(q.dialect.Rebind(query), args, none, onErr)
		return nil
	}
	res, err := q.exec(ctx, query, args...)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			return none
		}
	}
	if err != nil && onErr != nil {
		return onErr(err)
	}
	return err
}

// errNoRowChanged is writeChange's error when its caller named none.
var errNoRowChanged = errors.New("the write changed no row")

// update runs an update that reports whether it changed its row, or, with
// none set (store.TaskUpdateParams.Else), one that must (writeChange),
// which reports true. what names the row in errors, as in "updating task
// x".
func (q *Queries) update(ctx context.Context, none error, what, existsQuery, id, query string, args ...any) (bool, error) {
	if none != nil {
		return true, q.writeChange(ctx, none, func(err error) error {
			return fmt.Errorf("%s: %w", what, err)
		}, query, args...)
	}
	changed, err := q.execChanged(ctx, existsQuery, id, query, args...)
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return changed, nil
}

func (q *Queries) queryRow(ctx context.Context, query string, args ...any) Row {
	return q.db.QueryRowContext(ctx, q.dialect.Rebind(query), args...)
}

// execChanged runs an update and reports whether it changed a row. When it
// changed none, it tells "no such row" (ErrNotFound) from "not in the state
// the update asked for" (false) with existsQuery.
func (q *Queries) execChanged(ctx context.Context, existsQuery, id, query string, args ...any) (bool, error) {
	res, err := q.exec(ctx, query, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	if n > 0 {
		return true, nil
	}
	var one int
	err = q.queryRow(ctx, existsQuery, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, store.ErrNotFound
	}
	return false, err
}

// scanner is a Row or Rows.
type scanner interface {
	Scan(dest ...any) error
}

// queryAll runs a query and scans every row with scan. The rows are closed
// before it returns, so the connection is free for the next statement.
func queryAll[T any](ctx context.Context, q *Queries, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.db.QueryContext(ctx, q.dialect.Rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// queryOne runs a query that names one row and scans it, or returns ErrNotFound.
func queryOne[T any](ctx context.Context, q *Queries, scan func(scanner) (T, error), query string, args ...any) (T, error) {
	v, err := scan(q.queryRow(ctx, query, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return v, store.ErrNotFound
	}
	return v, err
}

// now is the current time as the store keeps it: UTC, to the microsecond.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// toMicros turns t into what a time column holds.
func toMicros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros turns a time column back into a time, in UTC.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// orNow returns t as the store keeps it, or now when t is zero.
func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// orNewID returns id, or a new uuid when id is empty.
func orNewID(id string) string {
	if id == "" {
		return uuid.NewString()
	}
	return id
}

// toJSON encodes v for a JSON text column.
func toJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encoding json: %w", err)
	}
	return string(b), nil
}

// fromJSON decodes a JSON text column into v; "" and "null" leave v as it is.
func fromJSON(s string, v any) error {
	if s == "" || s == "null" {
		return nil
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decoding json: %w", err)
	}
	return nil
}

// placeholders returns n comma-separated ? placeholders.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// anys turns a slice of strings into query arguments.
func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// likeContains returns a LIKE pattern (with ESCAPE '\') matching s anywhere,
// lowercased for comparing with lower(column).
func likeContains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// where gathers the conditions of a query and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// before adds the keyset condition of a newest-first page: rows created
// before t, or at t with a smaller id than afterID.
func (w *where) before(t time.Time, id string) {
	if t.IsZero() {
		return
	}
	at := toMicros(t)
	if id != "" {
		w.add(`(created_at < ? OR (created_at = ? AND id < ?))`, at, at, id)
	} else {
		w.add(`created_at < ?`, at)
	}
}

// String returns " WHERE c1 AND c2 …", or "" with no conditions.
func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// limitOr returns limit, or def when limit is not positive.
func limitOr(limit, def int) int {
	if limit <= 0 {
		return def
	}
	return limit
}

// parentMissing reports whether err is a foreign key violation, which the
// schema raises only when a row names a parent (job, task, output) that
// does not exist.
func (q *Queries) parentMissing(err error) bool {
	return err != nil && q.dialect.IsForeignKeyViolation(err)
}

// prefixed qualifies each column of a comma-separated list, as in "a.id, a.path".
func prefixed(qualifier, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = qualifier + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}
