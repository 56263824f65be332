package orchestrator_test

import (
	"context"
	"fmt"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/orchestrator"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/storetest"
)

// relayBatch is how many outbox rows one op relays: about what 80 jobs of
// the default plan write.
const relayBatch = 1000

// BenchmarkRelay times the outbox relay: one op is Relay.Flush of
// relayBatch due rows (claimed 256 at a time, the default batch,
// published asynchronously to an embedded JetStream server, acks awaited,
// marked sent). The rows are a pipeline's mix — a quarter task messages,
// a quarter review requests, half events — inserted while the timer is
// stopped. Per store backend, the server either syncs JetStream writes
// the server's default way (sync=default, as a NATS server deployed with
// its defaults) or fsyncs each one (sync=always, as troupe dev), and the
// relay publishes one message at a time or in atomic batches per stream.
// msgs/s is rows relayed per second. Run it with
//
//	go test -run '^$' -bench Relay ./orchestrator/
//
// PostgreSQL is benchmarked when TROUPE_TEST_DATABASE_URL is set.
func BenchmarkRelay(b *testing.B) {
	storetest.ForEachBackend(b, func(b *testing.B, st store.Store) {
		for _, syncAlways := range []bool{false, true} {
			for _, atomic := range []bool{false, true} {
				name := "sync=default"
				if syncAlways {
					name = "sync=always"
				}
				cfg := orchestrator.RelayConfig{Logger: zerolog.Nop()}
				if atomic {
					name += "/atomic"
					cfg.StreamOf = bus.Topology{}.StreamOf()
				} else {
					name += "/one-by-one"
				}
				b.Run(name, func(b *testing.B) {
					js := startJetStream(b, syncAlways)
					ctx := context.Background()
					relay := orchestrator.NewRelay(cfg, st, js)
					rows := outboxRows(b, relayBatch)
					b.ReportAllocs()
					for b.Loop() {
						b.StopTimer()
						insertRows(b, st, rows)
						b.StartTimer()
						sent, err := relay.Flush(ctx)
						if err != nil {
							b.Fatal(err)
						}
						if sent != relayBatch {
							b.Fatalf("relayed %d of %d rows", sent, relayBatch)
						}
					}
					msgs := float64(b.N * relayBatch)
					b.ReportMetric(msgs/b.Elapsed().Seconds(), "msgs/s")
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/msgs, "ns/msg")
				})
			}
		}
	})
}

// startJetStream starts an embedded NATS server on a free port with its
// files in a temporary directory, creates Troupe's streams and consumers,
// and connects to it.
func startJetStream(b *testing.B, syncAlways bool) jetstream.JetStream {
	b.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: b.TempDir(), Port: -1, SyncAlways: syncAlways})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(srv.ClientURL(), "bench", zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	if err := (bus.Topology{Roles: schemas.Roles}).Ensure(context.Background(), js); err != nil {
		b.Fatal(err)
	}
	return js
}

// outboxRows returns n outbox rows as the services write them: for each
// task a task message, a review request, and its output_staged and
// output_promoted events. Message ids are set by insertRows, fresh each
// time, so the stream's duplicate window drops none.
func outboxRows(b *testing.B, n int) []store.OutboxMessage {
	b.Helper()
	subj := bus.Subjects{Prefix: bus.DefaultPrefix}
	rows := make([]store.OutboxMessage, 0, n)
	for i := 0; len(rows) < n; i++ {
		role := schemas.Roles[i%len(schemas.Roles)]
		jobID, taskID, outputID := uuid.NewString(), uuid.NewString(), uuid.NewString()
		var (
			m   store.OutboxMessage
			err error
		)
		switch i % 4 {
		case 0:
			m, err = bus.OutboxJSON(subj.Task(role), "", schemas.TaskMessage{TaskID: taskID, JobID: jobID, Key: role, Role: role})
		case 1:
			m, err = bus.OutboxJSON(subj.Review(role), "", schemas.ReviewRequest{OutputID: outputID, TaskID: taskID, JobID: jobID, Role: role})
		default:
			kind, msg := schemas.EventOutputStaged, "3 files"
			if i%4 == 3 {
				kind, msg = schemas.EventOutputPromoted, "3 files promoted by rules"
			}
			m, err = bus.OutboxJSON(subj.Event(jobID, kind), "", schemas.Event{
				ID: uuid.NewString(), JobID: jobID, TaskID: taskID, OutputID: outputID, Kind: kind, Role: role,
				Message: msg, Time: time.Now().UTC(),
			})
		}
		if err != nil {
			b.Fatal(err)
		}
		rows = append(rows, m)
	}
	return rows
}

// insertRows writes rows to the outbox in one transaction, each with a
// fresh message id, under the pprof label troupe_bench=seed so a CPU
// profile can leave it out: go tool pprof -tagignore troupe_bench=seed.
func insertRows(b *testing.B, st store.Store, rows []store.OutboxMessage) {
	b.Helper()
	batch := fmt.Sprintf("%s.", uuid.NewString()[:8])
	for i := range rows {
		rows[i].MsgID = fmt.Sprintf("bench.%s%d", batch, i)
	}
	var err error
	pprof.Do(context.Background(), pprof.Labels("troupe_bench", "seed"), func(ctx context.Context) {
		err = st.OutboxInsert(ctx, rows)
	})
	if err != nil {
		b.Fatalf("inserting outbox rows: %v", err)
	}
}
