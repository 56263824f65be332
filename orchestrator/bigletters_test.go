package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// bigPayloadEnv is a server, the topology of one role, a store and its
// dead letters; with a small max payload for near-max messages, so they
// stay cheap.
type bigPayloadEnv struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	st         store.Store
	dl         *DeadLetters
	log        zerolog.Logger
	maxPayload int
}

func setupBigPayload(t *testing.T) bigPayloadEnv {
	t.Helper()
	return setupDeadLetters(t, sqlite.NewTestStore(t), 64<<10)
}

// setupDeadLetters starts a server whose max payload is maxPayload (0: the
// default) for the dead letters of st.
func setupDeadLetters(t *testing.T, st store.Store, maxPayload int32) bigPayloadEnv {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1, MaxPayload: maxPayload})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	log := zerolog.New(zerolog.NewTestWriter(t))
	nc, js, err := bus.Connect(srv.ClientURL(), "test", log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	require.NoError(t, bus.Topology{Roles: []string{"developer"}}.Ensure(context.Background(), js))
	return bigPayloadEnv{nc: nc, js: js, st: st, log: log, maxPayload: int(nc.MaxPayload()),
		dl: &DeadLetters{Store: st, Subjects: bus.Subjects{Prefix: "troupe"}, Log: log}}
}

// reviewFailsForGood publishes payload as a review request and has a
// Settler of the review consumer fail it for good with err.
func (e bigPayloadEnv) reviewFailsForGood(t *testing.T, payload []byte, err error) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, bus.Publish(ctx, e.js, "troupe.review.developer", "review.o-1", payload, nil))
	settler := &bus.Settler{JS: e.js, Subjects: bus.Subjects{Prefix: "troupe"}, Source: bus.ConsumerReview, Log: e.log, Record: e.dl.Record}
	cons, cerr := e.js.Consumer(ctx, bus.StreamReview, bus.ConsumerReview)
	require.NoError(t, cerr)
	batch, ferr := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, ferr)
	handled := 0
	for msg := range batch.Messages() {
		handled++
		settler.Handle(ctx, msg, func(context.Context, jetstream.Msg) error { return bus.Permanent(err) })
	}
	require.Equal(t, 1, handled)
}

// nearMax is a JSON message for task, padded to the server's max payload
// less slack bytes.
func (e bigPayloadEnv) nearMax(t *testing.T, task store.Task, slack int) []byte {
	t.Helper()
	head, err := json.Marshal(schemas.ReviewRequest{OutputID: "o-1", TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision})
	require.NoError(t, err)
	pad := e.maxPayload - slack - len(head) - len(`,"padding":""`)
	return []byte(string(head[:len(head)-1]) + `,"padding":"` + strings.Repeat("é", pad/2) + strings.Repeat("x", pad%2) + `"}`)
}

// checkTruncatedCopy checks the dead letter's copy in TROUPE_DLQ: cut to
// fit, a prefix of payload, and saying how large the payload was.
func (e bigPayloadEnv) checkTruncatedCopy(t *testing.T, source, subject string, payload []byte) {
	t.Helper()
	ctx := context.Background()
	dlq, err := e.js.Stream(ctx, bus.StreamDLQ)
	require.NoError(t, err)
	info, err := dlq.Info(ctx)
	require.NoError(t, err)
	var cp *jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && cp == nil; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		require.NoError(t, err)
		if m.Subject == "troupe.dlq."+source && m.Header.Get(bus.HeaderOriginalSubject) == subject {
			cp = m
		}
	}
	require.NotNil(t, cp, "no copy of the %s dead letter in TROUPE_DLQ", subject)
	require.Equal(t, "true", cp.Header.Get(bus.HeaderTruncated))
	require.Equal(t, strconv.Itoa(len(payload)), cp.Header.Get(bus.HeaderOriginalSize))
	require.Less(t, len(cp.Data), len(payload))
	require.Greater(t, len(cp.Data), e.maxPayload/2, "cut no more than needed")
	require.True(t, strings.HasPrefix(string(payload), string(cp.Data)), "a prefix of the payload")
	require.NotEmpty(t, cp.Header.Get(bus.HeaderReason))
}

