package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
)

// defaultPlanJSON is a planner's answer: the six roles in the usual order.
const defaultPlanJSON = `{"tasks": [
  {"key": "prd", "role": "pm", "instructions": "Write the PRD."},
  {"key": "architecture", "role": "architect", "instructions": "Design it.", "depends_on": ["prd"]},
  {"key": "implementation", "role": "developer", "instructions": "Build it.", "depends_on": ["architecture"]},
  {"key": "tests", "role": "tester", "instructions": "Test it.", "depends_on": ["implementation"]},
  {"key": "docs", "role": "writer", "instructions": "Document it.", "depends_on": ["implementation"]},
  {"key": "deploy", "role": "devops", "instructions": "Ship it.", "depends_on": ["implementation"]}]}`

const fakeKey = "sk-troupe-test-5f1d0c9a7b3e42d8a6c1e0f9b2d4a7c3"

// roleAnswer answers a chat request as the role whose prompt it is would:
// its main file with the required headings (and a code file for the
// developer), in the documented file format.
func roleAnswer(r llmtest.Request) llmtest.Reply {
	system := r.Messages[0].Text
	if strings.HasPrefix(system, "You are the planner") {
		return llmtest.Reply{Content: defaultPlanJSON, PromptTokens: 100, CompletionTokens: 20}
	}
	role := "pm" // the shared format text names PRD.md as an example: check it last
	for _, c := range []struct{ file, role string }{
		{"ARCHITECTURE.md", "architect"}, {"NOTES.md", "developer"},
		{"TEST_PLAN.md", "tester"}, {"RUNBOOK.md", "devops"}, {"`README.md`", "writer"},
	} {
		if strings.Contains(system, c.file) {
			role = c.role
			break
		}
	}
	file, headings := review.RequiredSections(role)
	var b strings.Builder
	fmt.Fprintf(&b, "Wrote %s.\n=== FILE: %s ===\n# %s by the fake model\n\n", file, file, role)
	for _, h := range headings {
		fmt.Fprintf(&b, "%s\nSomething about it.\n\n", h)
	}
	b.WriteString("=== END FILE ===\n")
	if role == "developer" {
		b.WriteString("=== FILE: main.go ===\npackage main\n\nfunc main() {}\n=== END FILE ===\n")
	}
	return llmtest.Reply{Content: b.String(), PromptTokens: 300, CompletionTokens: 70}
}

func modelConfig(t *testing.T, srv *llmtest.Server, defaultModel string, extra string) string {
	return writeConfig(t, fmt.Sprintf(`{
  "models": {
    "default": %q,
    "providers": {
      "fake": {
        "baseUrl": %q, "apiKey": "${FAKE_API_KEY}", "api": "openai-completions",
        "models": [
          {"id": "vision", "name": "Vision", "input": ["text", "image"], "contextWindow": 65536, "maxTokens": 2048, "cost": {"input": 2, "output": 8}},
          {"id": "text", "name": "Text", "input": ["text"], "contextWindow": 32768, "maxTokens": 2048}
        ]
      }
    }
  }%s
}`, defaultModel, srv.URL(), extra))
}

func pngBase64(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 3200, 1800))))
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

// TestRealModelPipeline: a whole job on an OpenAI-compatible model (a fake
// server that checks every request as the API would): every role's output
// comes from the model and is promoted; the image attachment reaches it as
// an image part; the tokens recorded equal the usage the server returned;
// and the API key appears in no log, event, reply, stored row or export.
func TestRealModelPipeline(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	srv.SetDefault(roleAnswer)
	dir := t.TempDir()
	d := startDevIn(t, dir, []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/vision", ""), "--log-level", "debug")
	events := d.events("*.*")

	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{
		Title: "Rate limits with a diagram", Brief: "Add per-key limits.",
		Attachments: []schemas.Attachment{{Name: "arch.png", MediaType: "image/png", Data: pngBase64(t)}},
	})
	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)

	reqs := srv.Requests()
	require.Len(t, reqs, 7, "the planner, then one call per role")
	require.Contains(t, reqs[0].Messages[0].Text, "You are the planner")
	for _, r := range reqs[1:] {
		require.Equal(t, "vision", r.Model)
		require.Equal(t, 2048, r.MaxTokens)
		require.Len(t, r.Images, 1, "the attachment goes to the image-capable model")
		require.Equal(t, 1568, r.Images[0].Width, "scaled down from 3200×1800")
		require.Equal(t, 882, r.Images[0].Height)
	}
	prompt, completion := srv.Usage()
	require.EqualValues(t, prompt, done.Totals.PromptTokens)
	require.EqualValues(t, completion, done.Totals.CompletionTokens)
	require.Equal(t, 7, done.Totals.Calls)
	require.NotNil(t, done.Totals.Cost)
	require.InDelta(t, (float64(prompt)*2+float64(completion)*8)/1e6, *done.Totals.Cost, 1e-9)
	for _, task := range done.Tasks {
		require.Equal(t, "fake/vision", task.Outputs[0].Model)
	}

	// The key is nowhere: logs, events, replies, the database, exports.
	out := filepath.Join(t.TempDir(), "export")
	_, stderr, code := d.cli("workspace", "export", out)
	require.Equal(t, 0, code, stderr)
	stdout, _, _ := d.cli("jobs", "show", job.ID, "--json")
	cfgOut, _, _ := d.cli("config", "check", "--config", modelConfig(t, srv, "fake/vision", ""))
	var everything bytes.Buffer
	everything.WriteString(d.logs.String() + stdout + cfgOut)
	for _, ev := range events.all() {
		b, _ := json.Marshal(ev)
		everything.Write(b)
	}
	for _, task := range done.Tasks {
		for _, o := range task.Outputs {
			item := call[schemas.ReviewItem](d, "reviews.get", schemas.IDRequest{ID: o.ID})
			require.NotEmpty(t, item.Output.Prompt)
			b, _ := json.Marshal(item)
			everything.Write(b)
		}
	}
	require.NoError(t, filepath.Walk(filepath.Join(dir, "data"), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && info.Name() != "LOCK" {
			b, rerr := os.ReadFile(path)
			require.NoError(t, rerr)
			everything.Write(b)
		}
		return nil
	}))
	require.NoError(t, filepath.Walk(out, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(path)
			everything.Write(b)
		}
		return nil
	}))
	require.Greater(t, everything.Len(), 10000)
	require.NotContains(t, everything.String(), fakeKey)
	require.NotContains(t, everything.String(), fakeKey[len(fakeKey)-12:], "not even a part of it")
}

