package integration

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestBudgetOvershootIsOneCallPerRunningTask shows the bound a token
// budget keeps with parallel tasks: the check before a call counts the
// calls recorded so far, so tasks that run at once each make the call
// they were let through, and a job goes over by at most one call per task
// running at that moment. Three tasks run at once (the model answers none
// until all three asked) under a budget one call spends; the fourth, after
// them, never runs.
func TestBudgetOvershootIsOneCallPerRunningTask(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	var (
		mu       sync.Mutex
		asked    int
		allIn    = make(chan struct{})
		parallel = 3
	)
	srv.SetDefault(func(r llmtest.Request) llmtest.Reply {
		mu.Lock()
		asked++
		if asked == parallel {
			close(allIn)
		}
		mu.Unlock()
		<-allIn // every running task passed its check before any call is recorded
		return roleAnswer(r)
	})
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Parallel", Budget: &schemas.Budget{MaxTokens: 300}, Tasks: []schemas.PlanTask{
		{Key: "prd", Role: "pm"}, {Key: "design", Role: "architect"}, {Key: "notes", Role: "developer"},
		{Key: "tests", Role: "tester", DependsOn: []string{"prd", "design", "notes"}},
	}})
	ended := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobBudgetExceeded, ended.Status)
	require.Equal(t, parallel, ended.Totals.Calls, "one call for each task that ran at once, none after")
	require.Len(t, srv.Requests(), parallel)
	spent := ended.Totals.PromptTokens + ended.Totals.CompletionTokens
	require.Greater(t, spent, ended.Totals.BudgetTokens, "over the budget")
	for _, task := range ended.Tasks {
		if task.Key == "tests" {
			require.Equal(t, schemas.TaskCancelled, task.Status)
		}
	}
}
