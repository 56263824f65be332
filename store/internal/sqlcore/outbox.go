package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

func scanOutboxMessage(s scanner) (store.OutboxMessage, error) {
	var (
		m         store.OutboxMessage
		headers   string
		createdAt int64
	)
	if err := s.Scan(&m.Seq, &m.Subject, &m.MsgID, &m.Payload, &headers, &createdAt); err != nil {
		return m, err
	}
	if err := fromJSON(headers, &m.Headers); err != nil {
		return m, fmt.Errorf("outbox message %d headers: %w", m.Seq, err)
	}
	m.CreatedAt = fromMicros(createdAt)
	return m, nil
}

// OutboxInsert adds messages to publish, all or none. Seq is assigned by
// the store (msgs[i].Seq is ignored); a message without a MsgID gets one.
func (q *Queries) OutboxInsert(ctx context.Context, msgs []store.OutboxMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	err := q.inTx(ctx, func(q *Queries) error {
		for _, m := range msgs {
			headers, err := toJSON(m.Headers)
			if err != nil {
				return fmt.Errorf("message on %s: %w", m.Subject, err)
			}
			payload := m.Payload
			if payload == nil {
				payload = []byte{} // NOT NULL
			}
			if _, err := q.exec(ctx, `INSERT INTO outbox (subject, msg_id, payload, headers, created_at)
				VALUES (?, ?, ?, ?, ?)`,
				m.Subject, orNewID(m.MsgID), payload, headers, toMicros(orNow(m.CreatedAt))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inserting outbox messages: %w", err)
	}
	return nil
}

// OutboxListUnsent returns up to limit (100 when not positive) unsent
// messages in Seq order.
func (q *Queries) OutboxListUnsent(ctx context.Context, limit int) ([]store.OutboxMessage, error) {
	msgs, err := queryAll(ctx, q, scanOutboxMessage,
		`SELECT seq, subject, msg_id, payload, headers, created_at FROM outbox
		WHERE sent_at IS NULL ORDER BY seq LIMIT ?`, limitOr(limit, 100))
	if err != nil {
		return nil, fmt.Errorf("listing unsent outbox messages: %w", err)
	}
	return msgs, nil
}

// OutboxMarkSent marks messages sent. Seqs that do not exist or are
// already sent are ignored.
func (q *Queries) OutboxMarkSent(ctx context.Context, seqs []int64) error {
	const batch = 500 // well under every driver's limit on parameters
	sentAt := toMicros(now())
	for len(seqs) > 0 {
		n := min(len(seqs), batch)
		args := append([]any{sentAt}, anys(seqs[:n])...)
		if _, err := q.exec(ctx, `UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND seq IN (`+placeholders(n)+`)`,
			args...); err != nil {
			return fmt.Errorf("marking outbox messages sent: %w", err)
		}
		seqs = seqs[n:]
	}
	return nil
}
