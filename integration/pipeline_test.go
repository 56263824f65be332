package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
)

// TestPipelineSQLite is the whole pipeline on troupe dev's default store.
func TestPipelineSQLite(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	t.Logf("troupe dev ready after %s (fresh directory, process start to accepting submissions)", d.Ready)
	runDefaultPlan(t, d)
}

// TestPipelinePostgres is the same pipeline with PostgreSQL as the store.
func TestPipelinePostgres(t *testing.T) {
	t.Parallel()
	d := startDev(t, "--database-url", testPGURL(t))
	runDefaultPlan(t, d)
}

// runDefaultPlan submits a job with no plan as plain JSON over NATS and
// checks that every role's output is promoted in dependency order, the job
// is done, and the promoted files are in the workspace export.
func runDefaultPlan(t *testing.T, d *dev) {
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", map[string]any{
		"title": "Per-key rate limiting", "brief": "Add per-API-key limits with clear 429s.",
	})
	require.Equal(t, schemas.JobRunning, job.Status)
	require.Len(t, job.Tasks, 6)

	submitted := job
	job = d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, job.Status, "reason: %s", job.Reason)

	// The reply to the submission is the job as stored: what did not
	// change since reads back the same.
	require.Equal(t, job.ID, submitted.ID)
	require.Equal(t, job.Title, submitted.Title)
	require.Equal(t, job.Brief, submitted.Brief)
	require.True(t, job.CreatedAt.Equal(submitted.CreatedAt), "created_at %v, replied %v", job.CreatedAt, submitted.CreatedAt)
	require.Len(t, submitted.Tasks, len(job.Tasks))
	for i, st := range submitted.Tasks {
		got := job.Tasks[i]
		require.Equal(t, []any{got.ID, got.JobID, got.Key, got.Role, got.Instructions, got.DependsOn},
			[]any{st.ID, st.JobID, st.Key, st.Role, st.Instructions, st.DependsOn}, "task %d", i)
		require.True(t, got.CreatedAt.Equal(st.CreatedAt), "task %s created_at %v, replied %v", st.Key, got.CreatedAt, st.CreatedAt)
		require.Contains(t, []string{schemas.TaskQueued, schemas.TaskPending}, st.Status)
	}

	// Promotion order follows the dependencies.
	promotedAt := map[string]int{}
	keyOf := map[string]string{}
	for _, task := range job.Tasks {
		keyOf[task.ID] = task.Key
		require.Equal(t, schemas.TaskPromoted, task.Status, task.Key)
		require.NotEmpty(t, task.Outputs, task.Key)
	}
	for i, ev := range job.Events {
		if ev.Kind == schemas.EventOutputPromoted {
			promotedAt[keyOf[ev.TaskID]] = i
		}
	}
	roles := map[string]bool{}
	for _, task := range job.Tasks {
		roles[task.Role] = true
		at, ok := promotedAt[task.Key]
		require.True(t, ok, "no promotion event for %s", task.Key)
		for _, dep := range task.DependsOn {
			require.Less(t, promotedAt[dep], at, "%s promoted before its dependency %s", task.Key, dep)
		}
	}
	require.Len(t, roles, len(schemas.Roles), "every role took part")

	out := filepath.Join(d.Dir, "export")
	stdout, stderr, code := d.cli("workspace", "export", out)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "exported")
	for _, f := range []string{"pm/PRD.md", "architect/ARCHITECTURE.md", "developer/main.go", "tester/TEST_PLAN.md", "writer/README.md", "devops/RUNBOOK.md"} {
		data, err := os.ReadFile(filepath.Join(out, "projects", job.ID, f))
		require.NoError(t, err, f)
		require.Contains(t, string(data), "Per-key rate limiting", f)
	}
	// The architect read the PM's promoted PRD: its draft names it.
	arch, err := os.ReadFile(filepath.Join(out, "projects", job.ID, "architect/ARCHITECTURE.md"))
	require.NoError(t, err)
	require.Contains(t, string(arch), "projects/"+job.ID+"/pm/PRD.md")
	_, err = os.Stat(filepath.Join(out, "MEMORY.md"))
	require.NoError(t, err)
	require.True(t, strings.Count(stdout, "file") > 0)
}

// forEachStore runs test on troupe dev's default store, SQLite, and on
// PostgreSQL (whose transactions are pipelined), in parallel subtests;
// storeArgs are troupe dev's arguments for the store.
func forEachStore(t *testing.T, test func(t *testing.T, storeArgs []string)) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		test(t, nil)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, []string{"--database-url", testPGURL(t)})
	})
}

// testPGURL is the URL of a test schema for Troupe's processes, with a
// small pool: the integration tests run beside the store tests on one
// server and share its max_connections (100 by default).
func testPGURL(t *testing.T) string {
	url := postgrestest.TestURL(t)
	if strings.Contains(url, "://") {
		return url + "&pool_max_conns=5"
	}
	return url + " pool_max_conns=5"
}
