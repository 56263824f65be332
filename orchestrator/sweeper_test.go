package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// sweepEnv is a NATS server with Troupe's topology (developer workers
// giving up after one delivery), a store, and an orchestrator whose
// sweeper a test drives one advisory at a time.
type sweepEnv struct {
	t      *testing.T
	js     jetstream.JetStream
	st     store.Store
	s      *Service
	sweeps jetstream.Consumer
}

func newSweepEnv(t *testing.T) *sweepEnv {
	t.Helper()
	js, st, topo, log := relayTestEnv(t, "developer")
	topo.RoleMaxDeliver = map[string]int{"developer": 1}
	topo.AckWait = time.Second
	require.NoError(t, topo.Ensure(context.Background(), js))
	sweeps, err := js.Consumer(context.Background(), bus.StreamAdvisories, bus.ConsumerSweeper)
	require.NoError(t, err)
	s := New(Config{Logger: log}, st, js.Conn(), js)
	return &sweepEnv{t: t, js: js, st: st, s: s, sweeps: sweeps}
}

// publish stores a message on subject and returns its stream sequence.
func (e *sweepEnv) publish(subject string, data any) uint64 {
	e.t.Helper()
	b, err := json.Marshal(data)
	require.NoError(e.t, err)
	ack, err := e.js.Publish(context.Background(), subject, b)
	require.NoError(e.t, err)
	return ack.Sequence
}

// forge publishes a MAX_DELIVERIES advisory as anyone without NATS
// authorization can, and sweeps it.
func (e *sweepEnv) forge(stream, consumer string, seq uint64) error {
	e.t.Helper()
	adv, _ := json.Marshal(map[string]any{
		"type": "io.nats.jetstream.advisory.v1.max_deliver", "id": uuid.NewString(),
		"stream": stream, "consumer": consumer, "stream_seq": seq, "deliveries": 10,
	})
	require.NoError(e.t, e.js.Conn().Publish(bus.MaxDeliveriesAdvisory(stream, consumer), adv))
	return e.sweepNext()
}

// sweepNext sweeps the next advisory of TROUPE_ADVISORIES.
func (e *sweepEnv) sweepNext() error {
	e.t.Helper()
	batch, err := e.sweeps.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
	require.NoError(e.t, err)
	msg := <-batch.Messages()
	require.NotNil(e.t, msg, "an advisory")
	err = e.s.sweep(context.Background(), msg)
	require.NoError(e.t, msg.Ack())
	return err
}

// untouched checks that a message is still in its stream and that nothing
// was dead-lettered.
func (e *sweepEnv) untouched(stream string, seq uint64) {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	require.NoError(e.t, err)
	_, err = s.GetMsg(ctx, seq)
	require.NoError(e.t, err, "%s #%d was not deleted", stream, seq)
	dead, err := e.st.DeadLetterList(ctx, store.DeadLetterListParams{})
	require.NoError(e.t, err)
	require.Empty(e.t, dead, "no dead letter")
	dlq, err := e.js.Stream(ctx, bus.StreamDLQ)
	require.NoError(e.t, err)
	info, err := dlq.Info(ctx)
	require.NoError(e.t, err)
	require.Zero(e.t, info.State.Msgs, "nothing in TROUPE_DLQ")
}