// TestImagesNeedAnImageModel: with only a text model, a job with an image
// fails with a clear error and no call is made.
func TestImagesNeedAnImageModel(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	srv.SetDefault(roleAnswer)
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{
		Title: "Diagram", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}},
		Attachments: []schemas.Attachment{{Name: "arch.png", MediaType: "image/png", Data: pngBase64(t)}},
	})
	failed := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobFailed, failed.Status)
	require.Contains(t, failed.Reason, `fake/text cannot read the task's 1 image attachment(s) (its input is ["text"])`)
	require.Empty(t, srv.Requests(), "no call was made")
}

// TestBudgetStopsJob: a job whose token budget is spent dispatches no
// further task and ends budget_exceeded with its totals, within one call
// of its limit.
func TestBudgetStopsJob(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	srv.SetDefault(roleAnswer) // 370 tokens a call
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Frugal", Budget: &schemas.Budget{MaxTokens: 800}})
	ended := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobBudgetExceeded, ended.Status)
	require.Contains(t, ended.Reason, "token budget spent")
	require.Equal(t, 3, ended.Totals.Calls, "the planner, pm and architect ran; the architect went over; nothing after")
	require.Len(t, srv.Requests(), 3)
	require.EqualValues(t, 800, ended.Totals.BudgetTokens)
	stdout, _, code := d.cli("jobs", "show", job.ID)
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "budget_exceeded")
	require.Contains(t, stdout, "700 prompt + 160 completion in 3 model call(s) (budget 800)")
}

// TestModelReviewPolicy: under the "model" policy a model reviews after the
// rules: its rejection with feedback leads to a revision that gets the
// feedback; its lessons reach MEMORY and later prompts; the skill document
// it proposes is promoted to skills/<name>/SKILL.md.
func TestModelReviewPolicy(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	var reviews int
	var mu sync.Mutex
	srv.SetDefault(func(r llmtest.Request) llmtest.Reply {
		if !strings.HasPrefix(r.Messages[0].Text, "You are the reviewer") {
			return roleAnswer(r)
		}
		mu.Lock()
		defer mu.Unlock()
		reviews++
		if reviews == 1 {
			return llmtest.Reply{Content: "```json\n" + `{"decision": "reject", "quality": "Misses bursts.", "errors": ["no burst handling"],
				"feedback": "Handle bursts explicitly.", "lessons": [{"text": "Always document burst limits.", "scope": "developer"}]}` + "\n```"}
		}
		return llmtest.Reply{Content: `{"decision": "promote", "quality": "Good now.", "lessons": [{"text": "Name every limit in the API docs.", "scope": "all"}],
			"skill": {"name": "rate-limits", "content": "# Rate limits\n\nToken buckets per key."},
			"impact": [{"role": "tester", "note": "Test the burst path."}]}`}
	})
	cfg := modelConfig(t, srv, "fake/text", `, "roles": {"developer": {"review": "model"}}`)
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", cfg)
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Limiter", Tasks: []schemas.PlanTask{
		{Key: "prd", Role: "pm"}, {Key: "impl", Role: "developer", Instructions: "Build the limiter.", DependsOn: []string{"prd"}},
	}})
	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	impl := done.Tasks[1]
	require.Equal(t, 1, impl.Revision)
	require.Len(t, impl.Reviews, 2)
	require.Equal(t, "reject", impl.Reviews[0].Decision)
	require.Equal(t, "model:fake/text", impl.Reviews[0].Reviewer)
	require.Equal(t, "Handle bursts explicitly.", impl.Reviews[0].Feedback)
	require.Equal(t, "promote", impl.Reviews[1].Decision)

	// The revision's prompt carried the feedback.
	var devPrompts []string
	for _, r := range srv.Requests() {
		if strings.Contains(r.Messages[0].Text, "NOTES.md") && len(r.Messages) > 1 {
			devPrompts = append(devPrompts, r.Messages[1].Text)
		}
	}
	require.Len(t, devPrompts, 2)
	require.NotContains(t, devPrompts[0], "Handle bursts explicitly.")
	require.Contains(t, devPrompts[1], "Handle bursts explicitly.")

	stdout, _, code := d.cli("memory", "ls")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "Always document burst limits.")
	require.Contains(t, stdout, "Name every limit in the API docs.")
	skill := call[schemas.Artifact](d, "artifacts.get", schemas.ArtifactGetRequest{Path: "skills/rate-limits/SKILL.md"})
	require.Contains(t, skill.Content, "Token buckets per key.")

	// A later developer task has the lessons in its prompt.
	later := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Second limiter", Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer", Instructions: "Build a limiter for bursts."}}})
	require.Equal(t, schemas.JobDone, d.waitJobEnd(events, later.ID).Status)
	reqs := srv.Requests()
	var last llmtest.Request
	for _, r := range reqs {
		if strings.Contains(r.Messages[0].Text, "NOTES.md") {
			last = r
		}
	}
	require.Contains(t, last.Messages[0].Text, "Always document burst limits.")
}

