package sqlcore

import (
	"time"

	"github.com/troupe-dev/troupe/store"
)

// startedEvent is the event TaskStart writes on PostgreSQL, in its one
// statement: an insert of the event and one of its outbox message, each
// from the row the update started (WITH … INSERT … SELECT … FROM t), so
// that a message that starts nothing writes neither, and nothing fails.
type startedEvent struct {
	msg    store.OutboxMessage
	direct bool  // the message is handed to the relay once committed
	seq    int64 // its outbox seq, read with the started row
	// handed is the message's index in the transaction's committed
	// rows, once handed over; -1 before.
	handed int
}

// prepare returns the WITH clauses (each beginning with a comma) that write
// p.Event and p.EventMessage, and their arguments, which come after the
// update's. The parameters are cast: in a SELECT list PostgreSQL cannot
// infer their types from the columns.
func (e *startedEvent) prepare(q *Queries, p store.TaskStartParams) (string, []any, error) {
	_, evArgs, err := eventInsert(*p.Event)
	if err != nil {
		return "", nil, err
	}
	m := p.EventMessage
	headers, err := toJSON(m.Headers)
	if err != nil {
		return "", nil, err
	}
	if m.Payload == nil {
		m.Payload = []byte{} // NOT NULL
	}
	m.MsgID, m.CreatedAt = orNewID(m.MsgID), orNow(m.CreatedAt)
	with := `, e AS (INSERT INTO events (` + eventColumns + `)
			SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT),
				CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT) FROM t)`
	args := append(evArgs, m.Subject, m.MsgID, m.Payload, headers, toMicros(m.CreatedAt))
	d := q.direct
	e.handed = -1
	if d != nil && (d.Match == nil || d.Match(m.Subject)) {
		// Claimed for the relay that publishes it once this commits (see
		// outboxInsertOne).
		e.direct = true
		m.Attempts, m.LastError, m.NextAttemptAt = 0, "", time.Time{}
		with += `, o AS (INSERT INTO outbox (subject, msg_id, payload, headers, created_at, claimed_by, claimed_until)
			SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BYTEA), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS BIGINT)
			FROM t RETURNING seq)`
		args = append(args, d.Owner, toMicros(now().Add(d.Lease)))
	} else {
		with += `, o AS (INSERT INTO outbox (subject, msg_id, payload, headers, created_at)
			SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BYTEA), CAST(? AS TEXT), CAST(? AS BIGINT) FROM t RETURNING seq)`
	}
	e.msg = m
	return with, args, nil
}

// handOver puts the message among the rows q's transaction hands to the
// relay once it commits when the statement started the task, and takes it
// out when a run again of the statement (a group of PostgreSQL
// transactions sent again one by one) did not.
func (e *startedEvent) handOver(q *Queries, started bool) {
	if !e.direct || q.committed == nil {
		return
	}
	rows := q.committed
	switch {
	case started && e.handed < 0:
		e.handed = len(*rows)
		m := e.msg
		m.Seq = e.seq
		*rows = append(*rows, m)
	case started:
		(*rows)[e.handed].Seq = e.seq
	case e.handed >= 0:
		// Only a transaction of its own runs its statement again, so
		// the message is its last row.
		*rows = (*rows)[:e.handed]
		e.handed = -1
	}
}
