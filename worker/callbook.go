package worker

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/store"
)

// callBook records model calls, and keeps the ones the store refused (a
// database outage) until it takes them: a call that was paid for is
// counted in the job's totals and budget however long the outage lasts,
// as long as the process does. Rows keep their IDs, so a write made again
// after an unanswered commit records a call once.
type callBook struct {
	store store.Store
	log   zerolog.Logger
	// retry is the longest wait between two attempts. Defaults to 30s.
	retry time.Duration

	mu      sync.Mutex
	pending []store.ModelCall
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
	started bool
	closed  sync.Once
}

func newCallBook(st store.Store, log zerolog.Logger) *callBook {
	return &callBook{store: st, log: log, retry: 30 * time.Second,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// record writes rows now, or keeps them for later when the store
// refuses them.
func (b *callBook) record(ctx context.Context, rows []store.ModelCall) {
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
	if !b.started {
		b.started = true
		go b.run()
	}
	b.mu.Unlock()
	b.log.Warn().Err(err).Int("calls", len(rows)).Int("waiting", n).Msg("recording model calls failed; kept to write when the store answers")
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// waiting is how many calls wait for the store.
func (b *callBook) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// run writes the kept calls, waiting longer after each failure.
func (b *callBook) run() {
	defer close(b.done)
	wait := 250 * time.Millisecond
	for {
		select {
		case <-b.quit:
			return
		case <-b.wake:
		case <-time.After(wait):
		}
		ok := b.flush(context.Background())
		switch {
		case ok:
			wait = 250 * time.Millisecond
		default:
			wait = min(2*wait, b.retry)
		}
	}
}

// flush writes every kept call and reports whether the store took them.
func (b *callBook) flush(ctx context.Context) bool {
	b.mu.Lock()
	rows := b.pending
	b.pending = nil
	b.mu.Unlock()
	if len(rows) == 0 {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.store.ModelCallInsert(ctx, rows); err != nil {
		b.mu.Lock()
		b.pending = append(rows, b.pending...)
		b.mu.Unlock()
		return false
	}
	b.log.Info().Int("calls", len(rows)).Msg("model calls kept during a store outage recorded")
	return true
}

// close writes what is kept within ctx and stops; calls the store still
// refuses are lost with the process, and said so.
func (b *callBook) close(ctx context.Context) {
	b.closed.Do(func() { b.stop(ctx) })
}

func (b *callBook) stop(ctx context.Context) {
	b.mu.Lock()
	started := b.started
	b.started = true // no new flusher
	b.mu.Unlock()
	if started {
		close(b.quit)
		<-b.done
	}
	for b.waiting() > 0 && !b.flush(ctx) {
		select {
		case <-ctx.Done():
			b.log.Error().Int("calls", b.waiting()).Msg("model calls not recorded: the store did not answer before the worker stopped; the jobs' totals miss them")
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}
