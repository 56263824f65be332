package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
	"github.com/troupe-dev/troupe/store/storetest"
)

func TestStore(t *testing.T) {
	t.Parallel()
	postgrestest.NewTestStore(t) // skips the whole suite at once when there is no server
	storetest.Exercise(t, func(t *testing.T) store.Store { return postgrestest.NewTestStore(t) })
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := postgrestest.TestURL(t)

	s, err := postgres.Open(ctx, url)
	require.NoError(t, err)
	_, err = s.DB().ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`)
	require.NoError(t, err)
	err = s.Migrate(ctx)
	require.ErrorIs(t, err, store.ErrSchemaTooNew)
	require.ErrorContains(t, err, "9999")
	require.ErrorContains(t, err, "up to 4")
	require.NoError(t, s.Close())

	_, err = postgres.Open(ctx, url)
	require.ErrorIs(t, err, store.ErrSchemaTooNew)
	require.ErrorContains(t, err, "9999")
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := postgrestest.TestURL(t) // migrated; drop what it made to start over
	s, err := postgres.Open(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	_, err = s.DB().ExecContext(ctx, `DO $$ DECLARE r record; BEGIN
		FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP
			EXECUTE 'DROP TABLE ' || quote_ident(r.tablename) || ' CASCADE';
		END LOOP; END $$`)
	require.NoError(t, err)

	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			s, err := postgres.Open(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			<-start
			errs[i] = s.Migrate(ctx)
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	var versions int
	require.NoError(t, s.DB().QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&versions))
	require.Equal(t, 4, versions)
	_, err = s.JobGetByID(ctx, "x")
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestMigrateUpgradesFromVersion1(t *testing.T) {
	t.Parallel()
	url := postgrestest.TestURL(t) // migrated; drop what it made to start over
	initSQL, err := os.ReadFile("migrations/0001_init.sql")
	require.NoError(t, err)
	storetest.UpgradeFromV1(t, func() storetest.Upgradable {
		s, err := postgres.Open(context.Background(), url)
		require.NoError(t, err)
		return s
	}, []string{
		`DO $$ DECLARE r record; BEGIN
			FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP
				EXECUTE 'DROP TABLE ' || quote_ident(r.tablename) || ' CASCADE';
			END LOOP; END $$`,
		`CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`,
		string(initSQL),
		`INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)`,
	}, `SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()
		AND indexname IN ('jobs_status_updated_at', 'tasks_job_id_role', 'outputs_role_status',
			'model_calls_job_id_created_at', 'model_calls_job_id') ORDER BY indexname COLLATE "C"`)
}

func TestOpenRejectsBadURL(t *testing.T) {
	t.Parallel()
	_, err := postgres.Open(context.Background(), "postgres://user:secret@host:notaport/db")
	require.Error(t, err)
	require.NotContains(t, err.Error(), "secret")
}

// A transaction whose connection the server ends before it commits runs
// again on another connection, and commits once.
func TestTransactionRunsAgainOnALostConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := postgrestest.TestURL(t)
	app := "lost-" + uuid.NewString()[:8]
	named := url + "&application_name=" + app
	if !strings.Contains(url, "://") {
		named = url + " application_name=" + app // a key=value DSN
	}
	s, err := postgres.Open(ctx, named)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	admin, err := sql.Open("pgx", url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })

	// endConnections ends the store's connections and waits until their
	// backends are gone.
	endConnections := func() {
		_, err := admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			var n int
			err := admin.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n)
			return err == nil && n == 0
		}, 10*time.Second, 10*time.Millisecond)
	}

	attempts := 0
	var jobID string
	err = s.InTx(ctx, func(q store.Querier) error {
		attempts++
		job, _, err := q.JobCreate(ctx, store.JobCreateParams{
			Job:   store.Job{Title: "lost", IdempotencyKey: "lost", Status: schemas.JobPlanning},
			Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
		})
		if err != nil {
			return err
		}
		jobID = job.ID
		if attempts == 1 {
			endConnections()
		}
		_, err = q.TaskListByJob(ctx, job.ID)
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 2, attempts)
	jobs, err := s.JobList(ctx, store.JobListParams{})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	require.Equal(t, jobID, jobs[0].ID)
	tasks, err := s.TaskListByJob(ctx, jobID)
	require.NoError(t, err)
	require.Len(t, tasks, 1)

	// A transaction that fails on its own is not run again.
	attempts = 0
	err = s.InTx(ctx, func(q store.Querier) error {
		attempts++
		return q.ReviewInsert(ctx, store.Review{OutputID: "no-such-output", JobID: jobID, Decision: "promote"})
	})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, 1, attempts)
}

// pipelineStore opens a store on its own schema, and a connection of its
// own to the same schema beside it.
func pipelineStore(t *testing.T) (*postgres.Store, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	url := postgrestest.TestURL(t)
	s, err := postgres.Open(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	other, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close(context.Background()) })
	return s, other
}

// A transaction that goes on after one of its statements failed does not
// commit: PostgreSQL has rolled it back, and says so only with COMMIT.
func TestTransactionThatWentOnAfterAnErrorDoesNotCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := pipelineStore(t)
	direct := &store.OutboxDirect{Owner: "relay", Lease: time.Minute}
	var handed []store.OutboxMessage
	direct.Committed = func(rows []store.OutboxMessage) { handed = append(handed, rows...) }
	s.SetOutboxDirect(direct)

	err := s.InTx(ctx, func(q store.Querier) error {
		job, _, err := q.JobCreate(ctx, store.JobCreateParams{
			Job:   store.Job{Title: "swallowed", Status: schemas.JobPlanning},
			Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
		})
		if err != nil {
			return err
		}
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "s", Payload: []byte("p")}}); err != nil {
			return err
		}
		if err := q.ReviewInsert(ctx, store.Review{OutputID: "no-such-output", JobID: job.ID, Decision: "promote"}); err != nil {
			return err
		}
		_, err = q.JobGetByID(ctx, job.ID) // fails with the review's error; swallowed
		require.ErrorIs(t, err, store.ErrNotFound)
		return nil
	})
	require.Error(t, err)
	require.Empty(t, handed)
	jobs, err := s.JobList(ctx, store.JobListParams{})
	require.NoError(t, err)
	require.Empty(t, jobs)
	msgs, err := s.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, msgs)
}

// runningJob creates a running job without tasks.
func runningJob(t *testing.T, s *postgres.Store) store.Job {
	t.Helper()
	job, _, err := s.JobCreate(context.Background(), store.JobCreateParams{Job: store.Job{Title: "j", Status: schemas.JobRunning}})
	require.NoError(t, err)
	return job
}

// holdEventID makes another transaction insert event id e1 and keep it
// open until the test ends: the store's insert of the same id waits.
func holdEventID(t *testing.T, other *pgx.Conn, jobID string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := other.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO events (id, job_id, kind, occurred_at) VALUES ('e1', $1, 'k', 0)`, jobID)
	require.NoError(t, err)
	return tx
}

