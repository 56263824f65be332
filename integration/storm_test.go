package integration

import (
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestRateLimitStorm: the provider answers every call 429 with
// Retry-After 5 s for ten minutes (in CI), then normally. Fifty jobs submitted at
// the start of the storm are delayed, not failed: a worker holds a task
// through the provider's refusals without spending its deliveries (a nak
// per 429 used to dead-letter each task after MaxDeliver, 10, refusals),
// and the task says until when it waits. Every job ends done; nothing is
// dead-lettered.
//
// The storm lasts TROUPE_TEST_STORM (a Go duration): .ci/run sets "10m",
// the storm, and the README's test command allows for it with
// -timeout 30m. Unset, it lasts 2 minutes: 24 refusals 5 s apart for a
// task, more than its 10 deliveries (a worker that spent a delivery a 429
// failed all 50 jobs in it), and a plain go test ./... stays within go
// test's default timeout.
// Skipped with -short.
func TestRateLimitStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a rate-limit storm of minutes; runs without -short")
	}
	storm := 2 * time.Minute
	if v := os.Getenv("TROUPE_TEST_STORM"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "TROUPE_TEST_STORM")
		storm = d
	}
	t.Parallel()
	const jobs = 50
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "text", MaxTokens: 2048})
	var stormEnd atomic.Int64
	stormEnd.Store(time.Now().Add(24 * time.Hour).UnixNano()) // set at the first submission
	var refused, answered atomic.Int64
	srv.SetDefault(func(r llmtest.Request) llmtest.Reply {
		if time.Now().UnixNano() < stormEnd.Load() {
			refused.Add(1)
			return llmtest.Reply{Status: 429, RetryAfter: "5"}
		}
		answered.Add(1)
		return roleAnswer(r)
	})
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")

	stormEnd.Store(time.Now().Add(storm).UnixNano())
	started := time.Now()
	ids := make([]string, 0, jobs)
	for range jobs {
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Through the storm", Tasks: []schemas.PlanTask{
			{Key: "prd", Role: "pm", Instructions: "Write the PRD."},
			{Key: "impl", Role: "developer", Instructions: "Build it.", DependsOn: []string{"prd"}},
		}})
		ids = append(ids, job.ID)
	}

	// While the storm lasts, the tasks held say whom they wait for.
	waiting, show := "", ""
	for deadline := time.Now().Add(time.Minute); waiting == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, id := range ids[:8] {
			job := call[schemas.Job](d, "jobs.get", schemas.IDRequest{ID: id})
			for _, task := range job.Tasks {
				if task.Key == "prd" && strings.HasPrefix(task.Reason, "waiting for the provider until ") {
					waiting = id
				}
			}
		}
	}
	if waiting != "" {
		out, stderr, code := d.cli("jobs", "show", waiting)
		require.Equal(t, 0, code, stderr)
		show = out
	}

	ended := waitJobsEnd(t, events, ids, storm+10*time.Minute)
	took := time.Since(started)

	ends := map[string]int{}
	tasks, deliveries, most := 0, 0, 0
	for _, id := range ids {
		job := call[schemas.Job](d, "jobs.get", schemas.IDRequest{ID: id})
		ends[job.Status]++
		for _, task := range job.Tasks {
			tasks++
			deliveries += task.Attempts
			most = max(most, task.Attempts)
		}
	}
	dead := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{Limit: 500})
	report(t, "rate-limit storm of %s (every call 429, Retry-After 5 s), then normal answers: jobs submitted %d = done %d + failed %d + other %d; "+
		"tasks %d, deliveries spent %d (at most %d for one task); dead letters %d; provider calls refused %d, answered %d; last job ended %s after the first submission",
		storm, len(ids), ends[schemas.JobDone], ends[schemas.JobFailed], len(ids)-ends[schemas.JobDone]-ends[schemas.JobFailed],
		tasks, deliveries, most, len(dead.DeadLetters), refused.Load(), answered.Load(), took.Round(time.Second))
	require.NotEmpty(t, waiting, "no task said it waited for the provider")
	require.Contains(t, show, "prd: waiting for the provider until ")
	require.Equal(t, len(ids), ended)
	require.Equal(t, jobs, ends[schemas.JobDone], "every job done: %v", ends)
	require.Empty(t, dead.DeadLetters, "nothing dead-lettered")
	require.Positive(t, refused.Load())
}

// waitJobsEnd waits, up to within, until every job of ids has ended, and
// returns how many did.
func waitJobsEnd(t *testing.T, l *eventLog, ids []string, within time.Duration) int {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	timeout := time.After(within)
	for {
		ended := map[string]bool{}
		for _, ev := range l.all() {
			if want[ev.JobID] && (ev.Kind == schemas.EventJobDone || ev.Kind == schemas.EventJobFailed ||
				ev.Kind == schemas.EventJobCancelled || ev.Kind == schemas.EventJobBudgetExceeded) {
				ended[ev.JobID] = true
			}
		}
		if len(ended) == len(ids) {
			return len(ended)
		}
		select {
		case <-l.added:
		case <-timeout:
			t.Fatalf("%d of %d jobs ended within %s", len(ended), len(ids), within)
		}
	}
}

// TestReviewerRateLimitSpendsNoDelivery: a model reviewer refused with 429
// more times than a review request may be delivered (MaxDeliver, 10) still
// reviews the output: the review service holds the request through the
// refusals instead of nacking it each time, which dead-lettered it.
func TestReviewerRateLimitSpendsNoDelivery(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "text", MaxTokens: 2048})
	const refusals = 12
	var reviews atomic.Int64
	srv.SetDefault(func(r llmtest.Request) llmtest.Reply {
		if !strings.HasPrefix(r.Messages[0].Text, "You are the reviewer") {
			return roleAnswer(r)
		}
		if reviews.Add(1) <= refusals {
			return llmtest.Reply{Status: 429, RetryAfter: "0.2"}
		}
		return llmtest.Reply{Content: `{"decision": "promote", "quality": "Good."}`}
	})
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey},
		"--config", modelConfig(t, srv, "fake/text", `, "roles": {"pm": {"review": "model"}}`))
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Reviewed through a storm", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}}})
	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	require.Equal(t, "model:fake/text", done.Tasks[0].Reviews[0].Reviewer)
	require.EqualValues(t, refusals+1, reviews.Load())
	dead := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{})
	require.Empty(t, dead.DeadLetters)
}
