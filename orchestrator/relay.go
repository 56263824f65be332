package orchestrator

import (
	"context"
	"fmt"
	"sync"
	"time"

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
	Batch  int
	Logger zerolog.Logger
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
}

// NewRelay returns a relay; Start runs it.
func NewRelay(cfg RelayConfig, st store.Store, js jetstream.JetStream) *Relay {
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Batch == 0 {
		cfg.Batch = 256
	}
	return &Relay{cfg: cfg, store: st, js: js, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	failures := 0
	for {
		n, err := r.Flush(ctx)
		if err != nil && ctx.Err() == nil {
			failures++
			r.cfg.Logger.Warn().Err(err).Int("failures", failures).Msg("outbox relay")
		} else {
			failures = 0
		}
		if n > 0 && err == nil {
			continue // there may be more
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

// Flush publishes every unsent outbox row and reports how many it sent.
func (r *Relay) Flush(ctx context.Context) (int, error) {
	sent := 0
	for {
		msgs, err := r.store.OutboxListUnsent(ctx, r.cfg.Batch)
		if err != nil {
			return sent, fmt.Errorf("reading the outbox: %w", err)
		}
		if len(msgs) == 0 {
			return sent, nil
		}
		futures := make([]jetstream.PubAckFuture, len(msgs))
		for i, m := range msgs {
			f, err := r.js.PublishMsgAsync(bus.NewMsg(m.Subject, m.MsgID, m.Payload, m.Headers))
			if err != nil {
				return sent, fmt.Errorf("publishing %s: %w", m.Subject, err)
			}
			futures[i] = f
		}
		var ok []int64
		var firstErr error
		timeout := time.After(10 * time.Second)
	wait:
		for i, f := range futures {
			select {
			case <-f.Ok():
				ok = append(ok, msgs[i].Seq)
			case err := <-f.Err():
				if firstErr == nil {
					firstErr = fmt.Errorf("publishing %s: %w", msgs[i].Subject, err)
				}
			case <-timeout:
				firstErr = fmt.Errorf("publishing the outbox: no ack within 10s")
				break wait
			case <-ctx.Done():
				firstErr = ctx.Err()
				break wait
			}
		}
		if len(ok) > 0 {
			if err := r.store.OutboxMarkSent(context.WithoutCancel(ctx), ok); err != nil {
				return sent, fmt.Errorf("marking the outbox sent: %w", err)
			}
			sent += len(ok)
		}
		if firstErr != nil {
			return sent, firstErr
		}
	}
}
