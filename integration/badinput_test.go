package integration

import (
	"context"
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