// TestPlanner: a job without tasks is planned by the model into a DAG that
// runs; a plan that is invalid twice falls back to the default plan, and
// the job's timeline says why.
func TestPlanner(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	var mu sync.Mutex
	plans := []string{
		`{"tasks": [{"key": "spec", "role": "pm", "instructions": "Specify the CLI."},
		            {"key": "code", "role": "developer", "instructions": "Write the CLI.", "depends_on": ["spec"]}]}`,
		`{"tasks": [{"key": "a", "role": "pm", "depends_on": ["b"]}, {"key": "b", "role": "pm", "depends_on": ["a"]}]}`,
		`Sure! Here is the plan: first the PM, then...`,
		"503",
	}
	srv.SetDefault(func(r llmtest.Request) llmtest.Reply {
		if !strings.HasPrefix(r.Messages[0].Text, "You are the planner") {
			return roleAnswer(r)
		}
		mu.Lock()
		defer mu.Unlock()
		p := plans[0]
		plans = plans[1:]
		if p == "503" {
			return llmtest.Reply{Status: 503}
		}
		return llmtest.Reply{Content: p}
	})
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")

	planned := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "A CLI", Brief: "A small CLI."})
	require.Equal(t, schemas.JobPlanning, planned.Status)
	done := d.waitJobEnd(events, planned.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	var keys []string
	for _, task := range done.Tasks {
		keys = append(keys, task.Key+":"+task.Role)
	}
	require.Equal(t, []string{"spec:pm", "code:developer"}, keys)

	fallback := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Another", Brief: "Anything."})
	done = d.waitJobEnd(events, fallback.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	require.Len(t, done.Tasks, 6, "the default plan")
	var why string
	for _, ev := range done.Events {
		if ev.Kind == schemas.EventJobPlanned {
			why = ev.Message
		}
	}
	require.Contains(t, why, "the default plan: the planner's plan could not be used twice")
	require.Contains(t, why, "no JSON object")

	// A planner that cannot be reached: the default plan at once, saying so.
	away := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "While the planner is away"})
	done = d.waitJobEnd(events, away.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	stdout, _, code := d.cli("jobs", "show", away.ID)
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "job_planned: the default plan: the planner could not be reached")
}

// TestUnreadableAnswerIsRejectedWithTheReason: an answer that is not in
// the file format, twice (the repair request too), is staged with the
// parse error; review rejects it with that reason and the revision's
// prompt carries it.
func TestUnreadableAnswerIsRejectedWithTheReason(t *testing.T) {
	t.Parallel()
	srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	srv.Enqueue(llmtest.Reply{Content: "Here is my PRD, in prose."}, llmtest.Reply{Content: "Sorry, still prose."})
	srv.SetDefault(roleAnswer)
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Prose", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}}})
	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	prd := done.Tasks[0]
	require.Equal(t, 1, prd.Revision)
	require.Equal(t, "reject", prd.Reviews[0].Decision)
	require.Contains(t, prd.Reviews[0].Feedback, "answer_format: the answer holds no file")
	reqs := srv.Requests()
	require.Len(t, reqs, 3, "the call, its repair, the revision")
	require.Contains(t, reqs[2].Messages[1].Text, "answer_format: the answer holds no file")
}
