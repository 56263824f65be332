package sqlcore

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
)

// DBTX is what statements run on: a *sql.DB or a *sql.Tx (through
// stdDB), or a driver's own transaction (see TxRunner).
type DBTX interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) Row
}

// Rows is the result of a query, as *sql.Rows reads it.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Row is the result of a query of one row, as *sql.Row reads it: Scan
// returns sql.ErrNoRows (or an error that is one) when there is none.
type Row interface {
	Scan(dest ...any) error
}

// sqlDBTX is what *sql.DB, *sql.Tx and *sql.Conn have in common.
type sqlDBTX interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stdDB is a DBTX on database/sql.
type stdDB struct{ db sqlDBTX }

func (s stdDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.db.ExecContext(ctx, query, args...)
}

func (s stdDB) QueryContext(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (s stdDB) QueryRowContext(ctx context.Context, query string, args ...any) Row {
	return s.db.QueryRowContext(ctx, query, args...)
}

// Deferrer is a DBTX that may hold writes back and send them with its next
// statement or its commit, in one round trip (see Queries.write). A write
// held back reports its error then, through onErr when that is set, and
// hands a RETURNING row to scan when that is set; scan must not fail once
// the row has come (it may be read with COMMIT already on its way), and
// must set what it reads rather than add to it: a write may be sent more
// than once (with a group of transactions that failed, then alone). Its
// args are encoded when it is sent: they must not change meanwhile.
type Deferrer interface {
	Defer(query string, args []any, scan func(Row) error, onErr func(error) error)
	// DeferChange holds back a write that must change a row (see
	// Queries.writeChange). When it changes none, the server fails it,
	// which ends the transaction: what was sent after it, COMMIT
	// included, is skipped. Its error is then none itself; any other
	// goes through onErr when that is set.
	DeferChange(query string, args []any, none error, onErr func(error) error)
}

// TxRunner is a Dialect that runs transactions itself instead of through
// database/sql: RunTx runs fn in a transaction on a connection of db,
// committed when fn returns nil and rolled back otherwise (a panic too,
// which goes on).
type TxRunner interface {
	RunTx(ctx context.Context, db *sql.DB, fn func(tx DBTX) error) error
}

// Dialect is what differs between the databases the shared queries run on.
// The queries are written for SQLite and PostgreSQL alike, with ? placeholders.
type Dialect interface {
	// Rebind rewrites a query's ? placeholders into the driver's own.
	Rebind(query string) string
	// LockXact takes an exclusive lock named key, held until tx ends. It
	// serialises writers that read before they write (artifact versions,
	// migrations) where the transaction alone does not.
	LockXact(ctx context.Context, tx DBTX, key string) error
	// TableExists reports whether a table is visible to the connection.
	TableExists(ctx context.Context, db DBTX, table string) (bool, error)
	// IsForeignKeyViolation reports whether err is a foreign key violation.
	IsForeignKeyViolation(err error) bool
	// IsRetryable reports whether err aborted a transaction that succeeds
	// when run again (a deadlock, a serialization failure, and on
	// PostgreSQL a connection lost before COMMIT went).
	IsRetryable(err error) bool
	// SkipLocked is the clause, with a leading space, that ends a SELECT
	// to lock the rows it returns and pass over rows another transaction
	// has locked: " FOR UPDATE SKIP LOCKED" where writers run side by
	// side, "" where they are serialised anyway.
	SkipLocked() string
	// LockRow is the clause, with a leading space, that ends a SELECT of
	// one row to hold it until the transaction ends, as an update of it
	// would: " FOR NO KEY UPDATE", or "" where writers are serialised.
	LockRow() string
	// WritingWith reports whether a WITH clause may hold an INSERT or an
	// UPDATE … RETURNING, so that two writes, or a write and a read, can
	// be one statement.
	WritingWith() bool
}

// RebindDollar rewrites ? placeholders as $1, $2, … for PostgreSQL. A ?
// inside a quoted string or identifier is left alone.
func RebindDollar(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	var quote byte // the quote character of the literal we are in, or 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
