package integration

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/store/postgres/pgroles"
)

// serviceDBURLs runs troupe migrate --roles on the test schema at owner (a
// superuser's URL) with uniquely named roles, dropped when the test ends,
// and returns each service's URL under its own role: orchestrator, review
// and worker.
func serviceDBURLs(t *testing.T, owner string) map[string]string {
	t.Helper()
	prefix := "t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12] + "_"
	cmd := exec.Command(troupeBin(t), "migrate", "--roles", "--role-prefix", prefix, "--database-url", owner)
	cmd.Env = append(os.Environ(), "TROUPE_CONFIG=")
	passwords := map[string]string{}
	for _, s := range pgroles.Services {
		passwords[s] = "pw-" + uuid.NewString()
		cmd.Env = append(cmd.Env, "TROUPE_DB_PASSWORD_"+strings.ToUpper(s)+"="+passwords[s])
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, strings.ReplaceAll(owner, "&pool_max_conns=5", ""))
		require.NoError(t, err)
		defer conn.Close(ctx)
		for _, s := range pgroles.Services {
			role := pgx.Identifier{prefix + s}.Sanitize()
			_, _ = conn.Exec(ctx, `DROP OWNED BY `+role)
			_, err := conn.Exec(ctx, `DROP ROLE IF EXISTS `+role)
			require.NoError(t, err)
		}
	})
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	urls := map[string]string{}
	for _, s := range pgroles.Services {
		require.Contains(t, string(out), "created role "+prefix+s)
		require.NotContains(t, string(out), passwords[s], "no password in what migrate says")
		u, err := url.Parse(owner)
		require.NoError(t, err)
		u.User = url.UserPassword(prefix+s, passwords[s])
		urls[s] = u.String()
	}
	return urls
}
