package bus

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Parallel returns a Consume callback that handles up to n messages at
// once, each on its own goroutine counted in wg. The callback blocks while
// n run, so the consumer's buffer, not memory, absorbs a burst. Handlers
// must be safe to run concurrently: Troupe's are, because every state
// change is guarded by the state it expects (as when several replicas of
// a service share a consumer).
func Parallel(n int, wg *sync.WaitGroup, handle func(jetstream.Msg)) jetstream.MessageHandler {
	sem := make(chan struct{}, max(1, n))
	return func(msg jetstream.Msg) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			handle(msg)
		}()
	}
}

// Tracker counts requests in flight so that a service's Stop can wait for
// them. Unlike a bare WaitGroup it can be closed first: a request that
// arrives while Stop waits is refused, never added to a group being waited
// on.
type Tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter counts a request in; false once the tracker is closed.
func (t *Tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *Tracker) leave() { t.wg.Done() }

// Close refuses new requests and returns the group of those in flight, to
// wait on.
func (t *Tracker) Close() *sync.WaitGroup {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return &t.wg
}
