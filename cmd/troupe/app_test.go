package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func TestDataDirIsPrivate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), ".troupe")
	var logs bytes.Buffer
	require.NoError(t, makeDataDir(dir, zerolog.New(&logs)))
	info, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	require.Empty(t, logs.String())

	// A directory an older troupe made 0755 is named in a warning.
	old := filepath.Join(t.TempDir(), "old")
	require.NoError(t, os.Mkdir(old, 0o755))
	require.NoError(t, os.Chmod(old, 0o755))
	require.NoError(t, makeDataDir(old, zerolog.New(&logs)))
	require.Contains(t, logs.String(), "chmod 700")
	require.Contains(t, logs.String(), `"mode":"0755"`)
}

func TestSQLiteStoreIsPrivate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "var", "troupe.db")
	s, err := openStore(context.Background(), path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })

	info, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	info, err = os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}
