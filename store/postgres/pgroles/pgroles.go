// Package pgroles gives each Troupe service a PostgreSQL role of its own,
// allowed only what that service does to the store: the workers stage
// outputs and record their tasks' progress, but cannot write artifacts,
// reviews or lessons, nor promote an output; only the review service does.
// troupe migrate --roles applies it, after the migrations, as the owner of
// the tables.
//
// Grants work on tables and columns; what they cannot say is which rows.
// Row-level security closes the two holes that matter most: a worker may
// insert outputs, but only staged ones (and set one aside, never promote
// it), and outbox rows only on the subjects it writes (OutboxSubjects:
// review requests, its events and those the orchestrator's relay sends for
// it, dead letters), so it cannot forge a task or a promotion for the
// orchestrator's relay to send. Still open,
// and said in docs/architecture.md: one worker role serves every Troupe
// role, so a worker can update another role's tasks, fail any job (it
// fails its own when a task is dead-lettered), and write events of any
// kind.
package pgroles

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// OutboxSubjects are, by service, the subjects its role may insert outbox
// rows on, under the NATS subject prefix (bus.DefaultPrefix when empty):
// what its relay sends, and what it writes for the orchestrator's relay to
// send (bus.Subjects.WorkerOutboxSubjects, ReviewOutboxSubjects).
func OutboxSubjects(prefix string) map[string][]string {
	subj := bus.Subjects{Prefix: bus.Topology{Prefix: prefix}.WithDefaults().Prefix}
	var workers []string
	for _, role := range schemas.Roles {
		workers = append(workers, subj.WorkerOutboxSubjects(role)...)
	}
	return map[string][]string{Review: subj.ReviewOutboxSubjects(), Worker: workers}
}

// The services with a role of their own.
const (
	Orchestrator = "orchestrator"
	Review       = "review"
	Worker       = "worker"
)

// Services are the services Apply knows, in order.
var Services = []string{Orchestrator, Review, Worker}

// DefaultPrefix is what Names puts before each service's name.
const DefaultPrefix = "troupe_"

// Tables are the store's tables: every one of them is in grants, for
// each service.
var Tables = []string{"schema_migrations", "jobs", "tasks", "outputs", "reviews", "artifacts",
	"lessons", "events", "outbox", "dead_letters", "model_calls"}

// access is what a service may do to a table besides reading it (every
// service reads every table: the API, the dashboard and the prompts
// read widely, and reading gives no way to change what Troupe does).
type access struct {
	insert bool
	update []string // columns; none: no UPDATE
	delete bool
}

// outboxRelay is what every service's outbox relay does: add rows, claim
// them, record a failed publish, delete the published ones.
var outboxRelay = access{insert: true, update: []string{"claimed_by", "claimed_until", "attempts", "last_error", "next_attempt_at"}, delete: true}

// grants are each service's privileges, read from the SQL each one runs
// (store/internal/sqlcore, through the store methods the orchestrator,
// review, dashboard and worker packages call).
var grants = map[string]map[string]access{
	Orchestrator: {
		// Jobs in, planned into tasks; cancel, revise, fail and finish them.
		"jobs":  {insert: true, update: []string{"status", "reason", "updated_at"}},
		"tasks": {insert: true, update: []string{"status", "revision", "attempts", "reason", "feedback", "updated_at"}},
		// A cancelled or revised job's outputs are set aside.
		"outputs":      {update: []string{"status"}},
		"events":       {insert: true},
		"outbox":       outboxRelay,
		"dead_letters": {insert: true, update: []string{"status", "resolved_by", "resolved_at"}},
		"model_calls":  {insert: true}, // the planner
	},
	Review: {
		// Decisions: the output and its task move, the review is recorded,
		// a promotion writes the shared area and MEMORY.
		"tasks":   {update: []string{"status", "reason", "feedback", "updated_at"}},
		"outputs": {update: []string{"status"}},
		// A dead letter fails its job (orchestrator.DeadLetters).
		"jobs":         {update: []string{"status", "reason", "updated_at"}},
		"reviews":      {insert: true},
		"artifacts":    {insert: true},
		"lessons":      {insert: true},
		"events":       {insert: true},
		"outbox":       outboxRelay,
		"dead_letters": {insert: true},
		"model_calls":  {insert: true}, // the model reviewer
	},
	Worker: {
		// Start a task, record why it failed, stage its output.
		"tasks": {update: []string{"status", "attempts", "reason", "updated_at"}},
		// Staged only, and set aside (cancelled) when a spent budget stops
		// the job: outputsPolicies.
		"outputs": {insert: true, update: []string{"status"}},
		// A dead letter fails its job; a spent budget stops it.
		"jobs":         {update: []string{"status", "reason", "updated_at"}},
		"events":       {insert: true},
		"outbox":       outboxRelay,
		"dead_letters": {insert: true},
		"model_calls":  {insert: true},
	},
}

