package storetest

import (
	"os"
	"testing"

	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// ForEachBackend runs fn as a sub-benchmark per store: SQLite (a file in a
// temporary directory) and PostgreSQL (a schema of its own) when
// TROUPE_TEST_DATABASE_URL names a server.
func ForEachBackend(b *testing.B, fn func(b *testing.B, st store.Store)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, sqlite.NewTestStore(b)) })
	b.Run("postgres", func(b *testing.B) {
		if os.Getenv(postgrestest.TestDatabaseURLEnv) == "" {
			b.Skipf("set %s=postgres://... to benchmark PostgreSQL too", postgrestest.TestDatabaseURLEnv)
		}
		fn(b, postgrestest.NewTestStore(b))
	})
}
