package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// TestHumanReview: a role under the human policy has its output rejected
// with feedback from the CLI; the revision carries that feedback; approval
// with a lesson completes the job; the lesson is in MEMORY.md and in the
// prompt of a later task of that role.
func TestHumanReview(t *testing.T) {
	forEachStore(t, func(t *testing.T, storeArgs []string) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "troupe.json")
		require.NoError(t, os.WriteFile(cfg, []byte(`{"roles": {"developer": {"review": "human"}}}`), 0o644))
		d := startDev(t, append(storeArgs, "--config", cfg)...)
		events := d.events("*.*")

		plan := []schemas.PlanTask{
			{Key: "prd", Role: "pm", Instructions: "Write the PRD for the limiter."},
			{Key: "impl", Role: "developer", Instructions: "Build the token bucket limiter.", DependsOn: []string{"prd"}},
		}
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Token bucket", Tasks: plan})

		parked := waitEvent(t, events, func(ev schemas.Event) bool {
			return ev.JobID == job.ID && ev.Kind == schemas.EventOutputAwaitingReview
		})
		require.Equal(t, 0, parked.Revision)

		// The queue, from the CLI.
		stdout, stderr, code := d.cli("reviews", "ls", "--json")
		require.Equal(t, 0, code, stderr)
		var queue schemas.ReviewList
		require.NoError(t, json.Unmarshal([]byte(stdout), &queue))
		require.Len(t, queue.Items, 1)
		require.Equal(t, parked.OutputID, queue.Items[0].Output.ID)
		require.Equal(t, "developer", queue.Items[0].Output.Role)

		// Rejecting needs feedback.
		_, stderr, code = d.cli("reviews", "reject", parked.OutputID)
		require.NotEqual(t, 0, code)
		require.Contains(t, stderr, "--feedback is required")

		feedback := "Handle the burst parameter and explain the refill rate."
		stdout, stderr, code = d.cli("reviews", "reject", parked.OutputID, "--feedback", feedback, "--reviewer", "ada")
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "rejected by human:ada")

		// The revision arrives, carrying the feedback.
		rev1 := waitEvent(t, events, func(ev schemas.Event) bool {
			return ev.JobID == job.ID && ev.Kind == schemas.EventOutputAwaitingReview && ev.Revision == 1
		})
		item := call[schemas.ReviewItem](d, "reviews.get", schemas.IDRequest{ID: rev1.OutputID})
		require.Equal(t, 1, item.Output.Revision)
		require.NotNil(t, item.Previous, "the revision shows the draft it replaces")
		require.Equal(t, parked.OutputID, item.Previous.ID)
		require.Contains(t, allText(item.Output), feedback)
		require.NotContains(t, allText(*item.Previous), feedback)
		require.Contains(t, item.Output.Prompt, feedback)

		// Deciding twice is refused.
		_, stderr, code = d.cli("reviews", "approve", parked.OutputID)
		require.NotEqual(t, 0, code)
		require.Contains(t, stderr, "only an output awaiting review can be decided")

		lesson := "Every limiter must document its burst and refill parameters."
		// No --scope: the lesson is scoped to the output's role.
		stdout, stderr, code = d.cli("reviews", "approve", rev1.OutputID, "--lesson", lesson, "--reviewer", "ada")
		require.Equal(t, 0, code, stderr)
		require.Contains(t, stdout, "1 lesson(s) added to MEMORY")

		done := d.waitJobEnd(events, job.ID)
		require.Equal(t, schemas.JobDone, done.Status, done.Reason)
		var impl schemas.Task
		for _, task := range done.Tasks {
			if task.Key == "impl" {
				impl = task
			}
		}
		require.Equal(t, 1, impl.Revision)
		require.Len(t, impl.Reviews, 2)
		require.Equal(t, "reject", impl.Reviews[0].Decision)
		require.Equal(t, "human:ada", impl.Reviews[0].Reviewer)
		require.Equal(t, feedback, impl.Reviews[0].Feedback)
		require.Equal(t, "promote", impl.Reviews[1].Decision)

		// MEMORY.md holds the lesson.
		memDir := filepath.Join(d.Dir, "memory-export")
		_, stderr, code = d.cli("memory", "export", memDir)
		require.Equal(t, 0, code, stderr)
		memory, err := os.ReadFile(filepath.Join(memDir, "MEMORY.md"))
		require.NoError(t, err)
		require.Contains(t, string(memory), lesson)
		daily, err := filepath.Glob(filepath.Join(memDir, "memory", "*.md"))
		require.NoError(t, err)
		require.Len(t, daily, 1)

		stdout, _, code = d.cli("memory", "ls", "--role", "developer")
		require.Equal(t, 0, code)
		require.Contains(t, stdout, lesson)

		// A later developer task gets the lesson in its prompt.
		later := call[schemas.Job](d, "jobs.submit", schemas.Submission{
			Title: "Second limiter", Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer", Instructions: "Build a sliding window limiter."}},
		})
		next := waitEvent(t, events, func(ev schemas.Event) bool {
			return ev.JobID == later.ID && ev.Kind == schemas.EventOutputAwaitingReview
		})
		nextItem := call[schemas.ReviewItem](d, "reviews.get", schemas.IDRequest{ID: next.OutputID})
		require.Contains(t, nextItem.Output.Prompt, lesson)
		require.Contains(t, allText(nextItem.Output), lesson, "the offline draft lists the lessons it applied")
		// A lesson scoped to the developer does not reach other roles.
		for _, task := range done.Tasks {
			if task.Role == "pm" {
				pm := call[schemas.ReviewItem](d, "reviews.get", schemas.IDRequest{ID: task.Outputs[0].ID})
				require.Contains(t, allText(pm.Output), "Token bucket", "the full output, not a summary")
				require.NotContains(t, pm.Output.Prompt, lesson)
			}
		}
	})
}

func allText(o schemas.Output) string {
	var b strings.Builder
	b.WriteString(o.Content)
	for _, f := range o.Files {
		b.WriteString("\n" + f.Content)
	}
	return b.String()
}
