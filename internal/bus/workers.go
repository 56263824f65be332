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
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subj.WorkersPing(), inbox, nil); err != nil {
		return nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []schemas.WorkerInfo
	for {
		select {
		case m := <-replies:
			var wi schemas.WorkerInfo
			if json.Unmarshal(m.Data, &wi) == nil && wi.ID != "" {
				out = append(out, wi)
			}
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	slices.SortFunc(out, func(a, b schemas.WorkerInfo) int {
		return cmp.Or(strings.Compare(a.Role, b.Role), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}
