package orchestrator

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/internal/bus"
)

// WatchConfig configures the topology watcher: the orchestrator is the
// one service whose NATS user may create streams and consumers, so it is
// the one that makes them again when a broker lost them (a server
// restarted on an empty store, a stream deleted), and that tells the
// reconciler at once when a stream lost messages.
type WatchConfig struct {
	// Topology is what the watcher keeps. Nil disables the watcher.
	Topology *bus.Topology
	// Interval between two looks at the streams and consumers; an
	// advisory of a purge or a deletion makes one at once. Defaults to 2s.
	Interval time.Duration
}

func (c WatchConfig) withDefaults() WatchConfig {
	if c.Interval <= 0 {
		c.Interval = 2 * time.Second
	}
	return c
}

// topoWatcher looks at the topology every Interval and when an advisory
// says a stream lost messages. What is missing it creates again; a stream
// that lost messages (created again, purged, its sequence gone backwards)
// starts a reconciliation at once, rather than after StaleAfter.
type topoWatcher struct {
	s    *Service
	cfg  WatchConfig
	topo bus.Topology

	marks  map[string]bus.StreamMark // what the last look saw
	failed bool                      // the last look failed: logged once

	mu      sync.Mutex
	reasons []string        // advisories since the last look
	streams map[string]bool // the streams they say lost messages
	wake    chan struct{}

	subs []*nats.Subscription
	done chan struct{}
	quit context.CancelFunc
}

func newTopoWatcher(s *Service, cfg WatchConfig) *topoWatcher {
	cfg = cfg.withDefaults()
	return &topoWatcher{s: s, cfg: cfg, topo: *cfg.Topology, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (w *topoWatcher) start(ctx context.Context) {
	ctx, w.quit = context.WithCancel(ctx)
	subs, err := w.topo.WatchLosses(w.s.nc, w.lost)
	if err != nil {
		w.s.log.Warn().Err(err).Msg("not listening to stream advisories: a purge is reconciled after staleAfter")
	}
	w.subs = subs
	if state, err := w.topo.Inspect(ctx, w.s.js); err == nil {
		w.marks = state.Marks
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(w.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-w.wake:
			}
			w.look(ctx)
		}
	}()
}

func (w *topoWatcher) stop() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
	if w.quit != nil {
		w.quit()
	}
	<-w.done
}

// lost is told by an advisory that a stream lost messages.
func (w *topoWatcher) lost(stream, reason string) {
	w.mu.Lock()
	w.reasons = append(w.reasons, reason)
	if w.streams == nil {
		w.streams = map[string]bool{}
	}
	w.streams[stream] = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// look creates again what is missing and starts a reconciliation when a
// stream lost messages.
func (w *topoWatcher) look(ctx context.Context) {
	w.mu.Lock()
	lost, streams := w.reasons, w.streams
	w.reasons, w.streams = nil, nil
	w.mu.Unlock()
	if streams == nil {
		streams = map[string]bool{}
	}
	since := time.Now()
	state, err := w.topo.Inspect(ctx, w.s.js)
	if err == nil && len(state.Missing) > 0 {
		w.s.log.Warn().Strs("missing", state.Missing).Msg("streams or consumers are gone: creating them again")
		if err = w.topo.Ensure(ctx, w.s.js); err == nil {
			lost = append(lost, "created again: "+strings.Join(state.Missing, ", "))
			for _, name := range state.MissingStreams {
				streams[name] = true
			}
			state, err = w.topo.Inspect(ctx, w.s.js)
		}
	}
	if err != nil {
		if !w.failed && ctx.Err() == nil {
			w.s.log.Warn().Err(err).Msg("looking at the streams and consumers; trying again")
		}
		w.failed = true
		w.mu.Lock() // keep them for the next look
		w.reasons = append(w.reasons, lost...)
		if w.streams == nil {
			w.streams = map[string]bool{}
		}
		for name := range streams {
			w.streams[name] = true
		}
		w.mu.Unlock()
		return
	}
	w.failed = false
	for name, now := range state.Marks {
		if before, ok := w.marks[name]; ok {
			if why := before.Lost(now); why != "" {
				lost = append(lost, "stream "+name+" "+why)
				streams[name] = true
			}
		}
	}
	w.marks = state.Marks
	if len(lost) > 0 {
		w.s.log.Warn().Strs("why", lost).Msg("the broker lost messages: reconciling at once")
		w.s.recon.now(since, streams)
	}
}
