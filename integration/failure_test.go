package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// TestRejectedPastMaxRevisionsFailsJob: with review.maxRevisions 0, one
// rejection fails the task and its job with the reason; `troupe submit
// --wait` reports it and exits 1.
func TestRejectedPastMaxRevisionsFailsJob(t *testing.T) {
	forEachStore(t, func(t *testing.T, storeArgs []string) {
		cfg := filepath.Join(t.TempDir(), "troupe.json")
		require.NoError(t, os.WriteFile(cfg, []byte(`{"roles": {"developer": {"review": "human"}}, "review": {"maxRevisions": 0}}`), 0o644))
		d := startDev(t, append(storeArgs, "--config", cfg)...)
		events := d.events("*.*")

		// submit --wait runs while a person rejects.
		wait := exec.Command(troupeBin(t), "submit", "--wait", "--title", "Doomed",
			"--task", "prd:pm:Write it.", "--task", "impl:developer:Build it.:prd", "--task", "docs:writer:Document it.:impl")
		wait.Env = append(os.Environ(), "TROUPE_NATS_URL="+d.URL, "TROUPE_CONFIG=")
		var out bytes.Buffer
		wait.Stdout, wait.Stderr = &out, &out
		require.NoError(t, wait.Start())

		parked := waitEvent(t, events, func(ev schemas.Event) bool { return ev.Kind == schemas.EventOutputAwaitingReview })
		_, stderr, code := d.cli("reviews", "reject", parked.OutputID, "--feedback", "Wrong algorithm entirely.")
		require.Equal(t, 0, code, stderr)

		err := wait.Wait()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "submit --wait exits non-zero: %s", out.String())
		require.Equal(t, 1, ee.ExitCode())
		require.Contains(t, out.String(), "failed: task impl (developer) failed")
		require.Contains(t, out.String(), "Wrong algorithm entirely.")

		job := call[schemas.Job](d, "jobs.get", schemas.IDRequest{ID: parked.JobID})
		require.Equal(t, schemas.JobFailed, job.Status)
		statuses := map[string]string{}
		for _, task := range job.Tasks {
			statuses[task.Key] = task.Status
		}
		require.Equal(t, map[string]string{"prd": "promoted", "impl": "failed", "docs": "cancelled"}, statuses)
	})
}

// TestCancel: a cancelled job's waiting output leaves the review queue and
// can no longer be promoted; a finished job cannot be cancelled.
func TestCancel(t *testing.T) {
	forEachStore(t, func(t *testing.T, storeArgs []string) {
		cfg := filepath.Join(t.TempDir(), "troupe.json")
		require.NoError(t, os.WriteFile(cfg, []byte(`{"roles": {"developer": {"review": "human"}}}`), 0o644))
		d := startDev(t, append(storeArgs, "--config", cfg)...)
		events := d.events("*.*")

		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Cancel me", Tasks: []schemas.PlanTask{
			{Key: "impl", Role: "developer"}, {Key: "docs", Role: "writer", DependsOn: []string{"impl"}},
		}})
		parked := waitEvent(t, events, func(ev schemas.Event) bool {
			return ev.JobID == job.ID && ev.Kind == schemas.EventOutputAwaitingReview
		})
		stdout, stderr, code := d.cli("jobs", "cancel", job.ID)
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "cancelled")

		queue := call[schemas.ReviewList](d, "reviews.list", schemas.ListRequest{})
		require.Empty(t, queue.Items, "the cancelled job's output left the queue")
		_, stderr, code = d.cli("reviews", "approve", parked.OutputID)
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "is cancelled; only an output awaiting review can be decided")

		got := call[schemas.Job](d, "jobs.get", schemas.IDRequest{ID: job.ID})
		require.Equal(t, schemas.JobCancelled, got.Status)
		for _, task := range got.Tasks {
			require.Equal(t, schemas.TaskCancelled, task.Status, task.Key)
		}
		arts := call[schemas.ArtifactList](d, "artifacts.list", schemas.ArtifactListRequest{JobID: job.ID})
		require.Empty(t, arts.Artifacts, "nothing of a cancelled job was promoted")

		_, stderr, code = d.cli("jobs", "cancel", job.ID)
		require.Equal(t, 1, code)
		require.Contains(t, stderr, "is cancelled already")
	})
}
