package sqlcore

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func TestRebindDollar(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT * FROM t WHERE a = ? AND b IN (?, ?)`, `SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)`},
		{`SELECT '?', "?" FROM t WHERE a = ?`, `SELECT '?', "?" FROM t WHERE a = $1`},
		{`SELECT 'it''s ?' WHERE a = ?`, `SELECT 'it''s ?' WHERE a = $1`},
		{`lower(x) LIKE ? ESCAPE '\' AND y = ?`, `lower(x) LIKE $1 ESCAPE '\' AND y = $2`},
	} {
		require.Equal(t, tt.want, RebindDollar(tt.in), tt.in)
	}
}

func TestLikeContains(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"Build", "%build%"},
		{"100%", `%100\%%`},
		{"a_b", `%a\_b%`},
		{`c:\dir`, `%c:\\dir%`},
	} {
		require.Equal(t, tt.want, likeContains(tt.in), tt.in)
	}
}

func TestLoadMigrations(t *testing.T) {
	t.Parallel()

	t.Run("SortsByVersion", func(t *testing.T) {
		t.Parallel()
		migs, err := loadMigrations(fstest.MapFS{
			"0010_later.sql": {Data: []byte("b")},
			"0002_next.sql":  {Data: []byte("a")},
			"README.md":      {Data: []byte("not a migration")},
		})
		require.NoError(t, err)
		require.Len(t, migs, 2)
		require.Equal(t, int64(2), migs[0].version)
		require.Equal(t, "a", migs[0].sql)
		require.Equal(t, int64(10), migs[1].version)
	})

	for name, fsys := range map[string]fstest.MapFS{
		"None":             {},
		"BadName":          {"init.sql": {}},
		"BadVersion":       {"v1_init.sql": {}},
		"DuplicateVersion": {"0001_a.sql": {}, "001_b.sql": {}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := loadMigrations(fsys)
			require.Error(t, err)
		})
	}
}
