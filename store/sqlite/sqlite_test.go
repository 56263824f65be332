package sqlite_test

import (
	"context"
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
	require.ErrorContains(t, err, "up to 1")
	require.NoError(t, s.Close())

	_, err = sqlite.Open(ctx, path)
	require.ErrorIs(t, err, store.ErrSchemaTooNew)
	require.ErrorContains(t, err, "9999")
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