// replayAndCheck replays the dead letter of task and checks that the
// message the relay publishes carries the whole payload.
func (e bigPayloadEnv) replayAndCheck(t *testing.T, id string, task store.Task, payload []byte) {
	t.Helper()
	ctx := context.Background()
	_, err := e.dl.Replay(ctx, id, "ops")
	require.NoError(t, err)
	got, err := e.st.TaskGetByID(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskStaged, got.Status, "back to waiting for its review")
	sent, err := NewRelay(RelayConfig{Logger: e.log}, e.st, e.js).Flush(ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, sent, 1)
	reviews, err := e.js.Stream(ctx, bus.StreamReview)
	require.NoError(t, err)
	again, err := reviews.GetLastMsgForSubject(ctx, "troupe.review.developer")
	require.NoError(t, err)
	require.Equal(t, id, again.Header.Get(bus.HeaderReplayOf))
	require.Equal(t, string(payload), string(again.Data), "replayed whole")
}

// TestNearMaxPayloadIsDeadLettered: a review request within a few hundred
// bytes of the server's max payload whose handler fails for good is
// dead-lettered: its copy in TROUPE_DLQ is cut to fit with the dead
// letter's headers and says so, the store keeps the whole payload, the
// task says why, and a replay sends the whole message again. (The copy
// used to exceed max_payload: its publish failed, the message was nacked
// and retried for ever.)
func TestNearMaxPayloadIsDeadLettered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setupBigPayload(t)
	_, tasks := jobWith(t, e.st, schemas.TaskStaged)
	payload := e.nearMax(t, tasks[0], 200)
	e.reviewFailsForGood(t, payload, errors.New(`review request: unknown field "padding"`))

	dls, err := e.st.DeadLetterList(ctx, store.DeadLetterListParams{})
	require.NoError(t, err)
	require.Len(t, dls, 1, "dead-lettered on its first delivery")
	d := dls[0]
	require.Equal(t, string(payload), d.Payload, "the store keeps the whole payload")
	require.Equal(t, tasks[0].ID, d.TaskID)
	got, err := e.st.TaskGetByID(ctx, tasks[0].ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskDeadLettered, got.Status)
	require.Contains(t, got.Reason, `unknown field "padding"`)
	e.checkTruncatedCopy(t, bus.ConsumerReview, "troupe.review.developer", payload)
	reviews, err := e.js.Stream(ctx, bus.StreamReview)
	require.NoError(t, err)
	info, err := reviews.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "terminated: gone from the work queue")
	e.checkAPIReplies(t, d.ID, payload)

	e.replayAndCheck(t, d.ID, tasks[0], payload)
}

// checkAPIReplies checks that dlq.get and dlq.list answer for a dead
// letter near the max payload: each reply fits, holds the payload's
// beginning and says how large it is.
func (e bigPayloadEnv) checkAPIReplies(t *testing.T, id string, payload []byte) {
	t.Helper()
	ctx := context.Background()
	s := &Service{store: e.st, nc: e.nc}
	reply, err := s.getDeadLetter(ctx, schemas.IDRequest{ID: id})
	require.NoError(t, err)
	body, err := json.Marshal(reply)
	require.NoError(t, err)
	require.LessOrEqual(t, len(body), e.maxPayload-replyMargin, "dlq.get fits in a reply")
	require.NoError(t, schemas.Validate(schemas.SchemaDeadLetter, body))
	one := reply.(schemas.DeadLetter)
	require.Equal(t, len(payload), one.PayloadBytes)
	require.Greater(t, len(one.Payload), e.maxPayload/2)
	require.True(t, strings.HasPrefix(string(payload), one.Payload))

	reply, err = s.listDeadLetters(ctx, schemas.DeadLetterListRequest{})
	require.NoError(t, err)
	list := reply.(schemas.DeadLetterList)
	require.Len(t, list.DeadLetters, 1)
	require.Equal(t, len(payload), list.DeadLetters[0].PayloadBytes)
	require.LessOrEqual(t, len(list.DeadLetters[0].Payload), listPayloadBytes)
}

