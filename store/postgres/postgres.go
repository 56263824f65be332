// Package postgres is the store on PostgreSQL, through pgx: the production
// store, shared by every troupe process.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/internal/sqlcore"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// migrations are the NNNN_name.sql files Migrate applies in order.
var migrations, _ = fs.Sub(migrationsFS, "migrations")

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	*sqlcore.Store
	// appName is the application_name of the pool's connections: the
	// connection string's, or troupe/<random> when it names none.
	appName string
	// poolSize is the most connections the pool holds, and keeps.
	poolSize   int
	group      *txGroup
	closeGroup sync.Once
}

// TxGroupStats returns what committing write-only transactions together
// (txGroup) has done since the store opened.
func (s *Store) TxGroupStats() TxGroupStats { return s.group.stats() }

// Close stops committing transactions together, once the groups on their
// way are done, and closes the pool.
func (s *Store) Close() error {
	s.closeGroup.Do(s.group.close)
	return s.Store.Close()
}

var _ store.Store = (*Store)(nil)

// Pool settings. Every open connection may stay idle (until
// connMaxIdleTime): a pool that keeps fewer closes and opens connections
// under a bursty load, and each new one costs the server a backend start (a
// 2,000-job run at 200 jobs/s opened 386 of them with 10 kept). The
// connection string's pool_max_conns (pgxpool's name for it) sets the
// size instead of defaultPoolSize: many processes against one server may
// need less each, to stay under its max_connections.
const (
	defaultPoolSize = 20
	connMaxIdleTime = 5 * time.Minute
)

// Open connects to the database at url, a postgres:// URL or a key=value
// DSN; parameters pgx does not know, such as search_path, are sent as
// run-time parameters, but for pool_max_conns: the most connections the
// pool holds (default 20), all of which it keeps. Open does not migrate
// (call Migrate), but fails with an error wrapping store.ErrSchemaTooNew
// when the database was migrated by a newer troupe.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message can quote the URL, password included.
		return nil, errors.New("opening postgres: invalid connection string")
	}
	size := defaultPoolSize
	if v, ok := cfg.RuntimeParams["pool_max_conns"]; ok {
		delete(cfg.RuntimeParams, "pool_max_conns")
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("opening postgres: pool_max_conns: %q is not a positive number", v)
		}
		size = n
	}
	// A name of its own tells this pool's connections from others'
	// (pg_stat_activity, FlushStats).
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "troupe/" + uuid.NewString()[:8]
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(size)
	db.SetMaxIdleConns(size)
	db.SetConnMaxIdleTime(connMaxIdleTime)
	group := newTxGroup(db)
	s := &Store{Store: sqlcore.New(db, dialect{group: group}, migrations), group: group, appName: cfg.RuntimeParams["application_name"], poolSize: size}
	if err := s.Ping(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("opening postgres: %w", err)
	}
	if err := s.CheckVersion(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("opening postgres: %w", err)
	}
	return s, nil
}

// dialect is PostgreSQL's: $n placeholders and advisory locks.
type dialect struct {
	group *txGroup // commits write-only transactions together
}

func (dialect) Rebind(query string) string { return sqlcore.RebindDollar(query) }

// LockXact takes a transaction-level advisory lock on a hash of the schema
// and key, so stores in different schemas of one database do not contend.
// In a pipelined transaction the lock goes with the statement after it.
func (dialect) LockXact(ctx context.Context, tx sqlcore.DBTX, key string) error {
	const lock = `SELECT pg_advisory_xact_lock(hashtextextended(coalesce(current_schema(), '') || '.' || $1, 0))`
	if d, ok := tx.(sqlcore.Deferrer); ok {
		d.Defer(lock, []any{key}, nil, func(err error) error { return fmt.Errorf("locking %s: %w", key, err) })
		return nil
	}
	_, err := tx.ExecContext(ctx, lock, key)
	return err
}

func (dialect) TableExists(ctx context.Context, db sqlcore.DBTX, table string) (bool, error) {
	var ok bool
	err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&ok)
	return ok, err
}

// IsRetryable: a deadlock, a serialization failure, or a connection lost
// before the transaction's COMMIT went.
func (dialect) IsRetryable(err error) bool {
	var lost *connLostError
	if errors.As(err, &lost) {
		return true
	}
	var e *pgconn.PgError
	return errors.As(err, &e) && (e.Code == "40P01" || e.Code == "40001")
}

func (dialect) SkipLocked() string { return " FOR UPDATE SKIP LOCKED" }

func (dialect) LockRow() string { return " FOR NO KEY UPDATE" }

func (dialect) WritingWith() bool { return true }

func (dialect) IsForeignKeyViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23503"
}

// FlushStats makes the server's statistics of this pool's work complete,
// for a benchmark to read: a backend reports its last second's counts
// (pg_stat_database) only when it next works, up to 10 s later, or when it
// ends. So it closes the pool's connections, waits (up to 5 s) until the
// backends that served them (by their application_name) have ended, and
// lets the pool keep connections again. Work meanwhile opens new
// connections.
func (s *Store) FlushStats(ctx context.Context) error {
	db := s.DB()
	var before time.Time
	if err := db.QueryRowContext(ctx, `SELECT now()`).Scan(&before); err != nil {
		return fmt.Errorf("flushing statistics: %w", err)
	}
	db.SetMaxIdleConns(0) // closes the idle ones; busy ones close when returned
	defer db.SetMaxIdleConns(s.poolSize)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $2 AND backend_start < $1
			AND pid <> pg_backend_pid()`, before, s.appName).Scan(&left)
		if err != nil {
			return fmt.Errorf("flushing statistics: %w", err)
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flushing statistics: %d connections of the pool still open after 5s", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Backend is a server process serving one of the pool's connections.
type Backend struct {
	PID   int
	Start time.Time // when the server started it
}

// Backends returns the server processes of this pool's open connections
// (by their application_name), for a benchmark on the server's machine to
// read their CPU time.
func (s *Store) Backends(ctx context.Context) ([]Backend, error) {
	rows, err := s.DB().QueryContext(ctx, `SELECT pid, backend_start FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, s.appName)
	if err != nil {
		return nil, fmt.Errorf("listing backends: %w", err)
	}
	defer rows.Close()
	var bs []Backend
	for rows.Next() {
		var b Backend
		if err := rows.Scan(&b.PID, &b.Start); err != nil {
			return nil, fmt.Errorf("listing backends: %w", err)
		}
		bs = append(bs, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing backends: %w", err)
	}
	return bs, nil
}