// finishWithEvent is the transaction of the tests below: it moves the
// running job to done (a statement sent at once) and inserts event e1 (a
// write held back until COMMIT).
func finishWithEvent(ctx context.Context, q store.Querier, jobID string) error {
	moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: jobID, From: []string{schemas.JobRunning}, To: schemas.JobDone})
	if err != nil || !moved {
		return fmt.Errorf("moving job: %v %w", moved, err)
	}
	return q.EventInsert(ctx, []store.Event{{ID: "e1", JobID: jobID, Kind: "k"}})
}

// requireNotCommitted checks that the transaction of the tests below,
// which moved the job to done and inserted event e1, left nothing.
func requireNotCommitted(t *testing.T, s *postgres.Store, jobID string) {
	t.Helper()
	ctx := context.Background()
	got, err := s.JobGetByID(ctx, jobID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobRunning, got.Status, "a transaction its caller was told failed must not commit")
	events, err := s.EventListByJob(ctx, jobID)
	require.NoError(t, err)
	require.Empty(t, events)
	// The pool still works.
	_, _, err = s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "after", Status: schemas.JobRunning}})
	require.NoError(t, err)
}

// A transaction whose context ends while its last writes and COMMIT are on
// the way either commits and says so, or does not commit: here its held
// write waits for a lock, and is cancelled, so nothing is kept.
func TestTransactionCancelledAtCommitDoesNotCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, other := pipelineStore(t)
	job := runningJob(t, s)
	otherTx := holdEventID(t, other, job.ID)

	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := s.InTx(tctx, func(q store.Querier) error {
		if err := finishWithEvent(tctx, q, job.ID); err != nil {
			return err
		}
		time.AfterFunc(300*time.Millisecond, cancel) // while the commit waits
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "committing transaction")
	require.NoError(t, otherTx.Rollback(ctx))
	requireNotCommitted(t, s, job.ID)
}

