// Package postgrestest gives tests a PostgreSQL store of their own: a fresh
// schema of the server TROUPE_TEST_DATABASE_URL names (or of a container when
// Docker answers), dropped when the test ends. It is apart from the postgres
// package so the troupe binary does not link testcontainers.
package postgrestest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/troupe-dev/troupe/store/postgres"
)

// TestDatabaseURLEnv names the environment variable that points tests at a
// PostgreSQL server, as in
// TROUPE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const TestDatabaseURLEnv = "TROUPE_TEST_DATABASE_URL"

// NewTestStore returns a migrated store in a fresh schema of the test
// database, closed and dropped when the test ends. See TestURL for where the
// database comes from; the test is skipped when there is none.
func NewTestStore(t testing.TB) *postgres.Store {
	t.Helper()
	s := openMigrated(t, newTestSchema(t))
	t.Cleanup(func() { _ = s.Close() }) // runs before the schema is dropped
	return s
}

// TestURL returns a connection URL whose search_path is a fresh schema,
// already migrated and dropped when the test ends, for a test that starts
// a troupe process of its own.
//
// The server is the one TROUPE_TEST_DATABASE_URL names; without it, a
// PostgreSQL container when a Docker engine answers (one per test binary,
// reaped by testcontainers). With neither, the test is skipped.
func TestURL(t testing.TB) string {
	t.Helper()
	u := newTestSchema(t)
	if err := openMigrated(t, u).Close(); err != nil {
		t.Fatalf("closing test store: %v", err)
	}
	return u
}

// openMigrated opens the store at u and migrates it.
func openMigrated(t testing.TB, u string) *postgres.Store {
	t.Helper()
	ctx := context.Background()
	s, err := postgres.Open(ctx, u)
	if err != nil {
		t.Fatalf("opening test store: %v", err)
	}
	if err := s.Migrate(ctx); err != nil {
		_ = s.Close()
		t.Fatalf("migrating test store: %v", err)
	}
	return s
}

// newTestSchema creates a schema, dropped when the test ends, and returns
// the URL of the test database with search_path set to it.
func newTestSchema(t testing.TB) string {
	t.Helper()
	base := testServerURL(t)
	schema := "t_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:20]
	ident := pgx.Identifier{schema}.Sanitize()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := adminExec(ctx, base, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("creating test schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminExec(ctx, base, "DROP SCHEMA IF EXISTS "+ident+" CASCADE"); err != nil {
			t.Errorf("dropping test schema: %v", err)
		}
	})
	u, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("building test url: %v", err)
	}
	return u
}

// adminExec runs one statement on a connection of its own.
func adminExec(ctx context.Context, url, query string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, query)
	return err
}

// withSearchPath sets search_path on a URL or key=value DSN.
func withSearchPath(base, schema string) (string, error) {
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		return base + " search_path=" + schema, nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parsing %s: invalid url", TestDatabaseURLEnv)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// testServerURL returns the URL of the test server, or skips the test.
func testServerURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv(TestDatabaseURLEnv); u != "" {
		return u
	}
	u, err := containerURL()
	if err != nil {
		t.Skipf("set %s=postgres://... to run the PostgreSQL store tests (no Docker either: %v)", TestDatabaseURLEnv, err)
	}
	return u
}

// container is the PostgreSQL container of this test binary, started by
// the first test that needs it.
var container struct {
	once sync.Once
	url  string
	err  error
}

func containerURL() (string, error) {
	container.once.Do(func() {
		container.url, container.err = startContainer()
	})
	return container.url, container.err
}

func startContainer() (u string, err error) {
	// testcontainers panics on some hosts without Docker.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("docker: %v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return "", fmt.Errorf("docker: %w", err)
	}
	healthCtx, cancelHealth := context.WithTimeout(ctx, 5*time.Second)
	defer cancelHealth()
	if err := provider.Health(healthCtx); err != nil {
		return "", fmt.Errorf("docker: %w", err)
	}
	c, err := tcpostgres.Run(ctx, "postgres:16-alpine",
		tcpostgres.WithDatabase("troupe"),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		return "", fmt.Errorf("starting postgres container: %w", err)
	}
	return c.ConnectionString(ctx, "sslmode=disable")
}
