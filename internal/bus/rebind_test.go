package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestConsumeBindsAgain: the stream of a running consumption is deleted
// and created again with its consumer, as the orchestrator's topology
// watcher does; the consumption hands on the new stream's messages
// without being started again.
func TestConsumeBindsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, topo := setup(t)
	cons, err := js.Consumer(ctx, StreamReview, ConsumerReview)
	require.NoError(t, err)
	got := make(chan string, 10)
	c, err := Consume(js, cons, zerolog.New(zerolog.NewTestWriter(t)), func(m jetstream.Msg) {
		got <- string(m.Data())
		_ = m.Ack()
	}, jetstream.PullExpiry(time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { c.Drain(ctx) })

	subj := Subjects{Prefix: DefaultPrefix}.Review("developer")
	require.NoError(t, Publish(ctx, js, subj, "first", []byte("first"), nil))
	require.Equal(t, "first", <-got)

	require.NoError(t, js.DeleteStream(ctx, StreamReview))
	require.NoError(t, topo.Ensure(ctx, js))
	require.NoError(t, Publish(ctx, js, subj, "second", []byte("second"), nil))
	select {
	case m := <-got:
		require.Equal(t, "second", m)
	case <-time.After(30 * time.Second):
		t.Fatal("the consumption did not bind to the consumer created again")
	}
}
