package worker

import (
	"context"
	"sync"
)

// slots bounds the tasks a worker runs at once. Unlike a buffered
// channel, its limit can change while tasks run: a lower limit lets the
// running tasks finish and takes no new ones until they are under it.
type slots struct {
	mu    sync.Mutex
	limit int
	used  int
	freed chan struct{} // signalled when a slot frees or the limit grows
}

func newSlots(limit int) *slots {
	return &slots{limit: limit, freed: make(chan struct{}, 1)}
}

// acquire takes a slot, waiting for one; false when ctx ended first.
func (s *slots) acquire(ctx context.Context) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		if s.tryAcquire() {
			return true
		}
		select {
		case <-s.freed:
		case <-ctx.Done():
			return false
		}
	}
}

// tryAcquire takes a slot when one is free.
func (s *slots) tryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used < s.limit {
		s.used++
		return true
	}
	return false
}

func (s *slots) release() {
	s.mu.Lock()
	s.used--
	s.mu.Unlock()
	s.signal()
}

func (s *slots) setLimit(n int) {
	s.mu.Lock()
	s.limit = n
	s.mu.Unlock()
	s.signal()
}

func (s *slots) signal() {
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// inUse and limitNow read the state, for pings and tests.
func (s *slots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

func (s *slots) limitNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}
