package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const eventColumns = `id, job_id, task_id, output_id, kind, role, revision, message, occurred_at, data`

func scanEvent(s scanner) (store.Event, error) {
	var (
		e          store.Event
		data       string
		occurredAt int64
	)
	if err := s.Scan(&e.ID, &e.JobID, &e.TaskID, &e.OutputID, &e.Kind, &e.Role, &e.Revision, &e.Message,
		&occurredAt, &data); err != nil {
		return e, err
	}
	if err := fromJSON(data, &e.Data); err != nil {
		return e, fmt.Errorf("event %s data: %w", e.ID, err)
	}
	e.Time = fromMicros(occurredAt)
	return e, nil
}

// EventInsert appends events to jobs' timelines, all or none. An event
// without an ID gets one, and one without a Time gets now.
func (q *Queries) EventInsert(ctx context.Context, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	err := q.inTx(ctx, func(q *Queries) error {
		for _, e := range events {
			data, err := toJSON(e.Data)
			if err != nil {
				return fmt.Errorf("event %s: %w", e.Kind, err)
			}
			if _, err := q.exec(ctx, `INSERT INTO events (`+eventColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				orNewID(e.ID), e.JobID, e.TaskID, e.OutputID, e.Kind, e.Role, e.Revision, e.Message,
				toMicros(orNow(e.Time)), data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inserting events: %w", err)
	}
	return nil
}

// EventListByJob returns a job's events, oldest first; events of one
// instant come in the order they were inserted.
func (q *Queries) EventListByJob(ctx context.Context, jobID string) ([]store.Event, error) {
	events, err := queryAll(ctx, q, scanEvent,
		`SELECT `+eventColumns+` FROM events WHERE job_id = ? ORDER BY occurred_at, seq`, jobID)
	if err != nil {
		return nil, fmt.Errorf("listing events of job %s: %w", jobID, err)
	}
	return events, nil
}
