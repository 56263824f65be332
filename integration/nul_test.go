package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestNULRefused, on SQLite and PostgreSQL (whose text cannot hold a NUL
// character, so a NUL once meant a 500 there and a stored job here): a
// NUL in a title, brief, instructions or feedback is refused with an error
// naming the field (by the API and by the dashboard's pages), and nothing
// is stored or published; a model answer
// with a NUL in its summary and in a file is staged, rejected by review
// with the reason (never promoted), and the revision is promoted.
func TestNULRefused(t *testing.T) {
	forEachStore(t, func(t *testing.T, storeArgs []string) {
		srv := llmtest.New(t, fakeKey, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
		srv.Enqueue(llmtest.Reply{Content: "Wrote\x00 the PRD.\n=== FILE: PRD.md ===\n# PRD\n\n## Goals\ng\n\n## Users\nu\n\n## Requirements\nr\x00\n=== END FILE ===\n"})
		srv.SetDefault(roleAnswer)
		d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + fakeKey}, append(storeArgs, "--config", modelConfig(t, srv, "fake/text", ""))...)
		js, err := jetstream.New(d.NC)
		require.NoError(t, err)

		before := streamSeqs(t, js)
		for _, tc := range []struct{ endpoint, body, want string }{
			{"jobs.submit", `{"title": "a\u0000b"}`, `title: contains a NUL character (\u0000), not allowed in text`},
			{"jobs.submit", `{"title": "x", "brief": "\u0000"}`, `brief: contains a NUL character`},
			{"jobs.submit", `{"title": "x", "tasks": [{"key": "a", "role": "pm", "instructions": "go\u0000"}]}`, `tasks[0].instructions: contains a NUL character`},
			{"jobs.submit_batch", `{"jobs": [{"title": "x\u0000"}]}`, `jobs[0].title: contains a NUL character`},
			{"reviews.decide", `{"output_id": "0b3c5c8e-8f5a-4c3e-9d7e-2a1b3c4d5e6f", "decision": "reject", "feedback": "no\u0000"}`, `feedback: contains a NUL character`},
			{"jobs.list", `{"query": "x\u0000"}`, `query: contains a NUL character`},
		} {
			_, er := d.request(tc.endpoint, []byte(tc.body))
			require.NotNil(t, er, tc.body)
			require.Equal(t, "invalid_request", er.Code, tc.body)
			require.Contains(t, er.Error, tc.want, tc.body)
		}
		// The dashboard's pages read the store: their queries are refused alike.
		for _, path := range []string{"/jobs?q=a%00b", "/memory?q=%00", "/deadletters?q=%00", "/jobs/x%00y"} {
			resp, err := http.Get(d.Web + path)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s: %s", path, body)
			require.Contains(t, string(body), `contains a NUL character (\u0000), not allowed in text`, path)
		}
		require.Empty(t, call[schemas.JobList](d, "jobs.list", schemas.ListRequest{}).Jobs, "no job was stored")
		require.Equal(t, before, streamSeqs(t, js), "nothing was published")

		events := d.events("*.*")
		job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "NUL in the answer", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}}})
		done := d.waitJobEnd(events, job.ID)
		require.Equal(t, schemas.JobDone, done.Status, done.Reason)
		prd := done.Tasks[0]
		require.Equal(t, 1, prd.Revision, "the answer with NUL was rejected, the revision promoted")
		require.Equal(t, "reject", prd.Reviews[0].Decision)
		require.Contains(t, prd.Reviews[0].Feedback, "answer_format: the answer's summary has a NUL character (U+0000) at byte 5")
		require.Contains(t, prd.Reviews[0].Feedback, `no_nul: file "PRD.md": content has a NUL character (U+0000)`)
		arts := call[schemas.ArtifactList](d, "artifacts.list", schemas.ArtifactListRequest{JobID: job.ID})
		require.Len(t, arts.Artifacts, 1)
		art := call[schemas.Artifact](d, "artifacts.get", schemas.ArtifactGetRequest{Path: arts.Artifacts[0].Path})
		require.False(t, strings.ContainsRune(art.Content, 0), "what was promoted is the revision")
	})
}
