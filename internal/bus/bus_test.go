package bus

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
)

// setup starts an embedded server on a free port with the topology for pm.
func setup(t *testing.T) (jetstream.JetStream, Topology) {
	t.Helper()
	srv, err := StartEmbedded(EmbeddedConfig{Dir: t.TempDir(), Port: -1, SyncAlways: true})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, js, err := Connect(srv.ClientURL(), "test", zerolog.New(zerolog.NewTestWriter(t)))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	topo := Topology{Roles: []string{"pm"}, AckWait: 2 * time.Second}
	require.NoError(t, topo.Ensure(context.Background(), js))
	return js, topo
}

func TestEnsureIsIdempotent(t *testing.T) {
	t.Parallel()
	js, topo := setup(t)
	ctx := context.Background()
	require.NoError(t, topo.Ensure(ctx, js), "ensuring twice changes nothing")
	require.NoError(t, topo.Check(ctx, js))

	s, err := js.Stream(ctx, StreamTasks)
	require.NoError(t, err)
	require.Equal(t, jetstream.WorkQueuePolicy, s.CachedInfo().Config.Retention)
	require.Equal(t, jetstream.FileStorage, s.CachedInfo().Config.Storage)
	c, err := js.Consumer(ctx, StreamTasks, "workers-pm")
	require.NoError(t, err)
	require.Equal(t, "troupe.tasks.pm", c.CachedInfo().Config.FilterSubject)
	require.Equal(t, jetstream.AckExplicitPolicy, c.CachedInfo().Config.AckPolicy)

	// A changed setting is applied to the existing consumer.
	topo.MaxDeliver = 3
	require.NoError(t, topo.Ensure(ctx, js))
	c, err = js.Consumer(ctx, StreamTasks, "workers-pm")
	require.NoError(t, err)
	require.Equal(t, 3, c.CachedInfo().Config.MaxDeliver)
}

func TestPublishDeduplicatesByMsgID(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	ctx := context.Background()
	for range 3 {
		require.NoError(t, Publish(ctx, js, "troupe.tasks.pm", "task.1.0", []byte(`{}`), nil))
	}
	s, err := js.Stream(ctx, StreamTasks)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)
}

func TestSettler(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	ctx := context.Background()
	var recorded []schemas.DeadLetter
	st := &Settler{
		JS: js, Subjects: Subjects{Prefix: "troupe"}, Source: "workers-pm",
		Log: zerolog.New(zerolog.NewTestWriter(t)), BaseDelay: 10 * time.Millisecond,
		Record: func(_ context.Context, d schemas.DeadLetter) error { recorded = append(recorded, d); return nil },
	}
	cons, err := js.Consumer(ctx, StreamTasks, "workers-pm")
	require.NoError(t, err)
	next := func() jetstream.Msg {
		t.Helper()
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		return msg
	}

	// A panic is a failed delivery: the message comes back.
	require.NoError(t, Publish(ctx, js, "troupe.tasks.pm", "p", []byte(`panic`), nil))
	st.Handle(ctx, next(), func(context.Context, jetstream.Msg) error { panic("boom") })
	again := next()
	meta, err := again.Metadata()
	require.NoError(t, err)
	require.EqualValues(t, 2, meta.NumDelivered)

	// A permanent error dead-letters it with its reason, then terminates it.
	st.Handle(ctx, again, func(context.Context, jetstream.Msg) error {
		return Permanent(errors.New("task: not valid"))
	})
	require.Len(t, recorded, 1)
	require.Equal(t, "task: not valid", recorded[0].Reason)
	require.Equal(t, ClassPermanent, recorded[0].Class)
	require.Equal(t, 2, recorded[0].Attempts)

	dlq, err := js.OrderedConsumer(ctx, StreamDLQ, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	dead, err := dlq.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	require.Equal(t, "troupe.dlq.workers-pm", dead.Subject())
	require.Equal(t, "panic", string(dead.Data()))
	h := dead.Headers()
	require.Equal(t, "task: not valid", h.Get(HeaderReason))
	require.Equal(t, ClassPermanent, h.Get(HeaderErrorClass))
	require.Equal(t, "2", h.Get(HeaderDeliveries))
	require.Equal(t, "troupe.tasks.pm", h.Get(HeaderOriginalSubject))
	require.Equal(t, strconv.FormatUint(meta.Sequence.Stream, 10), h.Get(HeaderStreamSeq))

	// Terminated: the work queue holds nothing.
	s, err := js.Stream(ctx, StreamTasks)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 5*time.Second, 10*time.Millisecond)

	// Success acks.
	require.NoError(t, Publish(ctx, js, "troupe.tasks.pm", "ok", []byte(`ok`), nil))
	st.Handle(ctx, next(), func(context.Context, jetstream.Msg) error { return nil })
	_, err = cons.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
	require.ErrorIs(t, err, nats.ErrTimeout)
}

func TestRetryDelayGrows(t *testing.T) {
	t.Parallel()
	s := &Settler{}
	require.Equal(t, time.Second, s.delay(1))
	require.Equal(t, 2*time.Second, s.delay(2))
	require.Equal(t, 8*time.Second, s.delay(4))
	require.Equal(t, time.Minute, s.delay(50))
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)
	got, id, err := DecodeCursor(EncodeCursor(at, "abc"))
	require.NoError(t, err)
	require.Equal(t, at, got)
	require.Equal(t, "abc", id)
	_, _, err = DecodeCursor("!!")
	require.Error(t, err)
}

// TestDeadLetterReasonIsMasked: a dead letter's reason carries the error
// that killed the message; the process's secrets and credentials of known
// shapes are masked in its header and in what is recorded (which becomes
// the task's and the job's reasons).
func TestDeadLetterReasonIsMasked(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	ctx := context.Background()
	const secret = "dlq-test-secret-4f9a2b7c"
	redact.Add(secret)
	var recorded schemas.DeadLetter
	d := NewDeadLetter("workers-pm", StreamTasks, 1, time.Now(), "troupe.tasks.pm", []byte(`{}`), nil,
		`model: Post "http://h/v1?key=SECRETVALUE123/chat/completions": EOF; said `+strings.ToUpper(secret), ClassExhausted, 3)
	require.NoError(t, PublishDeadLetter(ctx, js, Subjects{Prefix: DefaultPrefix}, d, func(_ context.Context, d schemas.DeadLetter) error {
		recorded = d
		return nil
	}))
	s, err := js.Stream(ctx, StreamDLQ)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, "troupe.dlq.workers-pm")
	require.NoError(t, err)
	for _, reason := range []string{m.Header.Get(HeaderReason), recorded.Reason} {
		require.Equal(t, `model: Post "http://h/v1?key=***": EOF; said ***`, reason)
	}
}