// TestSweeperDeadLettersNearMaxPayload: a near-max message that exhausted
// MaxDeliver without being settled is swept into TROUPE_DLQ the same way:
// cut to fit there, whole in the store, removed from its stream, and
// replayable whole. (The sweeper used to fail on it every minute, for
// ever.)
func TestSweeperDeadLettersNearMaxPayload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setupBigPayload(t)
	// The review consumer gives up after one delivery left unsettled for a second.
	require.NoError(t, bus.Topology{Roles: []string{"developer"}, MaxDeliver: 1, AckWait: time.Second}.Ensure(ctx, e.js))
	_, tasks := jobWith(t, e.st, schemas.TaskStaged)
	payload := e.nearMax(t, tasks[0], 200)
	require.NoError(t, bus.Publish(ctx, e.js, "troupe.review.developer", "review.o-1", payload, nil))
	reviews, err := e.js.Stream(ctx, bus.StreamReview)
	require.NoError(t, err)
	giveUp(t, e.js, bus.StreamReview, bus.ConsumerReview)
	sweeps, err := e.js.Consumer(ctx, bus.StreamAdvisories, bus.ConsumerSweeper)
	require.NoError(t, err)
	batch, err := sweeps.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
	require.NoError(t, err)
	adv := <-batch.Messages()
	require.NotNil(t, adv, "an advisory")

	s := &Service{js: e.js, store: e.st, subj: bus.Subjects{Prefix: "troupe"}, dl: e.dl, log: e.log}
	require.NoError(t, s.sweep(ctx, adv))

	dls, err := e.st.DeadLetterList(ctx, store.DeadLetterListParams{})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, string(payload), dls[0].Payload)
	require.Equal(t, bus.ClassExhausted, dls[0].Class)
	e.checkTruncatedCopy(t, bus.ConsumerReview, "troupe.review.developer", payload)
	info, err := reviews.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "deleted from its stream")

	e.replayAndCheck(t, dls[0].ID, tasks[0], payload)
}

// TestRelayDeadLettersRowsItCannotPublish: an outbox row larger than the
// server's max payload, and one on a subject no stream takes, are tried
// MaxAttempts times and then dead-lettered with the reason, in the
// transaction that deletes them: the task the first was for says why, the
// store keeps the whole payload, and TROUPE_DLQ gets a copy cut to fit. A
// row whose stream is missing is retried, not dead-lettered: the stream
// may come back. (Such rows used to be retried for ever.)
func TestRelayDeadLettersRowsItCannotPublish(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := setupBigPayload(t)
	topo := bus.Topology{Roles: []string{"developer"}}
	_, tasks := jobWith(t, e.st, schemas.TaskQueued)
	huge := e.nearMax(t, tasks[0], -1000)
	require.NoError(t, e.js.DeleteStream(ctx, bus.StreamReview))
	require.NoError(t, e.st.OutboxInsert(ctx, []store.OutboxMessage{
		{Subject: "troupe.tasks.developer", MsgID: "task." + tasks[0].ID + ".0", Payload: huge},
		{Subject: "nowhere.at.all", MsgID: "lost.1", Payload: []byte(`{}`)},
		{Subject: "troupe.review.developer", MsgID: "review.o-1", Payload: []byte(`{}`)},
		{Subject: "troupe.events.j.output_staged", MsgID: "event.1", Payload: []byte(`{}`)},
	}))
	r := NewRelay(RelayConfig{Logger: e.log, Streams: topo.StreamOf(), DeadLetters: e.dl, MaxAttempts: 3}, e.st, e.js)
	sent, err := r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, sent, "the event")
	unsent, err := e.st.OutboxListUnsent(ctx, 10)
	require.NoError(t, err)
	require.Len(t, unsent, 3, "tried once; not given up yet")
	for _, m := range unsent {
		require.Equal(t, 1, m.Attempts, m.Subject)
	}
	// Their next attempts, as another relay would have recorded one more
	// failure of each, are due now.
	for _, m := range unsent {
		_, err := e.st.OutboxMarkFailed(ctx, m.Seq, "failed again", time.Time{})
		require.NoError(t, err)
	}
	_, err = r.Flush(ctx)
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse, "the row whose stream is missing failed again")

	unsent, err = e.st.OutboxListUnsent(ctx, 100)
	require.NoError(t, err)
	left := map[string]int{}
	for _, m := range unsent {
		switch {
		case strings.HasPrefix(m.Subject, "troupe.events."+tasks[0].JobID+"."), m.Subject == "troupe.dlq.outbox":
			// The dead letters' events and copies, not sent yet.
		default:
			left[m.Subject] = m.Attempts
		}
	}
	require.Equal(t, map[string]int{"troupe.review.developer": 3}, left, "only the row whose stream is missing is left")

	dls, err := e.st.DeadLetterList(ctx, store.DeadLetterListParams{Source: SourceOutbox})
	require.NoError(t, err)
	require.Len(t, dls, 2)
	bySubject := map[string]schemas.DeadLetter{}
	for _, d := range dls {
		bySubject[d.Subject] = d
		require.Equal(t, bus.ClassPermanent, d.Class)
		require.Equal(t, 3, d.Attempts)
		require.Contains(t, d.Reason, "the outbox relay gave up after 3 attempts: ")
	}
	big := bySubject["troupe.tasks.developer"]
	require.Equal(t, string(huge), big.Payload, "kept whole")
	require.Contains(t, big.Reason, "more than the server's max payload of 65536 bytes")
	require.Equal(t, tasks[0].ID, big.TaskID)
	require.Equal(t, "task."+tasks[0].ID+".0", big.Headers["Nats-Msg-Id"])
	require.Contains(t, bySubject["nowhere.at.all"].Reason, "no stream of Troupe's takes subject nowhere.at.all")
	got, err := e.st.TaskGetByID(ctx, tasks[0].ID)
	require.NoError(t, err)
	require.Equal(t, schemas.TaskDeadLettered, got.Status)
	require.Contains(t, got.Reason, "max payload")

	// The dead letters' copies go out with the next pass.
	_, err = r.Flush(ctx)
	require.NoError(t, err)
	e.checkTruncatedCopy(t, SourceOutbox, "troupe.tasks.developer", huge)
	dlq, err := e.js.Stream(ctx, bus.StreamDLQ)
	require.NoError(t, err)
	info, err := dlq.Info(ctx, jetstream.WithSubjectFilter("troupe.dlq.outbox"))
	require.NoError(t, err)
	require.EqualValues(t, 2, info.State.Msgs)
}

