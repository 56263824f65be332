package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
	ctx := context.Background()
	js, st, _, log := relayTestEnv(t, "pm")

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
	ctx := context.Background()
	js, st, _, log := relayTestEnv(t, "developer", "tester")
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

// TestRelayAtomicBatches: enough rows for one stream go as one atomic batch
// (stored in order, with the batch's headers); a batch the server refuses
// because some of its messages are stored already is published again one
// by one, so the new rows land and the repeated ones are dropped; a stream
// that does not take atomic batches is published to one by one.
func TestRelayAtomicBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, st, topo, log := relayTestEnv(t, "pm")

	events := func(from, to int) []store.OutboxMessage {
		var out []store.OutboxMessage
		for i := from; i < to; i++ {
			id := fmt.Sprintf("event.%d", i)
			out = append(out, store.OutboxMessage{Subject: fmt.Sprintf("troupe.events.j%d.job_done", i), MsgID: id, Payload: []byte(`{}`)})
		}
		return out
	}
	rows := append(events(0, 40),
		store.OutboxMessage{Subject: "troupe.tasks.pm", MsgID: "task.a.0", Payload: []byte(`{}`)},
		store.OutboxMessage{Subject: "nowhere.at.all", MsgID: "lost.1", Payload: []byte(`{}`)},
	)
	require.NoError(t, st.OutboxInsert(ctx, rows))
	r := NewRelay(RelayConfig{Logger: log, StreamOf: topo.StreamOf()}, st, js)
	sent, err := r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 41, sent)
	unsent, err := st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, unsent, 1, "the row no stream takes failed on its own")

	stream := func(name string) jetstream.Stream {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		return s
	}
	msgAt := func(s jetstream.Stream, seq uint64) *jetstream.RawStreamMsg {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		return m
	}
	ev := stream(bus.StreamEvents)
	require.EqualValues(t, 40, mustCount(t, ctx, ev))
	for seq := uint64(1); seq <= 40; seq++ {
		m := msgAt(ev, seq)
		require.Equal(t, fmt.Sprintf("event.%d", seq-1), m.Header.Get(jetstream.MsgIDHeader), "stored in outbox order")
		require.NotEmpty(t, m.Header.Get("Nats-Batch-Id"), "event %d went alone", seq-1)
	}
	task := msgAt(stream(bus.StreamTasks), 1)
	require.Empty(t, task.Header.Get("Nats-Batch-Id"), "a lone task went in a batch")

	// Ten repeats and ten new rows: the server refuses the batch (it holds
	// messages already stored); one by one, the repeats are dropped.
	require.NoError(t, st.OutboxInsert(ctx, append(events(30, 40), events(40, 50)...)))
	sent, err = r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 20, sent)
	require.EqualValues(t, 50, mustCount(t, ctx, ev))
	require.Empty(t, msgAt(ev, 50).Header.Get("Nats-Batch-Id"))

	// A stream that does not take atomic batches (a server before 2.12
	// reports none does).
	cfg := ev.CachedInfo().Config
	cfg.AllowAtomicPublish = false
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, st.OutboxInsert(ctx, events(50, 70)))
	fresh := NewRelay(RelayConfig{Logger: log, StreamOf: topo.StreamOf()}, st, js)
	sent, err = fresh.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 20, sent)
	require.EqualValues(t, 70, mustCount(t, ctx, ev))
	require.Empty(t, msgAt(ev, 70).Header.Get("Nats-Batch-Id"))
}

func mustCount(t *testing.T, ctx context.Context, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(ctx)
	require.NoError(t, err)
	return info.State.Msgs
}

