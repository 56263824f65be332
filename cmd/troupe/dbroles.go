package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/troupe-dev/troupe/store/postgres/pgroles"
)

// dbPasswordVar is the variable troupe migrate --roles reads a service
// role's password from.
func dbPasswordVar(service string) string {
	return "TROUPE_DB_PASSWORD_" + strings.ToUpper(service)
}

// applyDBRoles gives each service its PostgreSQL role (pgroles), named
// prefix + service, with the password from dbPasswordVar(service) when set;
// subjectPrefix is nats.prefix, which the outbox rows' subjects start with.
func applyDBRoles(ctx context.Context, out io.Writer, url, prefix, subjectPrefix string) error {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") && !strings.Contains(url, "=") {
		// One file, opened by one process: nothing to grant.
		fmt.Fprintln(out, "--roles: SQLite has no roles: nothing to grant")
		return nil
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return errors.New("--roles: invalid connection string") // pgx's message can quote the password
	}
	delete(cfg.RuntimeParams, "pool_max_conns") // the store's, not the server's
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("--roles: connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	roles := pgroles.Names(prefix)
	for i := range roles {
		roles[i].Password = os.Getenv(dbPasswordVar(roles[i].Service))
	}
	done, err := pgroles.Apply(ctx, conn, roles, pgroles.Options{OutboxSubjects: pgroles.OutboxSubjects(subjectPrefix)})
	if err != nil {
		var missing []string
		for _, r := range roles {
			if r.Password == "" {
				missing = append(missing, dbPasswordVar(r.Service))
			}
		}
		if len(missing) > 0 && strings.Contains(err.Error(), "has no password") {
			return fmt.Errorf("--roles: %w: set %s", err, strings.Join(missing, ", "))
		}
		return fmt.Errorf("--roles: %w", err)
	}
	for _, line := range done {
		fmt.Fprintln(out, line)
	}
	return nil
}
