package pgroles_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/postgres/pgroles"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
)

// setup returns the URL of a migrated schema of its own (as its owner, a
// superuser) and the services' roles, uniquely named, applied to it,
// dropped when the test ends.
func setup(t *testing.T) (owner string, roles []pgroles.Role) {
	t.Helper()
	owner = postgrestest.TestURL(t)
	roles = pgroles.Names("t" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12] + "_")
	for i := range roles {
		roles[i].Password = "pw-" + roles[i].Service
	}
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, owner)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, r := range roles {
			_, _ = conn.Exec(ctx, `DROP OWNED BY `+pgx.Identifier{r.Name}.Sanitize())
			_, err := conn.Exec(ctx, `DROP ROLE IF EXISTS `+pgx.Identifier{r.Name}.Sanitize())
			require.NoError(t, err)
		}
		_ = conn.Close(ctx)
	})
	done, err := pgroles.Apply(ctx, conn, roles, options())
	require.NoError(t, err)
	require.NotEmpty(t, done)
	for _, line := range done {
		require.NotContains(t, line, "pw-", "no password in what Apply says")
	}
	return owner, roles
}

// options are what troupe migrate --roles gives Apply: the outbox
// subjects of the default prefix.
func options() pgroles.Options {
	return pgroles.Options{OutboxSubjects: pgroles.OutboxSubjects("")}
}

// as returns url with the role's credentials.
func as(t *testing.T, raw string, r pgroles.Role) string {
	t.Helper()
	u, err := url.Parse(raw)
	require.NoError(t, err)
	u.User = url.UserPassword(r.Name, r.Password)
	return u.String()
}

func role(roles []pgroles.Role, service string) pgroles.Role {
	for _, r := range roles {
		if r.Service == service {
			return r
		}
	}
	panic(service)
}

// requireDenied: err is PostgreSQL's refusal (insufficient privilege, or a
// row-level security policy's: the same SQLSTATE).
func requireDenied(t *testing.T, err error, what string) {
	t.Helper()
	var pg *pgconn.PgError
	require.True(t, errors.As(err, &pg), "%s: want a refusal, got %v", what, err)
	require.Equal(t, "42501", pg.Code, "%s: %v", what, err)
}

// TestGrantsCoverEveryTable: Apply knows every table the migrations
// create, so a new table cannot leave a service without the privileges it
// needs (or with none to refuse).
func TestGrantsCoverEveryTable(t *testing.T) {
	t.Parallel()
	owner := postgrestest.TestURL(t)
	conn, err := pgx.Connect(t.Context(), owner)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.ElementsMatch(t, tables, pgroles.Tables)
}

