package worker

import (
	"context"
	"sync"
)

// slots bounds the tasks a worker runs at once. Unlike a buffered
// channel, its limit can change while tasks run: a lower limit lets the
// running tasks finish and takes no new ones until they are under it.
//
// The fetch loop reserves slots before it pulls, one per message it asks
// for; a message that arrives turns its reservation into a running task
// only if the limit still has room, which it may not after setLimit
// lowered it.
type slots struct {
	mu       sync.Mutex
	limit    int
	running  int
	reserved int
	freed    chan struct{} // signalled when a slot frees or the limit grows
}

func newSlots(limit int) *slots {
	return &slots{limit: limit, freed: make(chan struct{}, 1)}
}

// reserve takes a slot for a message to come, waiting for one; false when
// ctx ended first.
func (s *slots) reserve(ctx context.Context) bool {
	for {
		if ctx.Err() != nil {
			return false
		}
		if s.tryReserve() {
			return true
		}
		select {
		case <-s.freed:
		case <-ctx.Done():
			return false
		}
	}
}

// tryReserve takes a slot for a message to come when one is free.
func (s *slots) tryReserve() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running+s.reserved < s.limit {
		s.reserved++
		return true
	}
	return false
}

// start turns a reservation into a running task; false when the limit,
// lowered since, has no room for it (the reservation is given up).
func (s *slots) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved--
	if s.running < s.limit {
		s.running++
		return true
	}
	return false
}

// unreserve gives up n reservations no message came for.
func (s *slots) unreserve(n int) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	s.reserved -= n
	s.mu.Unlock()
	s.signal()
}

// release frees a running task's slot.
func (s *slots) release() {
	s.mu.Lock()
	s.running--
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
	return s.running
}

func (s *slots) limitNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}
