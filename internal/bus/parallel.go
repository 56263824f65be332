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
