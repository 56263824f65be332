package review

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// fixture is a running review service over a fresh SQLite store and an
// embedded NATS server with Troupe's topology.
type fixture struct {
	svc     *Service
	st      store.Store
	js      jetstream.JetStream
	subj    bus.Subjects
	decided chan struct{} // a signal per transaction that wrote outbox rows
	request func(endpoint string, req, out any) error
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	log := zerolog.New(zerolog.NewTestWriter(t))
	nc, js, err := bus.Connect(srv.ClientURL(), "review-test", log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	require.NoError(t, bus.Topology{Roles: schemas.Roles}.Ensure(ctx, js))
	st := sqlite.NewTestStore(t)
	f := &fixture{st: st, js: js, subj: bus.Subjects{Prefix: bus.DefaultPrefix}, decided: make(chan struct{}, 1000)}
	cfg.Logger = log
	cfg.Notify = func() { f.decided <- struct{}{} }
	f.svc = NewService(cfg, st, nc, js)
	require.NoError(t, f.svc.Start(ctx))
	t.Cleanup(func() { _ = f.svc.Stop(context.Background()) })
	f.request = func(endpoint string, req, out any) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return bus.Request(ctx, nc, f.subj.API(endpoint), req, out)
	}
	return f
}

// stage stores a running job whose one task of role has a staged output,
// and asks review to review it.
func (f *fixture) stage(t *testing.T, role string, files []schemas.File) store.Output {
	t.Helper()
	ctx := context.Background()
	job, _, err := f.st.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "Limiter", Status: schemas.JobRunning},
		Tasks: []store.Task{{Key: role, Role: role, Instructions: "Do the " + role + " part.", Status: schemas.TaskStaged}},
	})
	require.NoError(t, err)
	tasks, err := f.st.TaskListByJob(ctx, job.ID)
	require.NoError(t, err)
	out, created, err := f.st.OutputStage(ctx, store.Output{
		TaskID: tasks[0].ID, JobID: job.ID, Role: role, Status: schemas.OutputStaged,
		Content: "Wrote the files.", Files: files, Model: "test/model",
	})
	require.NoError(t, err)
	require.True(t, created)
	data, err := json.Marshal(schemas.ReviewRequest{OutputID: out.ID, TaskID: out.TaskID, JobID: out.JobID, Role: role})
	require.NoError(t, err)
	_, err = f.js.Publish(ctx, f.subj.Review(role), data)
	require.NoError(t, err)
	return out
}

// wait waits for n decisions (or parkings) and returns each output as it
// is now.
func (f *fixture) wait(t *testing.T, outs ...store.Output) []store.Output {
	t.Helper()
	for range outs {
		<-f.decided
	}
	now := make([]store.Output, len(outs))
	for i, o := range outs {
		var err error
		now[i], err = f.st.OutputGetByID(context.Background(), o.ID)
		require.NoError(t, err)
	}
	return now
}

func (f *fixture) reviews(t *testing.T, outputID string) []store.Review {
	t.Helper()
	rs, err := f.st.ReviewListByOutput(context.Background(), outputID)
	require.NoError(t, err)
	return rs
}

// TestServiceRejectsEveryForm: an output with any form of secret, in a
// file or in a file's path, is rejected by the rules, and the feedback the
// next revision gets names where and what, never the secret.
func TestServiceRejectsEveryForm(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Limits: Limits{Secrets: []string{configuredKey}}})
	var outs []store.Output
	var secrets []string
	for _, form := range secretForms {
		outs = append(outs, f.stage(t, "pm", append(goodFiles(), schemas.File{Path: form.path, Content: form.text})))
		secrets = append(secrets, form.secret)
	}
	for _, p := range []string{"keys/" + awsID + "/notes.md", "config/" + stripeKey + ".json", "notes/" + configuredKey + ".md"} {
		outs = append(outs, f.stage(t, "pm", append(goodFiles(), schemas.File{Path: p, Content: "x"})))
		secrets = append(secrets, strings.TrimSuffix(strings.TrimSuffix(p[strings.Index(p, "/")+1:], ".md"), "/notes"))
	}
	for i, o := range f.wait(t, outs...) {
		require.Equal(t, schemas.OutputRejected, o.Status, "output %d", i)
		rs := f.reviews(t, o.ID)
		require.Len(t, rs, 1)
		require.Equal(t, PolicyRules, rs[0].Reviewer)
		require.Contains(t, rs[0].Feedback, "- no_secrets: ")
		require.NotContains(t, rs[0].Feedback, secrets[i])
		for _, c := range rs[0].Checks {
			require.NotContains(t, c.Detail, secrets[i], c.Name)
		}
	}
}

// TestReviewsGetMasksSecrets: reviews.get shows a rejected output with
// every secret masked, in contents and paths, and says where and what.
func TestReviewsGetMasksSecrets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Limits: Limits{Secrets: []string{configuredKey}}})
	out := f.stage(t, "pm", append(goodFiles(),
		schemas.File{Path: "deploy/" + awsID + ".env", Content: "OPENAI_API_KEY=" + configuredKey + "\nSTRIPE=" + stripeKey + "\n"}))
	require.Equal(t, schemas.OutputRejected, f.wait(t, out)[0].Status)

	var item schemas.ReviewItem
	require.NoError(t, f.request("reviews.get", schemas.IDRequest{ID: out.ID}, &item))
	raw, err := json.Marshal(item)
	require.NoError(t, err)
	for _, secret := range []string{configuredKey, awsID, stripeKey} {
		require.NotContains(t, string(raw), secret)
	}
	file := item.Output.Files[len(item.Output.Files)-1]
	require.Equal(t, "deploy/[secret: aws-access-token].env", file.Path)
	require.Equal(t, "OPENAI_API_KEY=[secret: configured-secret]\nSTRIPE=[secret: stripe-access-token]\n", file.Content)
	var check schemas.Check
	for _, c := range item.Checks {
		if c.Name == CheckNoSecrets {
			check = c
		}
	}
	require.False(t, check.Passed)
	require.Contains(t, check.Detail, "deploy/[secret: aws-access-token].env line 1: looks like a secret (configured-secret")
	require.Contains(t, check.Detail, "line 2: looks like a secret (stripe-access-token)")
}