// TestRelayDirect: rows written in a transaction are handed to the relay as
// it commits, claimed, so another relay's pass leaves them; the relay
// publishes them without a pass. A rolled-back transaction hands nothing
// over, and a row that fails to publish is released for any relay to retry.
func TestRelayDirect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, st, topo, log := relayTestEnv(t, "pm", "tester")
	subj := bus.Subjects{Prefix: "troupe"}

	// A pm worker's relay: it may publish pm's review requests and events,
	// not tester tasks.
	r := NewRelay(RelayConfig{Logger: log, StreamOf: topo.StreamOf(), Subjects: subj.WorkerSubjects("pm")}, st, js)
	st.SetOutboxDirect(r.Direct())
	other := NewRelay(RelayConfig{Logger: log, StreamOf: topo.StreamOf()}, st, js)

	require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
		return q.OutboxInsert(ctx, []store.OutboxMessage{
			{Subject: "troupe.review.pm", MsgID: "review.1", Payload: []byte(`{}`)},
			{Subject: "troupe.tasks.tester", MsgID: "task.t.0", Payload: []byte(`{}`)},
		})
	}))
	boom := errors.New("boom")
	require.ErrorIs(t, st.InTx(ctx, func(q store.Querier) error {
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "troupe.review.pm", MsgID: "review.rolled-back", Payload: []byte(`{}`)}}); err != nil {
			return err
		}
		return boom
	}), boom)

	// Another relay's pass takes only the row not handed over.
	sent, err := other.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, sent, "the other relay took a row claimed for the pm relay")
	// The pm relay publishes its row without claiming.
	sent, err = r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, sent)
	unsent, err := st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, unsent)
	review, err := js.Stream(ctx, bus.StreamReview)
	require.NoError(t, err)
	require.EqualValues(t, 1, mustCount(t, ctx, review), "review.rolled-back was published")

	// Rows that do not fit in the relay's memory are taken back by its
	// next pass, not left claimed until the lease ends.
	r.directMax = 2
	var many []store.OutboxMessage
	for i := range 5 {
		many = append(many, store.OutboxMessage{Subject: "troupe.review.pm", MsgID: fmt.Sprintf("review.many.%d", i), Payload: []byte(`{}`)})
	}
	require.NoError(t, st.InTx(ctx, func(q store.Querier) error { return q.OutboxInsert(ctx, many) }))
	sent, err = other.Flush(ctx)
	require.NoError(t, err)
	require.Zero(t, sent, "rows claimed for the pm relay were taken by another")
	sent, err = r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, sent)
	require.EqualValues(t, 6, mustCount(t, ctx, review))
	r.directMax = directMax

	// A row handed over that cannot be published is released, marked for
	// a later attempt, so any relay's pass takes it then.
	require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
		return q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "troupe.review.pm", MsgID: "review.2", Payload: []byte(`{}`)}})
	}))
	require.NoError(t, js.DeleteStream(ctx, bus.StreamReview))
	_, err = r.Flush(ctx)
	require.Error(t, err)
	unsent, err = st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, unsent, 1)
	require.Equal(t, 1, unsent[0].Attempts)
	require.NoError(t, topo.Ensure(ctx, js))
	require.Eventually(t, func() bool {
		n, err := other.Flush(ctx)
		return err == nil && n == 1
	}, 10*time.Second, 100*time.Millisecond, "the released row was not taken by another relay once due")
}

// TestRelayMarksHandedOverRows: running, the relay publishes the rows
// handed over at commit and marks them sent shortly after (together: how
// many marks that saves is troupe bench's to show, not a test's);
// stopping, it marks what is left.
func TestRelayMarksHandedOverRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, st, topo, log := relayTestEnv(t, "pm")
	r := NewRelay(RelayConfig{Logger: log, StreamOf: topo.StreamOf()}, st, js)
	st.SetOutboxDirect(r.Direct())
	r.Start(ctx)

	review, err := js.Stream(ctx, bus.StreamReview)
	require.NoError(t, err)
	for i := range 20 {
		require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
			return q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "troupe.review.pm", MsgID: fmt.Sprintf("review.%d", i), Payload: []byte(`{}`)}})
		}))
	}
	require.Eventually(t, func() bool { return mustCount(t, ctx, review) == 20 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		unsent, err := st.OutboxListUnsent(ctx, 100)
		return err == nil && len(unsent) == 0
	}, 10*time.Second, 10*time.Millisecond, "published rows were never marked sent")

	// Stop marks what it published.
	require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
		return q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "troupe.review.pm", MsgID: "review.last", Payload: []byte(`{}`)}})
	}))
	r.Stop(ctx)
	unsent, err := st.OutboxListUnsent(ctx, 100)
	require.NoError(t, err)
	require.Empty(t, unsent)
	require.EqualValues(t, 21, mustCount(t, ctx, review))
}

// relayTestEnv starts a NATS server with Troupe's streams for roles and a
// SQLite store, both gone when the test ends.
func relayTestEnv(t *testing.T, roles ...string) (jetstream.JetStream, *sqlite.Store, bus.Topology, zerolog.Logger) {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	log := zerolog.New(zerolog.NewTestWriter(t))
	nc, js, err := bus.Connect(srv.ClientURL(), "test", log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	topo := bus.Topology{Roles: roles}
	require.NoError(t, topo.Ensure(context.Background(), js))
	return js, sqlite.NewTestStore(t), topo, log
}

// failingMarks is a store whose OutboxDeleteSent always fails.
type failingMarks struct {
	store.Store
	calls atomic.Int64
}

func (f *failingMarks) OutboxDeleteSent(context.Context, []int64) error {
	f.calls.Add(1)
	return errors.New("the store is away")
}

// TestRelayBacksOffWhenMarkingFails: rows published but not marked are
// marked again a second later, not in a hot loop.
func TestRelayBacksOffWhenMarkingFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, st, topo, log := relayTestEnv(t, "pm")
	failing := &failingMarks{Store: st}
	r := NewRelay(RelayConfig{Logger: log, StreamOf: topo.StreamOf()}, failing, js)
	st.SetOutboxDirect(r.Direct())
	r.Start(ctx)
	require.NoError(t, st.InTx(ctx, func(q store.Querier) error {
		return q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "troupe.review.pm", MsgID: "review.1", Payload: []byte(`{}`)}})
	}))
	require.Eventually(t, func() bool { return failing.calls.Load() > 0 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(2 * time.Second)
	r.Stop(ctx)
	// About one a second; before the back-off it was ~100,000 a second.
	require.Less(t, failing.calls.Load(), int64(20), "marking was retried in a hot loop")
}
