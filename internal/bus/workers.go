package bus

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/schemas"
)

// PingWorkers asks every running worker for its schemas.WorkerInfo and
// collects the answers that arrive within wait (or until ctx ends),
// ordered by role then id.
func PingWorkers(ctx context.Context, nc *nats.Conn, subj Subjects, wait time.Duration) ([]schemas.WorkerInfo, error) {
	out, err := ping[schemas.WorkerInfo](ctx, nc, subj.WorkersPing(), wait, func(w schemas.WorkerInfo) string { return w.ID })
	slices.SortFunc(out, func(a, b schemas.WorkerInfo) int {
		return cmp.Or(strings.Compare(a.Role, b.Role), strings.Compare(a.ID, b.ID))
	})
	return out, err
}

// PingProcesses asks every running Troupe process for its
// schemas.ProcessInfo and collects the answers that arrive within wait
// (or until ctx ends), ordered by host, then pid.
func PingProcesses(ctx context.Context, nc *nats.Conn, subj Subjects, wait time.Duration) ([]schemas.ProcessInfo, error) {
	out, err := ping[schemas.ProcessInfo](ctx, nc, subj.ProcessesPing(), wait, func(p schemas.ProcessInfo) string { return p.ID })
	slices.SortFunc(out, func(a, b schemas.ProcessInfo) int {
		return cmp.Or(strings.Compare(a.Host, b.Host), cmp.Compare(a.PID, b.PID), strings.Compare(a.ID, b.ID))
	})
	return out, err
}

// ping publishes a request on subject and collects the answers, those
// that decode into a T with an id (the first of each id), that arrive
// within wait.
func ping[T any](ctx context.Context, nc *nats.Conn, subject string, wait time.Duration, id func(T) string) ([]T, error) {
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []T
	seen := map[string]bool{}
	for {
		select {
		case m := <-replies:
			var v T
			if json.Unmarshal(m.Data, &v) == nil && id(v) != "" && !seen[id(v)] {
				seen[id(v)] = true
				out = append(out, v)
			}
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	return out, nil
}