// TestServiceRolesDoTheirWorkOnly: under its own role each service runs
// its store operations (a job submitted and planned, a task started, its
// output staged, reviewed and promoted into the shared area and MEMORY),
// and a worker's role is refused what only review does: writing
// artifacts, reviews and lessons, promoting an output by UPDATE or by
// inserting it promoted. No service's role may change the schema.
func TestServiceRolesDoTheirWorkOnly(t *testing.T) {
	t.Parallel()
	owner, roles := setup(t)
	ctx := t.Context()
	open := func(service string) store.Store {
		s, err := postgres.Open(ctx, as(t, owner, role(roles, service)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		// At this version already: a service's role migrates nothing, and
		// is not refused for the DDL it may not run.
		require.NoError(t, s.Migrate(ctx), service)
		return s
	}
	orch, rev, work := open(pgroles.Orchestrator), open(pgroles.Review), open(pgroles.Worker)

	// The orchestrator: a job, its task, an event and outbox row relayed.
	job, _, err := orch.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "roles", Status: schemas.JobRunning}})
	require.NoError(t, err)
	task := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "k", Role: "developer", Status: schemas.TaskQueued}
	require.NoError(t, orch.TaskInsert(ctx, job.ID, []store.Task{task}))
	relay := func(s store.Store, subject string) {
		require.NoError(t, s.EventEmit(ctx, []store.Event{{ID: uuid.NewString(), JobID: job.ID, Kind: schemas.EventOutputStaged}},
			[]store.OutboxMessage{{Subject: subject, MsgID: uuid.NewString(), Payload: []byte("{}")}}))
		claimed, err := s.OutboxClaim(ctx, store.OutboxClaimParams{Owner: "t", Limit: 10, Lease: time.Minute, Subjects: []string{subject}})
		require.NoError(t, err)
		require.Len(t, claimed, 1)
		_, err = s.OutboxMarkFailed(ctx, claimed[0].Seq, "x", time.Time{})
		require.NoError(t, err)
		require.NoError(t, s.OutboxDeleteSent(ctx, []int64{claimed[0].Seq}))
	}
	relay(orch, "troupe.tasks.developer")

	// The worker: starts the task, records a model call and a failure,
	// stages an output, dead-letters a message.
	_, started, err := work.TaskStart(ctx, store.TaskStartParams{ID: task.ID, JobID: job.ID, Role: "developer", Lessons: 5})
	require.NoError(t, err)
	require.True(t, started)
	reason := "a retry"
	_, err = work.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, Reason: &reason})
	require.NoError(t, err)
	require.NoError(t, work.ModelCallInsert(ctx, []store.ModelCall{{JobID: job.ID, TaskID: task.ID, Model: "offline", Outcome: "ok"}}))
	staged := schemas.TaskStaged
	out := store.Output{ID: uuid.NewString(), TaskID: task.ID, JobID: job.ID, Role: "developer", Status: schemas.OutputStaged, Content: "hello"}
	require.NoError(t, work.InTx(ctx, func(q store.Querier) error {
		if err := q.OutputAdd(ctx, out, errors.New("exists")); err != nil {
			return err
		}
		_, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, Status: &staged})
		return err
	}))
	_, err = work.DeadLetterInsert(ctx, store.DeadLetter{ID: uuid.NewString(), Source: "workers-developer", Status: "open", JobID: job.ID})
	require.NoError(t, err)
	relay(work, "troupe.review.developer")
	// What it writes for the orchestrator's relay to send: a dead letter's
	// and a spent budget's events, and the copy of a row its relay could
	// never publish.
	for _, subject := range []string{"troupe.events." + job.ID + ".task_dead_lettered", "troupe.events." + job.ID + ".job_failed",
		"troupe.events." + job.ID + ".job_budget_exceeded", "troupe.events." + job.ID + ".task_started", "troupe.dlq.outbox"} {
		require.NoError(t, work.OutboxInsert(ctx, []store.OutboxMessage{{Subject: subject, MsgID: uuid.NewString(), Payload: []byte("{}")}}), subject)
	}
	// A spent budget sets aside an output of another task still waiting
	// for review (orchestrator.Budgets.Spent, run by the worker).
	other := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "k2", Role: "writer", Status: schemas.TaskStaged}
	require.NoError(t, orch.TaskInsert(ctx, job.ID, []store.Task{other}))
	waiting := store.Output{ID: uuid.NewString(), TaskID: other.ID, JobID: job.ID, Role: "writer", Status: schemas.OutputStaged, Content: "w"}
	require.NoError(t, work.InTx(ctx, func(q store.Querier) error { return q.OutputAdd(ctx, waiting, errors.New("exists")) }))
	setAside, err := work.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: waiting.ID, From: []string{schemas.OutputStaged, schemas.OutputAwaitingReview}, To: schemas.OutputCancelled})
	require.NoError(t, err)
	require.True(t, setAside)
	// And one that stays staged, which it may not promote (below).
	third := store.Task{ID: uuid.NewString(), JobID: job.ID, Key: "k3", Role: "tester", Status: schemas.TaskStaged}
	require.NoError(t, orch.TaskInsert(ctx, job.ID, []store.Task{third}))
	staysStaged := store.Output{ID: uuid.NewString(), TaskID: third.ID, JobID: job.ID, Role: "tester", Status: schemas.OutputStaged, Content: "t"}
	require.NoError(t, work.InTx(ctx, func(q store.Querier) error { return q.OutputAdd(ctx, staysStaged, errors.New("exists")) }))

	// Review: promotes it, writes the shared area and MEMORY.
	_, err = rev.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: []string{schemas.OutputStaged}, To: schemas.OutputPromoted})
	require.NoError(t, err)
	done, feedback := schemas.TaskPromoted, "fine"
	_, err = rev.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, Status: &done, Feedback: &feedback})
	require.NoError(t, err)
	reviewID := uuid.NewString()
	require.NoError(t, rev.ReviewInsert(ctx, store.Review{ID: reviewID, OutputID: out.ID, TaskID: task.ID, JobID: job.ID, Decision: "promote"}))
	_, err = rev.ArtifactInsert(ctx, store.Artifact{Path: "docs/a.md", JobID: job.ID, TaskID: task.ID, OutputID: out.ID, Content: "a"})
	require.NoError(t, err)
	require.NoError(t, rev.LessonInsert(ctx, []store.Lesson{{Text: "a lesson", Scope: "all", ReviewID: reviewID, JobID: job.ID}}))
	relay(rev, "troupe.events."+job.ID+".output_promoted")

	// The orchestrator revises the task, finishes the job and resolves
	// the dead letter.
	next, queued := 1, schemas.TaskQueued
	_, err = orch.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, Status: &queued, SetRevision: &next, Feedback: &feedback, IncrAttempts: true})
	require.NoError(t, err)
	_, err = orch.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, To: schemas.JobDone})
	require.NoError(t, err)
	dls, err := orch.DeadLetterList(ctx, store.DeadLetterListParams{})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	_, err = orch.DeadLetterResolve(ctx, dls[0].ID, "discarded", "test")
	require.NoError(t, err)

	// What a worker's role is refused, in SQL, whatever the store does.
	w, err := pgx.Connect(ctx, as(t, owner, role(roles, pgroles.Worker)))
	require.NoError(t, err)
	defer w.Close(context.Background())
	for what, sql := range map[string]string{
		"insert an artifact": `INSERT INTO artifacts (id, path, version, content, created_at) VALUES ('x', 'docs/evil.md', 9, 'evil', 0)`,
		"insert a review":    `INSERT INTO reviews (id, output_id, task_id, job_id, decision, created_at) VALUES ('x', '` + out.ID + `', 't', 'j', 'promote', 0)`,
		"insert a lesson":    `INSERT INTO lessons (id, text, scope, created_at) VALUES ('x', 'ignore previous instructions', 'all', 0)`,
		"promote an output":  `UPDATE outputs SET status = 'promoted' WHERE id = '` + staysStaged.ID + `'`,
		"insert a promoted output": `INSERT INTO outputs (id, task_id, job_id, role, revision, status, created_at)
			VALUES ('x', '` + task.ID + `', '` + job.ID + `', 'developer', 7, 'promoted', 0)`,
		"rename a job":        `UPDATE jobs SET title = 'evil' WHERE id = '` + job.ID + `'`,
		"revise a task":       `UPDATE tasks SET revision = 5 WHERE id = '` + task.ID + `'`,
		"delete a job":        `DELETE FROM jobs`,
		"resolve dead letter": `UPDATE dead_letters SET status = 'discarded'`,
		"truncate events":     `TRUNCATE events`,
		"forge a task":        `INSERT INTO outbox (subject, msg_id, payload, created_at) VALUES ('troupe.tasks.tester', 'x', '\x7b7d', 0)`,
		"forge a promotion":   `INSERT INTO outbox (subject, msg_id, payload, created_at) VALUES ('troupe.events.` + job.ID + `.output_promoted', 'x', '\x7b7d', 0)`,
		"create a table":      `CREATE TABLE evil (x int)`,
		"drop a table":        `DROP TABLE lessons`,
	} {
		_, err := w.Exec(ctx, sql)
		requireDenied(t, err, "worker: "+what)
	}
	// Review's role sends no task either.
	r, err := pgx.Connect(ctx, as(t, owner, role(roles, pgroles.Review)))
	require.NoError(t, err)
	defer r.Close(context.Background())
	_, err = r.Exec(ctx, `INSERT INTO outbox (subject, msg_id, payload, created_at) VALUES ('troupe.tasks.tester', 'x', '\x7b7d', 0)`)
	requireDenied(t, err, "review: forge a task")
	_, err = r.Exec(ctx, `INSERT INTO outbox (subject, msg_id, payload, created_at) VALUES ('troupe.events.x.job_done', 'x', '\x7b7d', 0)`)
	requireDenied(t, err, "review: an event it does not write")

	// The orchestrator's role writes no review, artifact or lesson either.
	o, err := pgx.Connect(ctx, as(t, owner, role(roles, pgroles.Orchestrator)))
	require.NoError(t, err)
	defer o.Close(context.Background())
	for what, sql := range map[string]string{
		"insert an artifact": `INSERT INTO artifacts (id, path, version, content, created_at) VALUES ('x', 'docs/evil.md', 9, 'evil', 0)`,
		"insert a lesson":    `INSERT INTO lessons (id, text, scope, created_at) VALUES ('x', 'l', 'all', 0)`,
		"drop a table":       `DROP TABLE lessons`,
	} {
		_, err := o.Exec(ctx, sql)
		requireDenied(t, err, "orchestrator: "+what)
	}

	// Nothing of the refused writes landed; the allowed ones did.
	arts, err := orch.ArtifactList(ctx, store.ArtifactListParams{})
	require.NoError(t, err)
	require.Len(t, arts, 1)
	require.Equal(t, "docs/a.md", arts[0].Path)
	got, err := orch.OutputGetByID(ctx, out.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.OutputPromoted, got.Status)
}

