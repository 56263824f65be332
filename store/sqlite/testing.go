package sqlite

import (
	"context"
	"path/filepath"
	"testing"
)

// NewTestStore returns a migrated store on a fresh database file in
// t.TempDir(), closed when the test ends.
func NewTestStore(t testing.TB) *Store {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "troupe.db"))
	if err != nil {
		t.Fatalf("opening test store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrating test store: %v", err)
	}
	return s
}
