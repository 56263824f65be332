package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/schemas"
)

// TestEndpointAnswersInboxesOnly: a request that names a stream's subject
// as its reply subject (troupe dev: no authorization) is dropped, logged
// and counted; nothing is published there. An inbox gets its answer.
func TestEndpointAnswersInboxesOnly(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	nc := js.Conn()
	refused := make(chan string, 8)
	ep := EndpointConfig{
		Ctx: context.Background(), Log: zerolog.New(zerolog.NewTestWriter(t)), Timeout: 5 * time.Second,
		// One at a time: a request is answered before the next is read.
		Concurrency: 1,
		Replies:     Replies{Refused: func(subject string) { refused <- subject }},
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "test", Version: "0.0.1"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, svc.AddGroup("troupe.api.jobs").AddEndpoint("get", Endpoint(ep, schemas.SchemaIDRequest, func(context.Context, schemas.IDRequest) (any, error) {
		return map[string]string{"id": "x"}, nil
	})))
	require.NoError(t, nc.Flush(), "the server has the subscriptions before anyone asks")

	// Whoever listens on the subjects a forged reply would name.
	watcher, _, err := Connect(nc.ConnectedUrl(), "watcher", zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(watcher.Close)
	forged := []string{"troupe.tasks.pm", "troupe.events.j1.output_promoted", "troupe.dlq.x", "troupe.review.tester",
		"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TROUPE_EVENTS.orchestrator"}
	var leaks []*nats.Subscription
	for _, reply := range forged {
		sub, err := watcher.SubscribeSync(reply)
		require.NoError(t, err)
		leaks = append(leaks, sub)
	}
	require.NoError(t, watcher.Flush())
	for _, reply := range forged {
		require.NoError(t, watcher.PublishRequest("troupe.api.jobs.get", reply, []byte(`{"id":"x"}`)))
	}
	// The same connection's next request is read after those: its answer
	// comes after anything they published.
	var got map[string]string
	require.NoError(t, Request(context.Background(), watcher, "troupe.api.jobs.get", schemas.IDRequest{ID: "x"}, &got))
	require.Equal(t, "x", got["id"], "an inbox gets its answer")
	for _, sub := range leaks {
		msg, err := sub.NextMsg(0)
		require.ErrorIs(t, err, nats.ErrTimeout, "nothing was published on %s: %v", sub.Subject, msg)
	}
	require.Len(t, refused, len(forged), "each forged reply subject was counted")
	require.Equal(t, "troupe.api.jobs.get", <-refused)
	tasks, err := js.Stream(context.Background(), StreamTasks)
	require.NoError(t, err)
	info, err := tasks.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.State.LastSeq, "TROUPE_TASKS stored nothing")
}

func TestRepliesAllowed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		prefixes []string
		reply    string
		want     bool
	}{
		{nil, "_INBOX.abc.1", true},
		{nil, "_INBOX.client.abc.1", true},
		{nil, "_INBOX.", false},
		{nil, "", false},
		{nil, "troupe.tasks.pm", false},
		{nil, "_INBOXES.x", false},
		{nil, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TROUPE_EVENTS.orchestrator", false},
		{[]string{"_INBOX.ada"}, "_INBOX.ada.x", true},
		{[]string{"_INBOX.ada"}, "_INBOX.adam.x", false},
		{[]string{"_INBOX.ada", "replies."}, "replies.x", true},
		{[]string{"replies."}, "_INBOX.x", false},
	} {
		require.Equal(t, tt.want, Replies{Prefixes: tt.prefixes, Log: zerolog.Nop()}.Allowed("s", tt.reply), "%v %q", tt.prefixes, tt.reply)
	}
}

// TestStreamsStoreWhatConsumersServe: a task for a role nobody serves, an
// event of no kind and a dead letter of no consumer find no stream; an
// existing stream of an older Troupe (troupe.tasks.*) is narrowed when
// the topology is ensured; every stream has its limits, and a full work
// queue refuses a publish rather than dropping the oldest task.
func TestStreamsStoreWhatConsumersServe(t *testing.T) {
	t.Parallel()
	srv, err := StartEmbedded(EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, js, err := Connect(srv.ClientURL(), "test", zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: StreamTasks, Subjects: []string{"troupe.tasks.*"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	require.NoError(t, Publish(ctx, js, "troupe.tasks.wizard", "old", []byte(`{}`), nil), "an older Troupe's stream takes anything")

	topo := Topology{Roles: []string{"pm"}, Limits: map[string]StreamLimits{StreamTasks: {MaxMsgs: 2}}}
	require.NoError(t, topo.Ensure(ctx, js))
	for _, subject := range []string{"troupe.tasks.wizard", "troupe.review.wizard", "troupe.events.j1.wizardry", "troupe.dlq.x", "troupe.tasks.pm.x"} {
		err := Publish(ctx, js, subject, "", []byte(`{}`), nil)
		require.ErrorIs(t, err, jetstream.ErrNoStreamResponse, "%s is refused", subject)
	}
	require.NoError(t, Publish(ctx, js, "troupe.events.j1.job_done", "", []byte(`{}`), nil))
	require.NoError(t, Publish(ctx, js, "troupe.dlq.workers-developer", "", []byte(`{}`), nil))

	var names []string
	for _, sc := range topo.Streams() {
		names = append(names, sc.Name)
		s, err := js.Stream(ctx, sc.Name)
		require.NoError(t, err)
		got := s.CachedInfo().Config
		require.ElementsMatch(t, sc.Subjects, got.Subjects, sc.Name)
		require.Positive(t, got.MaxMsgs, sc.Name)
		require.Positive(t, got.MaxBytes, sc.Name)
		require.Positive(t, got.MaxMsgSize, sc.Name)
	}
	require.ElementsMatch(t, config.StreamNames, names, "nats.streams names every stream")
	tasks, err := js.Stream(ctx, StreamTasks)
	require.NoError(t, err)
	cfg := tasks.CachedInfo().Config
	require.Equal(t, int64(2), cfg.MaxMsgs, "configured")
	require.Equal(t, DefaultLimits[StreamTasks].MaxBytes, cfg.MaxBytes, "the default")
	require.Equal(t, jetstream.DiscardNew, cfg.Discard)
	require.NotContains(t, cfg.Subjects, "troupe.tasks.*", "narrowed")

	// The old wizard task and one more fill it: the next is refused.
	require.NoError(t, Publish(ctx, js, "troupe.tasks.pm", "a", []byte(`{}`), nil))
	err = Publish(ctx, js, "troupe.tasks.pm", "b", []byte(`{}`), nil)
	require.ErrorContains(t, err, "maximum messages exceeded")
	info, err := tasks.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.State.Msgs, "nothing already queued was dropped")
}
