package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
	"github.com/troupe-dev/troupe/store/storetest"
)

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) store.Store { return sqlite.NewTestStore(t) })
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "troupe.db")

	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx))
	_, err = s.DB().ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`)
	require.NoError(t, err)

	err = s.Migrate(ctx)
	require.ErrorIs(t, err, store.ErrSchemaTooNew)
	require.ErrorContains(t, err, "9999")
	require.ErrorContains(t, err, "up to 4")
	require.NoError(t, s.Close())

	_, err = sqlite.Open(ctx, path)
	require.ErrorIs(t, err, store.ErrSchemaTooNew)
	require.ErrorContains(t, err, "9999")
}

func TestMigrateUpgradesFromVersion1(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "troupe.db")
	initSQL, err := os.ReadFile("migrations/0001_init.sql")
	require.NoError(t, err)
	storetest.UpgradeFromV1(t, func() storetest.Upgradable {
		s, err := sqlite.Open(context.Background(), path)
		require.NoError(t, err)
		return s
	}, []string{
		`CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		string(initSQL),
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)`,
	}, `SELECT name FROM sqlite_master WHERE type = 'index'
		AND name IN ('jobs_status_updated_at', 'tasks_job_id_role', 'outputs_role_status',
			'model_calls_job_id_created_at', 'model_calls_job_id') ORDER BY name`)
}

func TestOpenDoesNotMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "troupe.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	_, err = s.JobGetByID(ctx, "x")
	require.Error(t, err)
	require.NotErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.Migrate(ctx))
	_, err = s.JobGetByID(ctx, "x")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, ":memory:")
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.Migrate(ctx))
	_, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: "planning"}})
	require.NoError(t, err)
	require.True(t, created)
}

// TestCachedStatementsNest: a query whose prepared statement still has
// rows open runs again, in the same transaction, without disturbing them;
// and a cached statement gives each run its own arguments.
func TestCachedStatementsNest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "nest.db"))
	require.NoError(t, err)
	defer s.Close()
	db := s.DB()
	_, err = db.ExecContext(ctx, `CREATE TABLE t (n INTEGER)`)
	require.NoError(t, err)
	for n := 1; n <= 3; n++ {
		_, err = db.ExecContext(ctx, `INSERT INTO t (n) VALUES (?)`, n)
		require.NoError(t, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	const q = `SELECT n FROM t WHERE n >= ? ORDER BY n`
	outer, err := tx.QueryContext(ctx, q, 1)
	require.NoError(t, err)
	var pairs [][2]int
	for outer.Next() {
		var a int
		require.NoError(t, outer.Scan(&a))
		inner, err := tx.QueryContext(ctx, q, a)
		require.NoError(t, err)
		for inner.Next() {
			var b int
			require.NoError(t, inner.Scan(&b))
			pairs = append(pairs, [2]int{a, b})
		}
		require.NoError(t, inner.Close())
	}
	require.NoError(t, outer.Err())
	require.NoError(t, outer.Close())
	require.Equal(t, [][2]int{{1, 1}, {1, 2}, {1, 3}, {2, 2}, {2, 3}, {3, 3}}, pairs)
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "troupe.db")

	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.Migrate(ctx)) // writes, so the WAL and shared-memory files exist

	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		info, err := os.Stat(name)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), name)
	}
}

func TestOpenKeepsAnExistingFilesMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "troupe.db")
	require.NoError(t, os.WriteFile(path, nil, 0o640))
	require.NoError(t, os.Chmod(path, 0o640))

	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx))
	require.NoError(t, s.Close())

	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), info.Mode().Perm())
}