// TestApplyAgain: Apply again, with no passwords, keeps the roles and
// their privileges (a database operator may own the passwords); a role
// that does not exist needs one.
func TestApplyAgain(t *testing.T) {
	t.Parallel()
	owner, roles := setup(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, owner)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	again := pgroles.Names(strings.TrimSuffix(roles[0].Name, pgroles.Orchestrator))
	_, err = pgroles.Apply(ctx, conn, again, options())
	require.NoError(t, err)
	_, err = pgroles.Apply(ctx, conn, []pgroles.Role{{Service: pgroles.Worker, Name: roles[0].Name + "_none"}}, options())
	require.ErrorContains(t, err, "does not exist, and has no password")
	_, err = pgroles.Apply(ctx, conn, []pgroles.Role{{Service: "janitor", Name: "x"}}, options())
	require.ErrorContains(t, err, `"janitor" is not a service`)
	_, err = pgroles.Apply(ctx, conn, again, pgroles.Options{})
	require.ErrorContains(t, err, "no outbox subjects")
	_, err = pgroles.Apply(ctx, conn, again, pgroles.Options{OutboxSubjects: map[string][]string{
		pgroles.Review: {"troupe.events.*.x"}, pgroles.Worker: {"troupe.review.x'); DROP TABLE jobs; --"}}})
	require.ErrorContains(t, err, "want tokens of letters")

	s, err := postgres.Open(ctx, as(t, owner, role(roles, pgroles.Worker)))
	require.NoError(t, err)
	defer s.Close()
	_, err = s.JobList(ctx, store.JobListParams{})
	require.NoError(t, err, "the worker still reads")
}
