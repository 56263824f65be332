package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Emit records events on their jobs' timelines and queues them in the
// outbox, inside the caller's transaction. Their messages are masked
// (redact): they often carry an error.
func Emit(ctx context.Context, q store.Querier, subj Subjects, events ...schemas.Event) error {
	if len(events) == 0 {
		return nil
	}
	msgs := make([]store.OutboxMessage, 0, len(events))
	for i := range events {
		var m store.OutboxMessage
		var err error
		if events[i], m, err = EventMessage(subj, events[i]); err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	return q.EventEmit(ctx, events, msgs)
}

// EventMessage gives ev an id and a time when it has none and returns it
// with the outbox message that announces it, for a write that records
// both (Emit; store.TaskStartParams.Event). Its message is masked
// (redact): it often carries an error.
func EventMessage(subj Subjects, ev schemas.Event) (schemas.Event, store.OutboxMessage, error) {
	ev.Message = redact.String(ev.Message)
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	m, err := OutboxJSON(subj.Event(ev.JobID, ev.Kind), "event."+ev.ID, ev)
	return ev, m, err
}

// OutboxJSON builds an outbox row carrying v as JSON.
func OutboxJSON(subject, msgID string, v any) (store.OutboxMessage, error) {
	payload, err := json.Marshal(v)
	if err != nil {
		return store.OutboxMessage{}, fmt.Errorf("encoding %s: %w", subject, err)
	}
	return store.OutboxMessage{Subject: subject, MsgID: msgID, Payload: payload}, nil
}
