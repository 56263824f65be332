package integration

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// TestBadInput: every bad submission gets an error reply that names the
// problem, nothing is stored or published, and the CLI prints the same
// message and exits non-zero.
func TestBadInput(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	js, err := jetstream.New(d.NC)
	require.NoError(t, err)

	cases := []struct {
		name string
		body string
		code string
		want string
	}{
		{"invalid JSON", `{"title": "x",`, "invalid_request", "invalid JSON"},
		{"missing title", `{"brief": "no title"}`, "invalid_request", "title"},
		{"unknown role", `{"title": "x", "tasks": [{"key": "a", "role": "wizard"}]}`, "invalid_request", `tasks[0].role`},
		{"dependency cycle", `{"title": "x", "tasks": [
			{"key": "a", "role": "pm", "depends_on": ["c"]},
			{"key": "b", "role": "architect", "depends_on": ["a"]},
			{"key": "c", "role": "developer", "depends_on": ["b"]}]}`, "dependency_cycle", "a → c → b → a"},
		{"unknown dependency", `{"title": "x", "tasks": [{"key": "a", "role": "pm", "depends_on": ["nope"]}]}`, "unknown_dependency", `tasks[0].depends_on[0]: no task has the key "nope"`},
		{"oversized brief", `{"title": "x", "brief": "` + strings.Repeat("b", 20001) + `"}`, "invalid_request", "brief"},
	}
	before := streamSeqs(t, js)
	for _, tc := range cases {
		_, er := d.request("jobs.submit", []byte(tc.body))
		require.NotNil(t, er, tc.name)
		require.Equal(t, tc.code, er.Code, tc.name)
		require.Contains(t, er.Error, tc.want, tc.name)

		// The CLI says the same and exits non-zero.
		file := d.Dir + "/" + strings.ReplaceAll(tc.name, " ", "_") + ".json"
		require.NoError(t, writeString(file, tc.body))
		_, stderr, code := d.cli("submit", file)
		require.Equal(t, 1, code, tc.name)
		if tc.name != "invalid JSON" { // the CLI reads the file itself and names it
			require.Contains(t, stderr, er.Error, tc.name)
		} else {
			require.Contains(t, stderr, "invalid JSON", tc.name)
		}
	}
	list := call[schemas.JobList](d, "jobs.list", schemas.ListRequest{})
	require.Empty(t, list.Jobs, "no job was stored")
	require.Equal(t, before, streamSeqs(t, js), "nothing was published")
}

// TestIdempotentSubmit: submitting twice with the same key makes one job.
func TestIdempotentSubmit(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	sub := schemas.Submission{Title: "Once", IdempotencyKey: "ticket-4711", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}}}
	first := call[schemas.Job](d, "jobs.submit", sub)
	second := call[schemas.Job](d, "jobs.submit", sub)
	require.Equal(t, first.ID, second.ID)
	stdout, stderr, code := d.cli("submit", "--title", "Once", "--idempotency-key", "ticket-4711", "--task", "prd:pm")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, first.ID)
	list := call[schemas.JobList](d, "jobs.list", schemas.ListRequest{})
	require.Len(t, list.Jobs, 1)

	// The same key for a different submission is a conflict, not a silent match.
	_, stderr, code = d.cli("submit", "--title", "Something else", "--idempotency-key", "ticket-4711")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `idempotency_key: "ticket-4711" was used for job `+first.ID)

	// A status that no job can have is an error, not an empty list.
	_, stderr, code = d.cli("jobs", "ls", "--status", "runing")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `status: "runing" is not a job status`)
}

func streamSeqs(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, name := range []string{"TROUPE_TASKS", "TROUPE_REVIEW", "TROUPE_EVENTS", "TROUPE_DLQ"} {
		s, err := js.Stream(context.Background(), name)
		require.NoError(t, err)
		info, err := s.Info(context.Background())
		require.NoError(t, err)
		out[name] = info.State.LastSeq
	}
	return out
}

// TestSubmitBatch: a batch is all or nothing: one invalid job means no job
// is stored or published, and the error names every wrong job by its
// index (by its line, from the CLI); a valid batch creates every job, each
// runs to the end, and resubmitting it creates only the jobs without an
// idempotency key.
func TestSubmitBatch(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	js, err := jetstream.New(d.NC)
	require.NoError(t, err)

	before := streamSeqs(t, js)
	_, er := d.request("jobs.submit_batch", []byte(`{"jobs": [
		{"title": "fine", "tasks": [{"key": "a", "role": "pm"}]},
		{"brief": "no title"},
		{"title": "cycle", "tasks": [{"key": "a", "role": "pm", "depends_on": ["a"]}]}]}`))
	require.NotNil(t, er)
	require.Equal(t, "invalid_request", er.Code)
	require.Contains(t, er.Error, "2 of 3 jobs are invalid, so none was submitted")
	require.Len(t, er.Jobs, 2)
	require.Equal(t, 1, er.Jobs[0].Index)
	require.Contains(t, er.Jobs[0].Error, "title: is required")
	require.Equal(t, 2, er.Jobs[1].Index)
	require.Contains(t, er.Jobs[1].Error, `task "a" depends on itself`)
	require.Empty(t, call[schemas.JobList](d, "jobs.list", schemas.ListRequest{}).Jobs, "no job was stored")
	require.Equal(t, before, streamSeqs(t, js), "nothing was published")

	// The CLI names the lines.
	bad := d.Dir + "/bad.jsonl"
	require.NoError(t, writeString(bad, "{\"title\": \"ok\"}\n\n{\"titel\": \"typo\"}\n"))
	_, stderr, code := d.cli("submit", "--batch", bad)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "bad.jsonl:3: titel: is not a known field (did you mean title?)")
	notJSON := d.Dir + "/not-json.jsonl"
	require.NoError(t, writeString(notJSON, "{\"title\": \"ok\"}\nnot json\n[1]\n"))
	_, stderr, code = d.cli("submit", "--batch", notJSON)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "not-json.jsonl:2: not a JSON object")
	require.Contains(t, stderr, "not-json.jsonl:3: not a JSON object", "every bad line is named")

	// A valid batch: every job is created and runs to the end.
	events := d.events("*.*")
	good := d.Dir + "/good.jsonl"
	var lines []string
	for i := range 20 {
		lines = append(lines, `{"title": "batch job `+string(rune('a'+i))+`", "tasks": [{"key": "prd", "role": "pm"}]}`)
	}
	lines = append(lines, `{"title": "keyed", "idempotency_key": "batch-1", "tasks": [{"key": "prd", "role": "pm"}]}`)
	require.NoError(t, writeString(good, strings.Join(lines, "\n")+"\n"))
	stdout, stderr, code := d.cli("submit", "--batch", good, "--json")
	require.Equal(t, 0, code, stderr)
	var reply schemas.SubmissionBatchReply
	require.NoError(t, json.Unmarshal([]byte(stdout), &reply))
	require.Equal(t, 21, reply.Created)
	require.Len(t, reply.Jobs, 21)
	for _, j := range reply.Jobs {
		require.True(t, j.Created)
		require.Equal(t, schemas.JobDone, d.waitJobEnd(events, j.ID).Status, j.Title)
	}
	stdout, stderr, code = d.cli("submit", "--batch", good)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "21 job(s) submitted, 20 created")
	require.Contains(t, stdout, reply.Jobs[20].ID+" done: keyed (existing: same idempotency key)")
}