// TestSweeperIgnoresForgedAdvisories: a MAX_DELIVERIES advisory anyone
// published, naming an event, a queued task or a message its consumer
// does not serve, deletes nothing and records no dead letter.
func TestSweeperIgnoresForgedAdvisories(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newSweepEnv(t)
	done := store.Job{ID: uuid.NewString(), Title: "Done", Status: schemas.JobDone}
	_, _, err := e.st.JobCreate(ctx, store.JobCreateParams{Job: done})
	require.NoError(t, err)
	promoted := e.publish(fmt.Sprintf("troupe.events.%s.output_promoted", done.ID), schemas.Event{ID: "e1", JobID: done.ID, Kind: schemas.EventOutputPromoted, Time: time.Now()})
	staged := e.publish(fmt.Sprintf("troupe.events.%s.output_staged", done.ID), schemas.Event{ID: "e2", JobID: done.ID, Kind: schemas.EventOutputStaged, Time: time.Now()})

	// The orchestrator never received the promotion.
	require.NoError(t, e.forge(bus.StreamEvents, bus.ConsumerOrchestrator, promoted))
	e.untouched(bus.StreamEvents, promoted)
	// Its consumer does not serve output_staged.
	require.NoError(t, e.forge(bus.StreamEvents, bus.ConsumerOrchestrator, staged))
	e.untouched(bus.StreamEvents, staged)
	// Received and acknowledged: the job is done, nothing is left to do.
	events, err := e.js.Consumer(ctx, bus.StreamEvents, bus.ConsumerOrchestrator)
	require.NoError(t, err)
	batch, err := events.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
	require.NoError(t, err)
	require.NoError(t, (<-batch.Messages()).DoubleAck(ctx))
	require.NoError(t, e.forge(bus.StreamEvents, bus.ConsumerOrchestrator, promoted))
	e.untouched(bus.StreamEvents, promoted)

	// A queued task no worker has taken, and one named under another
	// role's consumer.
	task := e.publish("troupe.tasks.developer", schemas.TaskMessage{TaskID: "t", JobID: done.ID, Key: "k", Role: "developer"})
	require.NoError(t, e.forge(bus.StreamTasks, "workers-developer", task))
	e.untouched(bus.StreamTasks, task)
	require.NoError(t, e.forge(bus.StreamTasks, "workers-tester", task))
	e.untouched(bus.StreamTasks, task)
	// A task a worker holds right now: looked at again later.
	workers, err := e.js.Consumer(ctx, bus.StreamTasks, "workers-developer")
	require.NoError(t, err)
	batch, err = workers.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
	require.NoError(t, err)
	held := <-batch.Messages()
	require.NotNil(t, held)
	var retry *bus.RetryError
	require.ErrorAs(t, e.forge(bus.StreamTasks, "workers-developer", task), &retry)
	e.untouched(bus.StreamTasks, task)
	require.NoError(t, held.DoubleAck(ctx))
}

// giveUp has consumer deliver its next message once and never settle it
// (a crash), and returns once its MAX_DELIVERIES advisory is in
// TROUPE_ADVISORIES: the server gives up once AckWait passes and the
// consumer is asked again (MaxDeliver 1).
func giveUp(t *testing.T, js jetstream.JetStream, stream, consumer string) {
	t.Helper()
	ctx := context.Background()
	cons, err := js.Consumer(ctx, stream, consumer)
	require.NoError(t, err)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
	require.NoError(t, err)
	require.NotNil(t, <-batch.Messages(), "delivered once, never settled (a crash)")
	advisories, err := js.Stream(ctx, bus.StreamAdvisories)
	require.NoError(t, err)
	for {
		info, err := advisories.Info(ctx)
		require.NoError(t, err)
		if info.State.Msgs > 0 {
			return
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		require.Nil(t, <-batch.Messages(), "not delivered again")
	}
}

// TestSweeperSweepsAGivenUpTask: the server's own advisory, for a task
// its consumer gave up on, is swept: dead-lettered and deleted.
func TestSweeperSweepsAGivenUpTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newSweepEnv(t)
	job, tasks := jobWith(t, e.st, schemas.TaskRunning)
	seq := e.publish("troupe.tasks.developer", schemas.TaskMessage{TaskID: tasks[0].ID, JobID: job.ID, Key: tasks[0].Key, Role: "developer"})
	giveUp(t, e.js, bus.StreamTasks, "workers-developer")
	require.NoError(t, e.sweepNext())
	tasksStream, err := e.js.Stream(ctx, bus.StreamTasks)
	require.NoError(t, err)
	_, err = tasksStream.GetMsg(ctx, seq)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "deleted")
	dead, err := e.st.DeadLetterList(ctx, store.DeadLetterListParams{})
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, "workers-developer", dead[0].Source)
	require.Equal(t, "exhausted", dead[0].Class)
}
