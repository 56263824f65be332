// Package sqlite is the store on SQLite, through the pure-Go
// modernc.org/sqlite driver: for one process, development and tests.
//
// The database runs in WAL mode with foreign keys on, and every transaction
// begins IMMEDIATE. Writes go through a single connection, so writers queue
// instead of failing with SQLITE_BUSY, and those queued commit together
// (group commit); so inside InTx, use only the Querier the transaction hands
// over: the store itself would wait for the transaction to end.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/internal/sqlcore"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// migrations are the NNNN_name.sql files Migrate applies in order.
var migrations, _ = fs.Sub(migrationsFS, "migrations")

// GroupCommitStats counts what group commit has done (Store.GroupCommitStats).
type GroupCommitStats = sqlcore.GroupCommitStats

// Store is a store.Store on a SQLite database file.
type Store struct {
	*sqlcore.Store
}

var _ store.Store = (*Store)(nil)

// Open opens the SQLite database at path, creating the file when it does
// not exist, readable by its owner only (0600; SQLite gives the WAL and
// shared-memory files the database file's mode); ":memory:" is a private
// in-memory database. It does not migrate (call Migrate), but fails with an
// error wrapping store.ErrSchemaTooNew when the database was migrated by a
// newer troupe.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	conn, err := sqlite.NewConnector(dsn(path))
	if err != nil {
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	db := sql.OpenDB(cachingConnector{conn})
	// One connection: SQLite has one writer anyway, ":memory:" is per
	// connection, and a queue in the pool beats SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &Store{Store: sqlcore.New(db, dialect{}, migrations)}
	// Writers take turns on the one connection anyway; committing those
	// waiting together writes the WAL once for all of them.
	s.EnableGroupCommit(groupCommitMax)
	if err := s.Ping(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	if err := s.CheckVersion(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	return s, nil
}

// createPrivate creates the database file at path with mode 0600 when it
// does not exist: SQLite itself would create it 0644, readable by every
// user of the machine, and its WAL and shared-memory files after it. An
// existing file keeps its mode: whoever made it chose it.
func createPrivate(path string) error {
	if inMemory(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// groupCommitMax bounds how many transactions commit together.
const groupCommitMax = 64

// dsn returns the modernc.org/sqlite data source name for path.
func dsn(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Savepoints (group commit runs each transaction in one) journal the
	// pages they change; in memory, not in a temporary file.
	q.Add("_pragma", "temp_store(MEMORY)")
	if !inMemory(path) {
		q.Add("_pragma", "journal_mode(WAL)")
	}
	q.Set("_txlock", "immediate")
	return "file:" + escapePath(path) + "?" + q.Encode()
}

// inMemory reports whether path names a database private to each
// connection: ":memory:", or "" (a temporary database SQLite deletes when
// the connection closes).
func inMemory(path string) bool { return path == ":memory:" || path == "" }

// escapePath escapes the characters that would end a file: URI's path.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// dialect is SQLite's: ? placeholders, and no locks beyond the write lock
// every (IMMEDIATE) transaction already holds.
type dialect struct{}

func (dialect) Rebind(query string) string { return query }

func (dialect) LockXact(context.Context, sqlcore.DBTX, string) error { return nil }

func (dialect) TableExists(ctx context.Context, db sqlcore.DBTX, table string) (bool, error) {
	var ok bool
	err := db.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)`, table).Scan(&ok)
	return ok, err
}

func (dialect) IsForeignKeyViolation(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// IsRetryable: SQLite serialises writers (one connection, BEGIN
// IMMEDIATE, busy_timeout), so nothing aborts for another transaction's sake.
func (dialect) IsRetryable(error) bool { return false }

// SkipLocked: SQLite has no row locks; every statement and transaction
// that writes holds the database's one write lock.
func (dialect) SkipLocked() string { return "" }

// LockRow: every transaction that writes holds the database's write lock.
func (dialect) LockRow() string { return "" }

func (dialect) WritingWith() bool { return false }
