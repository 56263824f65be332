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

// TestDashboardCredentialsChecked: a weak session key is refused whatever
// the address, a weak password beyond loopback only; each error names the
// variable.
func TestDashboardCredentialsChecked(t *testing.T) {
	for _, tc := range []struct {
		addr, key, users, proxies string
		err                       string
	}{
		{addr: "127.0.0.1:8080", key: "k3y", err: "TROUPE_DASHBOARD_SESSION_KEY: 3 bytes"},
		{addr: "127.0.0.1:8080", key: "9a3f0c1e77d24b58a6e1f0c3b2d49e87"},
		{addr: "0.0.0.0:8080", users: "ada:x", err: "TROUPE_DASHBOARD_USERS: the password of ada"},
		{addr: "127.0.0.1:8080", users: "ada:x"},
		{addr: "0.0.0.0:8080", users: "ada:Tr0ub4dor&3x!"},
		{addr: "127.0.0.1:8080", proxies: "10.0.0.0/8, 192.168.1.4", users: "ada:x"},
		{addr: "127.0.0.1:8080", proxies: "proxy.example", err: "TROUPE_DASHBOARD_TRUSTED_PROXIES"},
	} {
		t.Setenv("TROUPE_DASHBOARD_SESSION_KEY", tc.key)
		t.Setenv("TROUPE_DASHBOARD_USERS", tc.users)
		t.Setenv("TROUPE_DASHBOARD_TRUSTED_PROXIES", tc.proxies)
		t.Setenv("TROUPE_DASHBOARD_TOKEN", "")
		d := dashboardFlags{addr: tc.addr}
		_, err := d.auth()
		if tc.err == "" {
			require.NoError(t, err, "%+v", tc)
			continue
		}
		require.ErrorContains(t, err, tc.err, "%+v", tc)
	}
}
