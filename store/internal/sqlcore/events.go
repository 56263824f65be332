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
			query, args, err := eventInsert(e)
			if err != nil {
				return err
			}
			if err := q.write(ctx, nil, query, args...); err != nil {
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

// eventInsert is the statement that inserts e.
func eventInsert(e store.Event) (string, []any, error) {
	data, err := toJSON(e.Data)
	if err != nil {
		return "", nil, fmt.Errorf("event %s: %w", e.Kind, err)
	}
	return `INSERT INTO events (` + eventColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		[]any{orNewID(e.ID), e.JobID, e.TaskID, e.OutputID, e.Kind, e.Role, e.Revision, e.Message, toMicros(orNow(e.Time)), data}, nil
}

// EventEmit appends events to jobs' timelines and queues msgs, msgs[i]
// announcing events[i], all or none. Where the database takes a WITH
// clause that writes (PostgreSQL), each event and its message are one
// statement: half the statements for the server to run.
func (q *Queries) EventEmit(ctx context.Context, events []store.Event, msgs []store.OutboxMessage) error {
	if len(events) != len(msgs) {
		return fmt.Errorf("emitting events: %d events but %d messages", len(events), len(msgs))
	}
	if len(events) == 0 {
		return nil
	}
	err := q.inTx(ctx, func(q *Queries) error {
		if !q.dialect.WritingWith() {
			if err := q.EventInsert(ctx, events); err != nil {
				return err
			}
			return q.OutboxInsert(ctx, msgs)
		}
		for i, e := range events {
			query, args, err := eventInsert(e)
			if err != nil {
				return err
			}
			if err := q.outboxInsertOne(ctx, msgs[i], "WITH e AS ("+query+") ", args); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("emitting events: %w", err)
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