// TestBinaryPayloadIsDeadLettered: a message whose payload is not UTF-8
// text and holds NUL bytes (a forged or corrupted message) is dead-lettered
// on PostgreSQL as on SQLite: the record keeps it as base64 and says so,
// TROUPE_DLQ and a replay get its bytes as they were. (PostgreSQL's text
// column refused it: the dead letter could never be recorded, and the
// message was retried for ever.)
func TestBinaryPayloadIsDeadLettered(t *testing.T) {
	t.Parallel()
	stores := map[string]func(testing.TB) store.Store{
		"sqlite":   func(t testing.TB) store.Store { return sqlite.NewTestStore(t) },
		"postgres": func(t testing.TB) store.Store { return postgrestest.NewTestStore(t) },
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := setupDeadLetters(t, open(t), 0)
			st, js, dl := e.st, e.js, e.dl
			payload := []byte("{\"task_id\":\"\x00\xff\xfe\"}\x00")
			e.reviewFailsForGood(t, payload, errors.New("invalid character '\x00' looking for beginning of value"))

			dls, err := st.DeadLetterList(ctx, store.DeadLetterListParams{})
			require.NoError(t, err)
			require.Len(t, dls, 1, "recorded")
			d := dls[0]
			require.Equal(t, "base64", d.Headers[bus.HeaderPayloadEncoding])
			require.Equal(t, payload, bus.DeadLetterPayload(d))
			require.NotContains(t, d.Reason, "\x00")
			dlq, err := js.Stream(ctx, bus.StreamDLQ)
			require.NoError(t, err)
			cp, err := dlq.GetLastMsgForSubject(ctx, "troupe.dlq.review")
			require.NoError(t, err)
			require.Equal(t, payload, cp.Data)

			_, err = dl.Replay(ctx, d.ID, "ops")
			require.NoError(t, err)
			unsent, err := st.OutboxListUnsent(ctx, 10)
			require.NoError(t, err)
			require.Len(t, unsent, 1)
			require.Equal(t, payload, unsent[0].Payload, "replayed as it was")
			require.Empty(t, unsent[0].Headers[bus.HeaderPayloadEncoding])
		})
	}
}
