package dashboard

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// TestPagesMaskSecrets: the review page and the job page show a rejected
// output with every secret masked, in contents and paths, the configured ones
// too, and the checks say where and what.
func TestPagesMaskSecrets(t *testing.T) {
	t.Parallel()
	// Built from parts so this file holds no secret-looking literal.
	configured := "sk-" + "Tq7Rb2Xw9Lm4Zp8Kd"
	aws := "AKIA" + "Q3EGRJ5XK2M7PLZW"
	stripe := "sk_" + "live_" + "51HqLyjWDarjtT1zdp7dcXYZabc"
	f := setup(t, Config{Limits: review.Limits{Secrets: []string{configured}}}, services{})
	out := f.stage(t, "Limiter", "devops", "Deployed with "+configured+".", []schemas.File{
		{Path: "RUNBOOK.md", Content: "# Runbook\n\n## Deploy\n\nSet STRIPE=" + stripe + "\n\n## Rollback\n\nRedeploy.\n"},
		{Path: "keys/" + aws + ".env", Content: "KEY=" + configured + "\n"},
	})
	// Rejected, as an output with a secret is.
	moved, err := f.store.OutputSetStatus(context.Background(), store.OutputSetStatusParams{
		ID: out.ID, From: []string{schemas.OutputAwaitingReview}, To: schemas.OutputRejected,
	})
	require.NoError(t, err)
	require.True(t, moved)
	b := f.browser(t)
	for _, page := range []string{"/reviews/" + out.ID, "/jobs/" + out.JobID} {
		p := b.page(page)
		for _, secret := range []string{configured, aws, stripe} {
			require.NotContains(t, p.body, secret, page)
		}
		require.Contains(t, p.body, "keys/[secret: aws-access-token].env", page)
	}
	p := b.page("/reviews/" + out.ID)
	doc := parseHTML(t, p.body)
	require.Contains(t, text(byID(doc, "output-content")), "Deployed with [secret: configured-secret].")
	require.Contains(t, p.body, "[secret: stripe-access-token]")
	require.Contains(t, text(doc), "keys/[secret: aws-access-token].env line 1: looks like a secret (configured-secret")
}