// sequences are the tables whose BIGSERIAL seq an INSERT draws from.
var sequences = []string{"events", "outbox"}

// Role is one service's PostgreSQL role.
type Role struct {
	// Service is Orchestrator, Review or Worker.
	Service string
	// Name is the role's name in PostgreSQL.
	Name string
	// Password is set on the role. Empty keeps an existing role's
	// password (one a database operator manages); a role that does not
	// exist yet needs one.
	Password string
}

// Names returns the role of each service, named prefix + service
// (DefaultPrefix when prefix is empty).
func Names(prefix string) []Role {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	out := make([]Role, len(Services))
	for i, s := range Services {
		out[i] = Role{Service: s, Name: prefix + s}
	}
	return out
}

// Options tune Apply.
type Options struct {
	// OutboxSubjects are, by service, the NATS subjects (with the * and >
	// wildcards) of the outbox rows its role may insert: its relay's
	// (bus.Subjects.WorkerSubjects of every role, ReviewSubjects). Required
	// for the worker's and review's roles; the orchestrator's inserts any.
	OutboxSubjects map[string][]string
}

// subjectToken is a token of a subject Apply writes into a policy.
var subjectToken = regexp.MustCompile(`^([A-Za-z0-9_$-]+|\*|>)$`)

// subjectsRegexp returns the PostgreSQL regular expression, anchored, that
// matches exactly the subjects the NATS patterns match.
func subjectsRegexp(patterns []string) (string, error) {
	var alts []string
	for _, p := range patterns {
		tokens := strings.Split(p, ".")
		for i, t := range tokens {
			if !subjectToken.MatchString(t) || (t == ">" && i != len(tokens)-1) {
				return "", fmt.Errorf("outbox subject %q: want tokens of letters, digits, $, - and _, or * and a last >", p)
			}
			switch t {
			case "*":
				tokens[i] = `[^.]+`
			case ">":
				tokens[i] = `.+`
			default:
				tokens[i] = regexp.QuoteMeta(t)
			}
		}
		alts = append(alts, strings.Join(tokens, `\.`))
	}
	return `^(` + strings.Join(alts, "|") + `)$`, nil
}

