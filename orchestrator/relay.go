package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/store"
)

// RelayConfig configures the outbox relay.
type RelayConfig struct {
	// Interval between looks at the outbox when nothing woke the relay: it
	// catches rows written by other processes. Defaults to 1s.
	Interval time.Duration
	// Batch is how many rows one pass publishes at once. Defaults to 256.
	Batch int
	// Subjects, when set, are the NATS subject filters of the rows this
	// relay claims: those its NATS user may publish (bus.Subjects'
	// WorkerSubjects, ReviewSubjects). Rows on other subjects are left to
	// another relay; the orchestrator's claims every row, so each row has a
	// relay that may publish it. Defaults to every row.
	Subjects []string
	Logger   zerolog.Logger
}

// Relay publishes the outbox: messages written in the same transaction as
// the change they announce, each with the message id fixed when the row was
// written, so a crash between commit and publish loses nothing and a
// publish repeated after one is deduplicated by the stream.
type Relay struct {
	cfg   RelayConfig
	store store.Store
	js    jetstream.JetStream
	wake  chan struct{}
	stop  context.CancelFunc
	done  chan struct{}
	once  sync.Once
	owner string
}

// NewRelay returns a relay; Start runs it.
func NewRelay(cfg RelayConfig, st store.Store, js jetstream.JetStream) *Relay {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 256
	}
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8])
	return &Relay{cfg: cfg, store: st, js: js, wake: make(chan struct{}, 1), done: make(chan struct{}), owner: owner}
}

// Notify wakes the relay: call it after committing outbox rows.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start runs the relay until Stop.
func (r *Relay) Start(ctx context.Context) {
	ctx, r.stop = context.WithCancel(context.WithoutCancel(ctx))
	go r.run(ctx)
}

// Stop stops the relay, then publishes what is left within ctx.
func (r *Relay) Stop(ctx context.Context) {
	r.once.Do(func() {
		if r.stop == nil {
			return
		}
		r.stop()
		<-r.done
		if _, err := r.Flush(ctx); err != nil {
			r.cfg.Logger.Warn().Err(err).Msg("outbox rows left unsent at stop; the next relay sends them")
		}
	})
}

func (r *Relay) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := r.Flush(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn().Err(err).Msg("outbox relay; trying again shortly")
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// Flush publishes every due outbox row and reports how many it sent. Rows
// are claimed first, so relays in other processes do not publish them at
// the same time; a row that fails is retried later with a growing delay,
// without holding up the rows behind it.
func (r *Relay) Flush(ctx context.Context) (int, error) {
	sent := 0
	for {
		msgs, err := r.store.OutboxClaim(ctx, store.OutboxClaimParams{Owner: r.owner, Limit: r.cfg.Batch, Lease: 30 * time.Second, Subjects: r.cfg.Subjects})
		if err != nil {
			return sent, fmt.Errorf("claiming the outbox: %w", err)
		}
		if len(msgs) == 0 {
			return sent, nil
		}
		ok, failed := r.publish(ctx, msgs)
		if len(ok) > 0 {
			if err := r.store.OutboxMarkSent(context.WithoutCancel(ctx), ok); err != nil {
				return sent, fmt.Errorf("marking the outbox sent: %w", err)
			}
			sent += len(ok)
		}
		var firstErr error
		for _, f := range failed {
			delay := min(time.Second<<min(f.msg.Attempts, 6), time.Minute)
			attempts, err := r.store.OutboxMarkFailed(context.WithoutCancel(ctx), f.msg.Seq, f.err.Error(), time.Now().Add(delay))
			if err != nil {
				return sent, fmt.Errorf("recording an outbox failure: %w", err)
			}
			log := r.cfg.Logger.Warn()
			if attempts >= 10 {
				log = r.cfg.Logger.Error()
			}
			log.Err(f.err).Str("subject", f.msg.Subject).Int64("seq", f.msg.Seq).Int("attempts", attempts).Dur("retry_in", delay).Msg("outbox publish failed")
			if firstErr == nil {
				firstErr = f.err
			}
		}
		if len(ok) == 0 && firstErr != nil {
			return sent, firstErr // nothing went through: wait before trying again
		}
	}
}

type failedPublish struct {
	msg store.OutboxMessage
	err error
}

// publish publishes msgs asynchronously and waits for every ack.
func (r *Relay) publish(ctx context.Context, msgs []store.OutboxMessage) (ok []int64, failed []failedPublish) {
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		f, err := r.js.PublishMsgAsync(bus.NewMsg(m.Subject, m.MsgID, m.Payload, m.Headers))
		if err != nil {
			failed = append(failed, failedPublish{m, err})
			continue
		}
		futures[i] = f
	}
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			ok = append(ok, msgs[i].Seq)
		case err := <-f.Err():
			failed = append(failed, failedPublish{msgs[i], err})
		case <-wait.Done():
			failed = append(failed, failedPublish{msgs[i], errors.New("no ack from JetStream within 10s")})
		}
	}
	return ok, failed
}