// A commit that waits past its patience asks the server to cancel, and
// is then told the outcome: here, not committed.
func TestTransactionWaitingLongAtCommitIsCancelled(t *testing.T) {
	ctx := context.Background()
	defer postgres.SetCommitPatience(300 * time.Millisecond)()
	s, other := pipelineStore(t)
	job := runningJob(t, s)
	otherTx := holdEventID(t, other, job.ID)

	err := s.InTx(ctx, func(q store.Querier) error {
		return finishWithEvent(ctx, q, job.ID)
	})
	require.ErrorContains(t, err, "committing transaction")
	require.ErrorContains(t, err, "canceling statement")
	require.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's context did not end")
	require.NoError(t, otherTx.Rollback(ctx))
	requireNotCommitted(t, s, job.ID)
}

// A statement that fails before it reaches the server (its context is
// done) may take the transaction's BEGIN or held writes with it, or never
// get a connection: nothing more runs, and the transaction does not
// commit, though fn went on.
func TestTransactionWhoseRoundTripFailedDoesNotCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := pipelineStore(t)
	job := runningJob(t, s)
	done, cancel := context.WithCancel(ctx)
	cancel()

	err := s.InTx(ctx, func(q store.Querier) error {
		if err := finishWithEvent(ctx, q, job.ID); err != nil {
			return err
		}
		_, err := q.JobGetByID(done, job.ID) // fails before it is sent, with the event
		require.Error(t, err)
		return nil // and fn goes on regardless
	})
	require.ErrorContains(t, err, "earlier statement")
	requireNotCommitted(t, s, job.ID)

	// Nor does a statement after such a failure run outside the
	// transaction, before BEGIN.
	err = s.InTx(ctx, func(q store.Querier) error {
		_, err := q.JobGetByID(done, job.ID)
		require.Error(t, err)
		_, err = q.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobRunning}, To: schemas.JobDone})
		require.Error(t, err)
		return nil
	})
	require.Error(t, err)
	requireNotCommitted(t, s, job.ID)

	// Nor do writes held back before a statement whose connection never
	// came: the transaction is not one that only writes.
	err = s.InTx(ctx, func(q store.Querier) error {
		if err := q.LessonInsert(ctx, []store.Lesson{{ID: "held", Text: "t", Scope: "all"}}); err != nil {
			return err
		}
		_, err := q.JobGetByID(done, "x") // fails; swallowed
		require.Error(t, err)
		return nil
	})
	require.ErrorContains(t, err, "an earlier statement of it failed")
	lessons, err := s.LessonList(ctx, store.LessonListParams{})
	require.NoError(t, err)
	require.Empty(t, lessons)
}

// A transaction whose statement timed out on a context of its caller's
// own is not run again, though the timeout closed its connection.
func TestTransactionTimedOutIsNotRunAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, other := pipelineStore(t)
	job := runningJob(t, s)
	// Hold the lock of the artifact's path, as a writer of it would.
	_, err := other.Exec(ctx, `SELECT pg_advisory_lock(hashtextextended(coalesce(current_schema(), '') || '.' || $1, 0))`,
		"troupe.artifact:a.md")
	require.NoError(t, err)

	attempts := 0
	err = s.InTx(ctx, func(q store.Querier) error {
		attempts++
		actx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := q.ArtifactInsert(actx, store.Artifact{Path: "a.md", JobID: job.ID})
		return err
	})
	require.Error(t, err)
	require.Equal(t, 1, attempts)
}

// pool_max_conns in the connection string sizes the pool, and is not sent
// to the server (which would refuse it as an unknown parameter).
func TestPoolMaxConns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := postgrestest.TestURL(t)
	with := func(v string) string {
		if strings.Contains(url, "://") {
			return url + "&pool_max_conns=" + v
		}
		return url + " pool_max_conns=" + v
	}
	s, err := postgres.Open(ctx, with("3"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	require.Equal(t, 3, s.DB().Stats().MaxOpenConnections)
	_, _, err = s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "j", Status: schemas.JobRunning}})
	require.NoError(t, err)

	for _, bad := range []string{"0", "many"} {
		_, err := postgres.Open(ctx, with(bad))
		require.ErrorContains(t, err, "pool_max_conns")
	}
}
