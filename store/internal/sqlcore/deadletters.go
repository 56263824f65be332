package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const deadLetterColumns = `id, source, subject, payload, headers, reason, class, attempts, stream_seq,
	created_at, replay_of, status, task_id, job_id`

// DeadLetterOpen is the status of a dead letter nobody has acted on yet.
const DeadLetterOpen = "open"

func scanDeadLetter(s scanner) (store.DeadLetter, error) {
	var (
		d                    store.DeadLetter
		headers              string
		streamSeq, createdAt int64
	)
	if err := s.Scan(&d.ID, &d.Source, &d.Subject, &d.Payload, &headers, &d.Reason, &d.Class, &d.Attempts,
		&streamSeq, &createdAt, &d.ReplayOf, &d.Status, &d.TaskID, &d.JobID); err != nil {
		return d, err
	}
	if err := fromJSON(headers, &d.Headers); err != nil {
		return d, fmt.Errorf("dead letter %s headers: %w", d.ID, err)
	}
	d.StreamSeq = uint64(streamSeq)
	d.CreatedAt = fromMicros(createdAt)
	return d, nil
}

// DeadLetterInsert records a dead letter, with status "open" when d.Status
// is empty.
func (q *Queries) DeadLetterInsert(ctx context.Context, d store.DeadLetter) error {
	d.ID = orNewID(d.ID)
	d.CreatedAt = orNow(d.CreatedAt)
	if d.Status == "" {
		d.Status = DeadLetterOpen
	}
	headers, err := toJSON(d.Headers)
	if err != nil {
		return fmt.Errorf("inserting dead letter: %w", err)
	}
	if _, err := q.exec(ctx, `INSERT INTO dead_letters (`+deadLetterColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		d.ID, d.Source, d.Subject, d.Payload, headers, d.Reason, d.Class, d.Attempts,
		int64(d.StreamSeq), toMicros(d.CreatedAt), d.ReplayOf, d.Status, d.TaskID, d.JobID); err != nil {
		return fmt.Errorf("inserting dead letter from %s: %w", d.Source, err)
	}
	return nil
}

// DeadLetterGetByID returns one dead letter, or ErrNotFound.
func (q *Queries) DeadLetterGetByID(ctx context.Context, id string) (store.DeadLetter, error) {
	d, err := queryOne(ctx, q, scanDeadLetter, `SELECT `+deadLetterColumns+` FROM dead_letters WHERE id = ?`, id)
	if err != nil {
		return store.DeadLetter{}, fmt.Errorf("getting dead letter %s: %w", id, err)
	}
	return d, nil
}

// DeadLetterList returns dead letters newest first, filtered by status and
// source, up to p.Limit (100 when not positive).
func (q *Queries) DeadLetterList(ctx context.Context, p store.DeadLetterListParams) ([]store.DeadLetter, error) {
	var w where
	if p.Status != "" {
		w.add(`status = ?`, p.Status)
	}
	if p.Source != "" {
		w.add(`source = ?`, p.Source)
	}
	args := append(w.args, limitOr(p.Limit, 100))
	dls, err := queryAll(ctx, q, scanDeadLetter,
		`SELECT `+deadLetterColumns+` FROM dead_letters`+w.String()+` ORDER BY created_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	return dls, nil
}

// DeadLetterSetStatus moves a dead letter to status when it is "open" and
// reports whether it moved. It returns ErrNotFound when the dead letter
// does not exist.
func (q *Queries) DeadLetterSetStatus(ctx context.Context, id, status string) (bool, error) {
	moved, err := q.execChanged(ctx, `SELECT 1 FROM dead_letters WHERE id = ?`, id,
		`UPDATE dead_letters SET status = ? WHERE id = ? AND status = ?`, status, id, DeadLetterOpen)
	if err != nil {
		return false, fmt.Errorf("setting dead letter %s status: %w", id, err)
	}
	return moved, nil
}
