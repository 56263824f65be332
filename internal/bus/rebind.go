package bus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Consumption consumes a durable consumer for as long as it runs, and
// binds to the consumer again when it comes back after it was lost: a
// stream deleted, or a server restarted on an empty store. Only the
// orchestrator creates streams and consumers (its topology watcher does
// so again when they are gone); every other service waits for them here.
type Consumption struct {
	js       jetstream.JetStream
	stream   string
	consumer string
	handle   jetstream.MessageHandler
	opts     []jetstream.PullConsumeOpt
	log      zerolog.Logger

	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	stopped bool
	quit    chan struct{}
	done    chan struct{}
}

// rebindWait bounds the wait between two looks for a lost consumer.
const rebindWait = 2 * time.Second

// Consume hands the messages of cons (a durable consumer, bound with
// js.Consumer) to handle until Drain. Losing the consumer is not an
// error: it is bound again as soon as it exists, and the loss and the
// rebinding are logged.
func Consume(js jetstream.JetStream, cons jetstream.Consumer, log zerolog.Logger,
	handle jetstream.MessageHandler, opts ...jetstream.PullConsumeOpt) (*Consumption, error) {
	info := cons.CachedInfo()
	c := &Consumption{
		js: js, stream: info.Stream, consumer: info.Name, handle: handle, log: log.With().Str("consumer", info.Name).Logger(),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	c.opts = append(append([]jetstream.PullConsumeOpt{}, opts...), jetstream.ConsumeErrHandler(c.onError))
	cc, err := cons.Consume(handle, c.opts...)
	if err != nil {
		return nil, err
	}
	c.cc = cc
	go c.supervise(cc)
	return c, nil
}

// IsConsumerLost reports whether err says a consumer (or its stream) is
// gone: deleted, or nobody answers its pulls.
func IsConsumerLost(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrNoResponders)
}

// onError stops a consumption whose consumer is gone, so supervise binds
// again when it is back, rather than pulling from nothing.
func (c *Consumption) onError(cc jetstream.ConsumeContext, err error) {
	if IsConsumerLost(err) {
		cc.Stop()
	}
}

// supervise waits for the running consumption to close; unless Drain or
// Stop closed it, it binds again once the consumer exists.
func (c *Consumption) supervise(cc jetstream.ConsumeContext) {
	defer close(c.done)
	for {
		select {
		case <-cc.Closed():
		case <-c.quit:
			<-cc.Closed()
			return
		}
		if c.isStopped() {
			return
		}
		c.log.Warn().Str("stream", c.stream).Msg("consumer lost: binding it again when it exists")
		next, ok := c.rebind()
		if !ok {
			return
		}
		cc = next
		c.log.Info().Str("stream", c.stream).Msg("consumer bound again")
	}
}

// rebind looks for the consumer, waiting longer after each miss (up to
// rebindWait), until it exists or the consumption is stopped.
func (c *Consumption) rebind() (jetstream.ConsumeContext, bool) {
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cons, err := c.js.Consumer(ctx, c.stream, c.consumer)
		cancel()
		if err == nil {
			c.mu.Lock()
			if c.stopped {
				c.mu.Unlock()
				return nil, false
			}
			cc, err := cons.Consume(c.handle, c.opts...)
			if err == nil {
				c.cc = cc
				c.mu.Unlock()
				return cc, true
			}
			c.mu.Unlock()
		}
		select {
		case <-c.quit:
			return nil, false
		case <-time.After(wait):
		}
		wait = min(2*wait, rebindWait)
	}
}

func (c *Consumption) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// Drain stops taking messages, lets the ones taken be handled, and waits
// within ctx until the consumption closed; past ctx it is stopped.
func (c *Consumption) Drain(ctx context.Context) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		<-c.done
		return
	}
	c.stopped = true
	cc := c.cc
	c.mu.Unlock()
	Drain(ctx, cc)
	close(c.quit)
	<-c.done
}
