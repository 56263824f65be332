package orchestrator

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// watchedOrchestrator runs an orchestrator with its relay and topology
// watcher, and a reconciler that would look at nothing for an hour: what
// it re-sends, it re-sends because the watcher saw a loss.
func watchedOrchestrator(t *testing.T) (*Service, jetstream.JetStream, bus.Topology) {
	t.Helper()
	js, st, topo, log := relayTestEnv(t, "developer")
	ctx := context.Background()
	relay := NewRelay(RelayConfig{Logger: log}, st, js)
	relay.Start(ctx)
	t.Cleanup(func() { relay.Stop(ctx) })
	s := New(Config{
		Logger: log, Notify: relay.Notify,
		Reconcile: ReconcileConfig{Interval: time.Hour, StaleAfter: time.Hour},
		Watch:     WatchConfig{Topology: &topo, Interval: 50 * time.Millisecond},
	}, st, js.Conn(), js)
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { _ = s.Stop(ctx) })
	return s, js, topo
}

func streamState(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamState, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return st.CachedInfo().State, nil
}

func submitOne(t *testing.T, s *Service, js jetstream.JetStream) schemas.Job {
	t.Helper()
	ctx := context.Background()
	view, err := s.Submit(ctx, schemas.Submission{Title: "Lost", Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		state, err := streamState(ctx, js, bus.StreamTasks)
		return err == nil && state.Msgs == 1
	}, 10*time.Second, 5*time.Millisecond, "the task is published")
	return view.(schemas.Job)
}

// TestWatcherCreatesLostStreamsAgain: every stream is deleted while a job
// runs, as when a broker comes back on an empty store. The orchestrator
// creates them and their consumers again, re-dispatches the lost task at
// once (not after StaleAfter) and binds its own consumer again.
func TestWatcherCreatesLostStreamsAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, js, topo := watchedOrchestrator(t)
	job := submitOne(t, s, js)

	lostAt := time.Now()
	for _, sc := range topo.Streams() {
		require.NoError(t, js.DeleteStream(ctx, sc.Name))
	}
	require.Eventually(t, func() bool {
		state, err := streamState(ctx, js, bus.StreamTasks)
		return err == nil && state.Msgs == 1
	}, 30*time.Second, 5*time.Millisecond, "the lost task is in the new stream")
	t.Logf("streams created again and the lost task re-dispatched %s after they were deleted", time.Since(lostAt).Round(time.Millisecond))
	for _, c := range topo.Consumers() {
		_, err := js.Consumer(ctx, c.Stream, c.Consumer)
		require.NoError(t, err, "consumer %s of %s", c.Consumer, c.Stream)
	}
	tasks, err := s.store.TaskListByJob(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskQueued, tasks[0].Status)

	// The orchestrator pulls from its consumer again.
	require.Eventually(t, func() bool {
		c, err := js.Consumer(ctx, bus.StreamEvents, bus.ConsumerOrchestrator)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting > 0
	}, 30*time.Second, 10*time.Millisecond, "the orchestrator's consumer is bound again")
}

// TestWatcherReconcilesAPurgeAtOnce: TROUPE_TASKS is purged while a task
// waits in it; the task is re-dispatched at once, not after StaleAfter.
func TestWatcherReconcilesAPurgeAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, js, _ := watchedOrchestrator(t)
	submitOne(t, s, js)

	stream, err := js.Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	purgedAt := time.Now()
	require.NoError(t, stream.Purge(ctx))
	require.Eventually(t, func() bool {
		state, err := streamState(ctx, js, bus.StreamTasks)
		return err == nil && state.Msgs == 1
	}, 30*time.Second, 5*time.Millisecond, "the purged task is sent again")
	t.Logf("the purged task was re-dispatched %s after the purge", time.Since(purgedAt).Round(time.Millisecond))
}
