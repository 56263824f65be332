package integration

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestConfiguredKeyInOutputIsRejectedAndMasked: an output that holds the
// configured provider key itself is rejected though no rule knows its
// shape (a self-hosted provider's key, no prefix, in prose), the feedback
// says where and what without the key, and jobs.get and reviews show mask
// it, and a key in a path.
func TestConfiguredKeyInOutputIsRejectedAndMasked(t *testing.T) {
	t.Parallel()
	key := "Tq7Rb2Xw9Lm4" + "Zp8Kd3vN" // built from parts: no literal key in the file
	srv := llmtest.New(t, key, llmtest.Model{ID: "vision", Images: true, MaxTokens: 2048}, llmtest.Model{ID: "text", MaxTokens: 2048})
	aws := "AKIA" + "Q3EGRJ5XK2M7PLZW"
	srv.Enqueue(llmtest.Reply{Content: "Wrote PRD.md for " + key + ".\n=== FILE: PRD.md ===\n# PRD\n\n## Goals\nCall the model with " + key +
		".\n\n## Users\nOperators.\n\n## Requirements\n1. Limits.\n=== END FILE ===\n=== FILE: notes/" + aws + ".md ===\nx\n=== END FILE ===\n"})
	srv.SetDefault(roleAnswer)
	d := startDevIn(t, t.TempDir(), []string{"FAKE_API_KEY=" + key}, "--config", modelConfig(t, srv, "fake/text", ""))
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Keys", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}}})
	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	prd := done.Tasks[0]
	require.Equal(t, 1, prd.Revision)
	require.Equal(t, "reject", prd.Reviews[0].Decision)
	require.Contains(t, prd.Reviews[0].Feedback, "PRD.md line 4: looks like a secret (configured-secret)")
	require.NotContains(t, prd.Reviews[0].Feedback, key)

	// jobs.get shows the rejected output's summary and paths masked.
	var rejected string
	for _, o := range prd.Outputs {
		if o.Revision == 0 {
			rejected = o.ID
			require.Equal(t, "Wrote PRD.md for [secret: configured-secret].", o.Content)
			require.Equal(t, "notes/[secret: aws-access-token].md", o.Files[1].Path)
		}
	}
	stdout, stderr, code := d.cli("reviews", "show", rejected)
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, stdout, key)
	require.NotContains(t, stdout, aws)
	require.Contains(t, stdout, "Call the model with [secret: configured-secret].")
	require.Contains(t, stdout, "check FAIL no_secrets content line 1: looks like a secret (configured-secret); PRD.md line 4: looks like a secret (configured-secret)")
}