// Apply creates the roles that do not exist (able to log in, with their
// password), sets the password of those given one, and grants each
// exactly its service's privileges on the store's tables in the current
// schema of conn (its search_path), revoking whatever else they held
// there. It runs in one transaction, as the tables' owner (a role that
// may create roles, when one is missing), after the migrations. It
// returns what it did, a line each, with no password in it.
func Apply(ctx context.Context, conn *pgx.Conn, roles []Role, opts Options) (done []string, err error) {
	for _, r := range roles {
		if _, ok := grants[r.Service]; !ok {
			return nil, fmt.Errorf("role %s: %q is not a service; use %s", r.Name, r.Service, strings.Join(Services, ", "))
		}
		if r.Name == "" {
			return nil, fmt.Errorf("the %s role has no name", r.Service)
		}
	}
	outbox := map[string]string{}
	for _, r := range roles {
		if r.Service == Orchestrator {
			continue
		}
		if len(opts.OutboxSubjects[r.Service]) == 0 {
			return nil, fmt.Errorf("role %s: no outbox subjects for the %s service", r.Name, r.Service)
		}
		re, err := subjectsRegexp(opts.OutboxSubjects[r.Service])
		if err != nil {
			return nil, err
		}
		outbox[r.Service] = re
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("granting roles: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("granting roles: %w", err)
	}
	if schema == "" {
		return nil, errors.New("granting roles: no current schema: set search_path to the store's")
	}
	var missing []string
	for _, t := range Tables {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schema, t}.Sanitize()).Scan(&ok); err != nil {
			return nil, fmt.Errorf("granting roles: %w", err)
		}
		if !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("granting roles: schema %s has no table %s: migrate first", schema, strings.Join(missing, ", "))
	}
	ident := func(parts ...string) string { return pgx.Identifier(parts).Sanitize() }
	exec := func(sql string, args ...any) error {
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("granting roles: %w", err)
		}
		return nil
	}
	// format() quotes the password as a literal on the server: utility
	// statements take no parameters.
	execFormatted := func(format string, args ...any) error {
		var sql string
		if err := tx.QueryRow(ctx, `SELECT format(`+format+`)`, args...).Scan(&sql); err != nil {
			return fmt.Errorf("granting roles: %w", err)
		}
		return exec(sql)
	}

	for _, r := range roles {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, r.Name).Scan(&exists); err != nil {
			return nil, fmt.Errorf("granting roles: %w", err)
		}
		switch {
		case !exists && r.Password == "":
			return nil, fmt.Errorf("role %s (%s) does not exist, and has no password to create it with", r.Name, r.Service)
		case !exists:
			if err := execFormatted(`'CREATE ROLE %I LOGIN PASSWORD %L', $1::text, $2::text`, r.Name, r.Password); err != nil {
				return nil, err
			}
			done = append(done, "created role "+r.Name)
		case r.Password != "":
			if err := execFormatted(`'ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text`, r.Name, r.Password); err != nil {
				return nil, err
			}
			done = append(done, "set the password of role "+r.Name)
		}

		role := ident(r.Name)
		tables := make([]string, len(Tables))
		for i, t := range Tables {
			tables[i] = ident(schema, t)
		}
		all := strings.Join(tables, ", ")
		// Table-level REVOKE takes the column privileges with it.
		if err := exec(`REVOKE ALL ON ` + all + ` FROM ` + role); err != nil {
			return nil, err
		}
		if err := exec(`GRANT USAGE ON SCHEMA ` + ident(schema) + ` TO ` + role); err != nil {
			return nil, err
		}
		if err := exec(`GRANT SELECT ON ` + all + ` TO ` + role); err != nil {
			return nil, err
		}
		var what []string
		for _, t := range Tables {
			a := grants[r.Service][t]
			var privs []string
			if a.insert {
				privs = append(privs, "INSERT")
			}
			if len(a.update) > 0 {
				privs = append(privs, "UPDATE ("+strings.Join(a.update, ", ")+")")
			}
			if a.delete {
				privs = append(privs, "DELETE")
			}
			if len(privs) == 0 {
				continue
			}
			if err := exec(`GRANT ` + strings.Join(privs, ", ") + ` ON ` + ident(schema, t) + ` TO ` + role); err != nil {
				return nil, err
			}
			what = append(what, t+": "+strings.ToLower(strings.Join(privs, ", ")))
		}
		for _, t := range sequences {
			var seq string
			if err := tx.QueryRow(ctx, `SELECT pg_get_serial_sequence($1, 'seq')`, ident(schema, t)).Scan(&seq); err != nil {
				return nil, fmt.Errorf("granting roles: %w", err)
			}
			if err := exec(`REVOKE ALL ON SEQUENCE ` + seq + ` FROM ` + role); err != nil {
				return nil, err
			}
			if grants[r.Service][t].insert {
				if err := exec(`GRANT USAGE ON SEQUENCE ` + seq + ` TO ` + role); err != nil {
					return nil, err
				}
			}
		}
		done = append(done, fmt.Sprintf("role %s (%s) reads every table and writes %s", r.Name, r.Service, strings.Join(what, "; ")))
	}
	policies, err := outputsPolicies(ident(schema, "outputs"), roles)
	if err != nil {
		return nil, err
	}
	policies = append(policies, outboxPolicies(ident(schema, "outbox"), roles, outbox)...)
	for _, p := range policies {
		if err := exec(p); err != nil {
			return nil, err
		}
	}
	if slices.ContainsFunc(roles, func(r Role) bool { return r.Service == Worker }) {
		done = append(done, "outputs: row-level security on; a worker's role inserts staged outputs only")
	}
	done = append(done, "outbox: row-level security on; a worker's and review's roles insert rows on their relays' subjects only")
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("granting roles: %w", err)
	}
	return done, nil
}

