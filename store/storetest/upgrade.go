package storetest

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Upgradable is a store whose database a test can reach under it.
type Upgradable interface {
	store.Store
	DB() *sql.DB
}

// UpgradeFromV1 checks that a database as a troupe that knew only
// 0001_init.sql left it (setup: the statements that make it, run through
// the store open returns) is migrated to versions 1 to 4, gains the
// indexes of 0002 (indexQuery lists them by name, in order, among the
// five it names), loses the outbox rows it had sent (0003) and keeps its
// other rows.
func UpgradeFromV1(t *testing.T, open func() Upgradable, setup []string, indexQuery string) {
	t.Helper()
	ctx := context.Background()
	s := open()
	for _, stmt := range setup {
		_, err := s.DB().ExecContext(ctx, stmt)
		require.NoError(t, err)
	}
	job, _, err := s.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "from v1", Status: schemas.JobDone},
		Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskPromoted}},
	})
	require.NoError(t, err)
	require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{{JobID: job.ID, Role: "pm", Model: "m", Outcome: "ok"}}))
	// Outbox rows as such a troupe left them: one sent (and kept), one not.
	require.NoError(t, s.OutboxInsert(ctx, []store.OutboxMessage{
		{Subject: "troupe.events.x.job_done", MsgID: "sent", Payload: []byte(`{}`)},
		{Subject: "troupe.events.x.job_done", MsgID: "unsent", Payload: []byte(`{}`)},
	}))
	_, err = s.DB().ExecContext(ctx, `UPDATE outbox SET sent_at = 1 WHERE msg_id = 'sent'`)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	// This troupe opens it, migrates it, and keeps its rows.
	s = open()
	t.Cleanup(func() { _ = s.Close() })
	require.NoError(t, s.Migrate(ctx))
	require.Equal(t, []string{"1", "2", "3", "4"}, column(t, s.DB(), `SELECT version FROM schema_migrations ORDER BY version`))
	// 0003: the sent rows are gone, the unsent one is still to publish.
	require.Equal(t, []string{"unsent"}, column(t, s.DB(), `SELECT msg_id FROM outbox`))
	require.Equal(t, []string{"jobs_status_updated_at", "model_calls_job_id_created_at", "outputs_role_status",
		"tasks_job_id_role"}, column(t, s.DB(), indexQuery))

	got, err := s.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, job, got)
	jobs, err := s.JobList(ctx, store.JobListParams{Role: "pm"})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	calls, err := s.ModelCallListByJob(ctx, job.ID)
	require.NoError(t, err)
	require.Len(t, calls, 1)
	buckets, err := s.JobsFinished(ctx, job.UpdatedAt, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1, buckets[0].Done)
}

// column reads the first column of every row of a query, as text.
func column(t *testing.T, db *sql.DB, query string) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), query)
	require.NoError(t, err)
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		require.NoError(t, rows.Scan(&v))
		out = append(out, v)
	}
	require.NoError(t, rows.Err())
	return out
}
