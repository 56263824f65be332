package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// live fans the events of TROUPE_EVENTS out to the browsers that follow
// them: one NATS subscription for the process, one channel per browser.
// Events are hints to refresh, not a record, so a slow browser loses the
// ones it cannot take and a core subscription (no consumer) suffices.
type live struct {
	nc   *nats.Conn
	subj bus.Subjects

	mu      sync.Mutex
	sub     *nats.Subscription
	clients map[chan schemas.Event]struct{}
	closed  chan struct{}
}

func newLive(nc *nats.Conn, subj bus.Subjects) *live {
	return &live{nc: nc, subj: subj, clients: map[chan schemas.Event]struct{}{}, closed: make(chan struct{})}
}

// join adds a browser; the subscription starts with the first.
func (l *live) join() (chan schemas.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sub == nil {
		sub, err := l.nc.Subscribe(l.subj.Event("*", "*"), l.fanOut)
		if err != nil {
			return nil, err
		}
		l.sub = sub
	}
	ch := make(chan schemas.Event, 64)
	l.clients[ch] = struct{}{}
	return ch, nil
}

// leave removes a browser; the subscription ends with the last.
func (l *live) leave(ch chan schemas.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.clients, ch)
	if len(l.clients) == 0 && l.sub != nil {
		_ = l.sub.Unsubscribe()
		l.sub = nil
	}
}

func (l *live) fanOut(m *nats.Msg) {
	var ev schemas.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.clients {
		select {
		case ch <- ev:
		default: // this browser is behind; it refreshes on the next one
		}
	}
}

func (l *live) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
}

// liveEvent is what a browser gets: enough to decide whether to refresh.
type liveEvent struct {
	Kind     string `json:"kind"`
	JobID    string `json:"job_id"`
	TaskID   string `json:"task_id,omitempty"`
	OutputID string `json:"output_id,omitempty"`
	Role     string `json:"role,omitempty"`
	Revision int    `json:"revision"`
}

// events streams job events as server-sent events.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusInternalServerError)
		return
	}
	ch, err := s.live.join()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer s.live.leave(ch)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	flusher.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case ev := <-ch:
			data, _ := json.Marshal(liveEvent{Kind: ev.Kind, JobID: ev.JobID, TaskID: ev.TaskID, OutputID: ev.OutputID, Role: ev.Role, Revision: ev.Revision})
			fmt.Fprintf(w, "event: job\ndata: %s\n\n", data)
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case <-r.Context().Done():
			return
		case <-s.live.closed:
			return
		}
		flusher.Flush()
	}
}
