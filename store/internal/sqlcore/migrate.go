package sqlcore

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/troupe-dev/troupe/store"
)

// migration is one NNNN_name.sql file.
type migration struct {
	version int64
	name    string
	sql     string
}

// loadMigrations reads the NNNN_name.sql files at the root of fsys, in
// version order.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("listing migrations: %w", err)
	}
	var migs []migration
	seen := map[int64]string{}
	for _, name := range names {
		prefix, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", name)
		}
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", other, name)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		migs = append(migs, migration{version: v, name: name, sql: string(b)})
	}
	if len(migs) == 0 {
		return nil, fmt.Errorf("no migrations embedded")
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	return migs, nil
}

const createSchemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    BIGINT PRIMARY KEY,
	applied_at BIGINT NOT NULL
)`

// Migrate applies every embedded migration not yet applied, in one
// transaction. It returns an error wrapping store.ErrSchemaTooNew when the
// database is at a version newer than the newest embedded migration.
func (s *Store) Migrate(ctx context.Context) error {
	migs, err := loadMigrations(s.migrations)
	if err != nil {
		return err
	}
	newest := migs[len(migs)-1].version
	// A database already at this version needs nothing: say so without the
	// lock and the CREATE below, which a service's role of its own may not
	// run (troupe migrate --roles grants it no DDL).
	if ok, err := s.dialect.TableExists(ctx, stdDB{s.db}, "schema_migrations"); err == nil && ok {
		if current, err := s.schemaVersion(ctx); err == nil && current == newest {
			return nil
		}
	}
	return s.inTx(ctx, func(q *Queries) error {
		// Two processes starting at once take turns; the second finds
		// nothing left to do.
		if err := q.dialect.LockXact(ctx, q.db, "troupe.migrate"); err != nil {
			return fmt.Errorf("locking migrations: %w", err)
		}
		if _, err := q.exec(ctx, createSchemaMigrations); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		current, err := q.schemaVersion(ctx)
		if err != nil {
			return err
		}
		if err := checkVersion(current, newest); err != nil {
			return err
		}
		for _, m := range migs {
			if m.version <= current {
				continue
			}
			if _, err := q.db.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("applying migration %s: %w", m.name, err)
			}
			if _, err := q.exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				m.version, toMicros(now())); err != nil {
				return fmt.Errorf("recording migration %s: %w", m.name, err)
			}
		}
		return nil
	})
}

// CheckVersion returns an error wrapping store.ErrSchemaTooNew when the
// database was migrated past the newest embedded migration. A database never
// migrated passes. Open calls it so that an older troupe refuses a newer
// database before touching it.
func (s *Store) CheckVersion(ctx context.Context) error {
	migs, err := loadMigrations(s.migrations)
	if err != nil {
		return err
	}
	ok, err := s.dialect.TableExists(ctx, stdDB{s.db}, "schema_migrations")
	if err != nil {
		return fmt.Errorf("looking for schema_migrations: %w", err)
	}
	if !ok {
		return nil
	}
	current, err := s.schemaVersion(ctx)
	if err != nil {
		return err
	}
	return checkVersion(current, migs[len(migs)-1].version)
}

func checkVersion(current, newest int64) error {
	if current > newest {
		return fmt.Errorf("%w: database is at version %d, this troupe knows versions up to %d",
			store.ErrSchemaTooNew, current, newest)
	}
	return nil
}

// schemaVersion returns the newest applied migration, 0 for none.
func (q *Queries) schemaVersion(ctx context.Context) (int64, error) {
	var v sql.NullInt64
	if err := q.queryRow(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v.Int64, nil
}
