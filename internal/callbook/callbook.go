// Package callbook records model calls, and keeps the ones a store
// outage refused until the store takes them.
package callbook

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/store"
)

// Store is where calls are recorded.
type Store interface {
	ModelCallInsert(ctx context.Context, calls []store.ModelCall) error
}

// Book records model calls, and keeps the ones the store refused (a
// database outage) until it takes them: a call that was paid for is
// counted in the job's totals and budget however long the outage lasts,
// as long as the process does. Rows keep their IDs, so a write made again
// after an unanswered commit records a call once.
type Book struct {
	store Store
	log   zerolog.Logger
	// Retry is the longest wait between two attempts. Defaults to 30s.
	Retry time.Duration

	flushMu sync.Mutex // one flush at a time
	mu      sync.Mutex
	pending []store.ModelCall
	wake    chan struct{}
	quit    chan struct{} // of the running flusher, if any
	done    chan struct{}
}

// New returns a book that records into st; Close stops it.
func New(st Store, log zerolog.Logger) *Book {
	return &Book{store: st, log: log, Retry: 30 * time.Second, wake: make(chan struct{}, 1)}
}

// Record writes rows now, or keeps them for later when the store
// refuses them.
func (b *Book) Record(ctx context.Context, rows []store.ModelCall) {
	if len(rows) == 0 {
		return
	}
	err := b.store.ModelCallInsert(context.WithoutCancel(ctx), rows)
	if err == nil {
		return
	}
	b.mu.Lock()
	b.pending = append(b.pending, rows...)
	n := len(b.pending)
	if b.quit == nil {
		b.quit, b.done = make(chan struct{}), make(chan struct{})
		go b.run(b.quit, b.done)
	}
	b.mu.Unlock()
	b.log.Warn().Err(err).Int("calls", len(rows)).Int("waiting", n).Msg("recording model calls failed; kept to write when the store answers")
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Waiting is how many calls wait for the store.
func (b *Book) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// run writes the kept calls, waiting longer after each failure.
func (b *Book) run(quit, done chan struct{}) {
	defer close(done)
	wait := 250 * time.Millisecond
	for {
		select {
		case <-quit:
			return
		case <-b.wake:
		case <-time.After(wait):
		}
		ok := b.flush(context.Background())
		switch {
		case ok:
			wait = 250 * time.Millisecond
		default:
			wait = min(2*wait, b.Retry)
		}
	}
}

// flush writes every kept call and reports whether the store took them.
// The calls stay kept (and counted by Waiting) until it did.
func (b *Book) flush(ctx context.Context) bool {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	rows := slices.Clone(b.pending)
	b.mu.Unlock()
	if len(rows) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.store.ModelCallInsert(ctx, rows); err != nil {
		return false
	}
	b.mu.Lock()
	b.pending = slices.Delete(b.pending, 0, len(rows))
	b.mu.Unlock()
	b.log.Info().Int("calls", len(rows)).Msg("model calls kept during a store outage recorded")
	return true
}

// Close writes what is kept within ctx and stops the flusher; calls the
// store still refuses are lost with the process, and said so. A book
// closed can be used again.
func (b *Book) Close(ctx context.Context) {
	b.mu.Lock()
	quit, done := b.quit, b.done
	b.quit, b.done = nil, nil
	b.mu.Unlock()
	if quit != nil {
		close(quit)
		<-done
	}
	for b.Waiting() > 0 && !b.flush(ctx) {
		select {
		case <-ctx.Done():
			b.log.Error().Int("calls", b.Waiting()).Msg("model calls not recorded: the store did not answer before the process stopped; the jobs' totals miss them")
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}
