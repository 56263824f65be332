package orchestrator

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// TestRelayFailingRowDoesNotBlock: a row no stream takes fails and is
// retried later; the rows behind it are published at once, and a publish
// repeated after a crash before marking sent is dropped by the stream.
func TestRelayFailingRowDoesNotBlock(t *testing.T) {
	t.Parallel()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	log := zerolog.New(zerolog.NewTestWriter(t))
	nc, js, err := bus.Connect(srv.ClientURL(), "test", log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	require.NoError(t, bus.Topology{Roles: []string{"pm"}}.Ensure(ctx, js))
	st := sqlite.NewTestStore(t)

	require.NoError(t, st.OutboxInsert(ctx, []store.OutboxMessage{
		{Subject: "nowhere.at.all", MsgID: "lost.1", Payload: []byte(`{}`)},
		{Subject: "troupe.tasks.pm", MsgID: "task.a.0", Payload: []byte(`{"a":1}`)},
		{Subject: "troupe.tasks.pm", MsgID: "task.b.0", Payload: []byte(`{"b":1}`)},
	}))
	r := NewRelay(RelayConfig{Logger: log}, st, js)
	sent, err := r.Flush(ctx)
	require.NoError(t, err, "some rows went through")
	require.Equal(t, 2, sent)

	unsent, err := st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, unsent, 1)
	require.Equal(t, "nowhere.at.all", unsent[0].Subject)
	require.Equal(t, 1, unsent[0].Attempts)
	require.NotEmpty(t, unsent[0].LastError)
	require.True(t, unsent[0].NextAttemptAt.After(time.Now()), "retried later, not in a hot loop")

	// Not due yet: a second flush publishes nothing and does not fail.
	sent, err = r.Flush(ctx)
	require.NoError(t, err)
	require.Zero(t, sent)

	// A crash after publishing but before marking sent: the row is
	// published again, and the stream drops it by its message id.
	require.NoError(t, st.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "troupe.tasks.pm", MsgID: "task.a.0", Payload: []byte(`{"a":1}`)}}))
	sent, err = r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, sent)
	s, err := js.Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, info.State.Msgs, "task.a.0 is in the stream once")
}

// TestRelayClaimsOnlyItsSubjects: a worker's relay publishes the rows its
// NATS user may publish and leaves the others; the orchestrator's relay,
// which claims every row, publishes those, so none is left behind.
func TestRelayClaimsOnlyItsSubjects(t *testing.T) {
	t.Parallel()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	log := zerolog.New(zerolog.NewTestWriter(t))
	nc, js, err := bus.Connect(srv.ClientURL(), "test", log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	require.NoError(t, bus.Topology{Roles: []string{"developer", "tester"}}.Ensure(ctx, js))
	st := sqlite.NewTestStore(t)
	subj := bus.Subjects{Prefix: "troupe"}

	require.NoError(t, st.OutboxInsert(ctx, []store.OutboxMessage{
		{Subject: "troupe.tasks.tester", MsgID: "task.t.0", Payload: []byte(`{}`)},          // the orchestrator's
		{Subject: "troupe.review.developer", MsgID: "review.o", Payload: []byte(`{}`)},      // the worker's
		{Subject: "troupe.events.j.output_staged", MsgID: "event.1", Payload: []byte(`{}`)}, // the worker's
		{Subject: "troupe.events.j.job_done", MsgID: "event.2", Payload: []byte(`{}`)},      // the orchestrator's
	}))
	worker := NewRelay(RelayConfig{Logger: log, Subjects: subj.WorkerSubjects("developer")}, st, js)
	sent, err := worker.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, sent)
	unsent, err := st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, unsent, 2)
	require.Equal(t, "troupe.tasks.tester", unsent[0].Subject)
	require.Equal(t, "troupe.events.j.job_done", unsent[1].Subject)
	require.Zero(t, unsent[0].Attempts, "left alone, not tried and failed")

	sent, err = NewRelay(RelayConfig{Logger: log}, st, js).Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, sent)
	unsent, err = st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, unsent)
}
