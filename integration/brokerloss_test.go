package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// Item 17 of issue 15: a broker that comes back without its streams, and
// streams that lose their messages, are recovered at once, not after
// staleAfter (5 minutes by default, which these tests keep).

// TestNATSRestartOnEmptyStore: the NATS server is killed during a run of
// 300 jobs and started again on an empty store (a lost volume, a new
// node). The orchestrator creates the streams and consumers again,
// re-dispatches what was lost, the other services bind again, and every
// job ends well within staleAfter.
func TestNATSRestartOnEmptyStore(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection: slow")
	}
	t.Parallel()
	dbURL := testPGURL(t)
	node := newNATSNodes(t, 1)[0]
	node.start()
	// Calls of 500ms: the run lasts long enough to lose messages mid-run.
	s := startServices(t, node.url(), dbURL, writeConfig(t, `{"reliability": {"ackWait": "10s"}}`), "--offline-latency", "500ms")
	d := client(t, node.url())

	ids := submitMany(t, d, 300)
	require.Eventually(t, func() bool {
		c := countJobs(t, d)
		return c != nil && c[schemas.JobDone] >= 50
	}, 2*time.Minute, 50*time.Millisecond)
	require.Positive(t, streamMsgs(t, d, "TROUPE_TASKS"), "tasks wait in their stream when the server goes")
	node.kill()
	require.NoError(t, os.RemoveAll(filepath.Join(node.dir, "jetstream")))
	restarted := time.Now()
	node.start()

	waitAllEnded(t, d, len(ids), 3*time.Minute)
	took := time.Since(restarted)
	report(t, "every job ended %s after the server came back on an empty store (staleAfter: 5m)", took.Round(time.Millisecond))
	require.Less(t, took, 2*time.Minute, "well within staleAfter")
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
	for name := range s.procs {
		require.Eventually(t, func() bool { return s.ready(name) == 200 }, time.Minute, 50*time.Millisecond, "%s ready again", name)
	}
}

// TestStreamsDeletedMidRun: every stream of a running troupe dev is
// deleted with an admin connection while 300 jobs run; they are created
// again and every job ends well within staleAfter.
func TestStreamsDeletedMidRun(t *testing.T) {
	t.Parallel()
	loseMidRun(t, "deleted", func(ctx context.Context, js jetstream.JetStream, name string) error {
		return js.DeleteStream(ctx, name)
	},
		"TROUPE_TASKS", "TROUPE_REVIEW", "TROUPE_EVENTS", "TROUPE_DLQ", "TROUPE_ADVISORIES")
}

// TestStreamsPurgedMidRun: the task, review and event streams are purged
// while 300 jobs run; what they held is sent again at once and every job
// ends well within staleAfter.
func TestStreamsPurgedMidRun(t *testing.T) {
	t.Parallel()
	loseMidRun(t, "purged", func(ctx context.Context, js jetstream.JetStream, name string) error {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		return s.Purge(ctx)
	}, "TROUPE_TASKS", "TROUPE_REVIEW", "TROUPE_EVENTS")
}

// loseMidRun runs 300 jobs on troupe dev, does lose to the streams once
// some are done, and checks that every job ends well within staleAfter.
func loseMidRun(t *testing.T, what string, lose func(ctx context.Context, js jetstream.JetStream, name string) error, streams ...string) {
	t.Helper()
	// Calls of 200ms: the run lasts long enough to lose messages mid-run.
	d := startDev(t, "--offline-latency", "200ms")
	ids := submitMany(t, d, 300)
	require.Eventually(t, func() bool {
		c := countJobs(t, d)
		return c != nil && c[schemas.JobDone] >= 10
	}, 2*time.Minute, 20*time.Millisecond)

	js, err := jetstream.New(d.NC)
	require.NoError(t, err)
	ctx := context.Background()
	waiting := streamMsgs(t, d, "TROUPE_TASKS")
	require.Positive(t, waiting, "tasks wait in their stream when it is lost")
	t.Logf("%d task messages in TROUPE_TASKS when the streams were %s", waiting, what)
	lost := time.Now()
	for _, name := range streams {
		require.NoError(t, lose(ctx, js, name))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("troupe dev said:\n%s", tail(d.logs.String(), 400000))
		}
	})
	waitAllEnded(t, d, len(ids), 2*time.Minute)
	took := time.Since(lost)
	report(t, "every job ended %s after the streams were %s (staleAfter: 5m)", took.Round(time.Millisecond), what)
	require.Less(t, took, 2*time.Minute, "well within staleAfter")
	ends := reconcile(t, d, ids)
	require.Equal(t, len(ids), ends[schemas.JobDone])
}

// TestPurgeRedispatchesAtOnce: a task message purged from TROUPE_TASKS is
// re-dispatched at once, with staleAfter at its default of 5 minutes.
func TestPurgeRedispatchesAtOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// No developer worker in troupe dev: the task waits in the stream.
	d := startDevIn(t, dir, nil, "--roles", "pm,architect,tester,writer,devops")
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Purged", Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
	require.Eventually(t, func() bool { return streamMsgs(t, d, "TROUPE_TASKS") == 1 }, 10*time.Second, 10*time.Millisecond)

	js, err := jetstream.New(d.NC)
	require.NoError(t, err)
	s, err := js.Stream(context.Background(), "TROUPE_TASKS")
	require.NoError(t, err)
	purged := time.Now()
	require.NoError(t, s.Purge(context.Background()))
	waitEvent(t, events, func(ev schemas.Event) bool {
		return ev.JobID == job.ID && ev.Kind == schemas.EventTaskRedispatched
	})
	took := time.Since(purged)
	report(t, "re-dispatched %s after the purge (staleAfter: 5m)", took.Round(time.Millisecond))
	require.Less(t, took, time.Minute)
	require.Equal(t, uint64(1), streamMsgs(t, d, "TROUPE_TASKS"))
}
