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
// for; a message that arrives turns its reservation into a running task.
// After setLimit lowered the limit there may be no room for it: it then
// keeps its reservation (so no more is pulled for it) and waits, in
// waitStart, until a running task ends.
type slots struct {
	mu       sync.Mutex
	limit    int
	running  int
	reserved int
	// changed is closed, and replaced, whenever a task ends, a
	// reservation is given up or the limit changes: every waiter looks
	// again.
	changed chan struct{}
}

func newSlots(limit int) *slots {
	return &slots{limit: limit, changed: make(chan struct{})}
}

// reserve takes a slot for a message to come, waiting for one; false when
// ctx ended first.
func (s *slots) reserve(ctx context.Context) bool {
	return s.waitFor(ctx, s.takeReservation)
}

// tryReserve takes a slot for a message to come when one is free.
func (s *slots) tryReserve() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeReservation()
}

// start turns a reservation into a running task when the limit has room
// for it; when it has not (it was lowered since the pull), the
// reservation stays, for waitStart.
func (s *slots) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeStart()
}

// takeReservation and takeStart change the counts when the limit has
// room; the lock is held.
func (s *slots) takeReservation() bool {
	if s.running+s.reserved < s.limit {
		s.reserved++
		return true
	}
	return false
}

func (s *slots) takeStart() bool {
	if s.running < s.limit {
		s.reserved--
		s.running++
		return true
	}
	return false
}

// waitStart waits until the limit has room for a reserved message that
// start refused, and starts it; false, with the reservation given up,
// when ctx ended first.
func (s *slots) waitStart(ctx context.Context) bool {
	if s.waitFor(ctx, s.takeStart) {
		return true
	}
	s.unreserve(1)
	return false
}

// waitFor waits until take, called with the lock held, succeeds; false
// when ctx ended first.
func (s *slots) waitFor(ctx context.Context, take func() bool) bool {
	for {
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			return false
		}
		if take() {
			s.mu.Unlock()
			return true
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// unreserve gives up n reservations no message came for.
func (s *slots) unreserve(n int) {
	if n == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved -= n
	s.signal()
}

// release frees a running task's slot.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
	s.signal()
}

func (s *slots) setLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = n
	s.signal()
}

// signal wakes every waiter; the lock is held.
func (s *slots) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
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