// outputsPolicies turns on row-level security on outputs: the workers'
// role reads every output, inserts staged ones only (a promotion is
// review's) and may only set aside (cancel) an output still waiting for
// review, as a spent budget does; the orchestrator's and review's roles do what their grants
// allow. The tables' owner, which migrates, is not subject to it. A role
// of your own that reads outputs needs a policy too (or BYPASSRLS).
func outputsPolicies(table string, roles []Role) ([]string, error) {
	stmts := []string{`ALTER TABLE ` + table + ` ENABLE ROW LEVEL SECURITY`}
	policy := func(role Role, suffix, rest string) {
		name := pgx.Identifier{"troupe_" + role.Name + "_" + suffix}.Sanitize()
		stmts = append(stmts, `DROP POLICY IF EXISTS `+name+` ON `+table,
			`CREATE POLICY `+name+` ON `+table+` `+rest)
	}
	for _, r := range roles {
		role := pgx.Identifier{r.Name}.Sanitize()
		switch r.Service {
		case Worker:
			policy(r, "read", `FOR SELECT TO `+role+` USING (true)`)
			policy(r, "stage", `FOR INSERT TO `+role+` WITH CHECK (status = '`+schemas.OutputStaged+`')`)
			policy(r, "set-aside", `FOR UPDATE TO `+role+` USING (status IN ('`+schemas.OutputStaged+`', '`+schemas.OutputAwaitingReview+`')) WITH CHECK (status = '`+schemas.OutputCancelled+`')`)
		case Orchestrator, Review:
			policy(r, "all", `FOR ALL TO `+role+` USING (true) WITH CHECK (true)`)
		default:
			return nil, fmt.Errorf("role %s: %q is not a service", r.Name, r.Service)
		}
	}
	return stmts, nil
}

// outboxPolicies turn on row-level security on outbox: every role reads,
// claims and deletes rows (its relay picks its subjects by itself); the
// orchestrator's inserts any row (its relay sends every subject); review's
// and a worker's only rows whose subject matches their relay's subjects
// (subjects, a regular expression by service), so neither can forge a
// task or a promotion for the orchestrator's relay to send.
func outboxPolicies(table string, roles []Role, subjects map[string]string) []string {
	stmts := []string{`ALTER TABLE ` + table + ` ENABLE ROW LEVEL SECURITY`}
	policy := func(role Role, suffix, rest string) {
		name := pgx.Identifier{"troupe_" + role.Name + "_outbox_" + suffix}.Sanitize()
		stmts = append(stmts, `DROP POLICY IF EXISTS `+name+` ON `+table,
			`CREATE POLICY `+name+` ON `+table+` `+rest)
	}
	for _, r := range roles {
		role := pgx.Identifier{r.Name}.Sanitize()
		if r.Service == Orchestrator {
			policy(r, "all", `FOR ALL TO `+role+` USING (true) WITH CHECK (true)`)
			continue
		}
		// subjectsRegexp let through no quote: the literal needs none.
		policy(r, "add", `FOR INSERT TO `+role+` WITH CHECK (subject ~ '`+subjects[r.Service]+`')`)
		policy(r, "read", `FOR SELECT TO `+role+` USING (true)`)
		policy(r, "claim", `FOR UPDATE TO `+role+` USING (true) WITH CHECK (true)`)
		policy(r, "sent", `FOR DELETE TO `+role+` USING (true)`)
	}
	return stmts
}
