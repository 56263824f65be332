package sqlcore

import (
	"context"
	"fmt"
	"time"

	"github.com/troupe-dev/troupe/store"
)

const deadLetterColumns = `id, source, subject, payload, headers, reason, class, attempts, stream_seq,
	created_at, replay_of, status, task_id, job_id, stream, resolved_by, resolved_at`

// DeadLetterOpen is the status of a dead letter nobody has acted on yet.
const DeadLetterOpen = "open"

func scanDeadLetter(s scanner) (store.DeadLetter, error) {
	var (
		d                                store.DeadLetter
		headers                          string
		streamSeq, createdAt, resolvedAt int64
	)
	if err := s.Scan(&d.ID, &d.Source, &d.Subject, &d.Payload, &headers, &d.Reason, &d.Class, &d.Attempts,
		&streamSeq, &createdAt, &d.ReplayOf, &d.Status, &d.TaskID, &d.JobID,
		&d.Stream, &d.ResolvedBy, &resolvedAt); err != nil {
		return d, err
	}
	if err := fromJSON(headers, &d.Headers); err != nil {
		return d, fmt.Errorf("dead letter %s headers: %w", d.ID, err)
	}
	d.StreamSeq = uint64(streamSeq)
	d.CreatedAt = fromMicros(createdAt)
	d.ResolvedAt = fromOptMicros(resolvedAt)
	return d, nil
}

// fromOptMicros is fromMicros for a column where 0 means unset: 0 gives the
// zero time.
func fromOptMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}

// toOptMicros is toMicros for a column where 0 means unset: the zero time
// gives 0.
func toOptMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return toMicros(t)
}

// DeadLetterInsert records a dead letter, with status "open" when d.Status
// is empty. When a dead letter with d.ID exists it writes nothing and
// reports created false.
func (q *Queries) DeadLetterInsert(ctx context.Context, d store.DeadLetter) (bool, error) {
	d.ID = orNewID(d.ID)
	d.CreatedAt = orNow(d.CreatedAt)
	if d.Status == "" {
		d.Status = DeadLetterOpen
	}
	headers, err := toJSON(d.Headers)
	if err != nil {
		return false, fmt.Errorf("inserting dead letter: %w", err)
	}
	res, err := q.exec(ctx, `INSERT INTO dead_letters (`+deadLetterColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO NOTHING`,
		d.ID, d.Source, d.Subject, d.Payload, headers, d.Reason, d.Class, d.Attempts,
		int64(d.StreamSeq), toMicros(d.CreatedAt), d.ReplayOf, d.Status, d.TaskID, d.JobID,
		d.Stream, d.ResolvedBy, toOptMicros(d.ResolvedAt))
	if err != nil {
		return false, fmt.Errorf("inserting dead letter from %s: %w", d.Source, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("inserting dead letter from %s: %w", d.Source, err)
	}
	return n > 0, nil
}

// DeadLetterGetByID returns one dead letter, or ErrNotFound.
func (q *Queries) DeadLetterGetByID(ctx context.Context, id string) (store.DeadLetter, error) {
	d, err := queryOne(ctx, q, scanDeadLetter, `SELECT `+deadLetterColumns+` FROM dead_letters WHERE id = ?`, id)
	if err != nil {
		return store.DeadLetter{}, fmt.Errorf("getting dead letter %s: %w", id, err)
	}
	return d, nil
}

// DeadLetterList returns dead letters newest first, filtered, one page at a
// time, up to p.Limit (100 when not positive).
func (q *Queries) DeadLetterList(ctx context.Context, p store.DeadLetterListParams) ([]store.DeadLetter, error) {
	var w where
	for _, f := range []struct{ col, v string }{
		{`status`, p.Status},
		{`source`, p.Source},
		{`class`, p.Class},
		{`job_id`, p.JobID},
		{`task_id`, p.TaskID},
		{`replay_of`, p.ReplayOf},
	} {
		if f.v != "" {
			w.add(f.col+` = ?`, f.v)
		}
	}
	if p.Query != "" {
		w.add(`lower(reason) LIKE ? ESCAPE '\'`, likeContains(p.Query))
	}
	w.before(p.Before, p.BeforeID)
	args := append(w.args, limitOr(p.Limit, 100))
	dls, err := queryAll(ctx, q, scanDeadLetter,
		`SELECT `+deadLetterColumns+` FROM dead_letters`+w.String()+` ORDER BY created_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	return dls, nil
}

// DeadLetterResolve moves a dead letter from "open" to status, recording by
// and the time, and reports whether it moved. It returns ErrNotFound when
// the dead letter does not exist.
func (q *Queries) DeadLetterResolve(ctx context.Context, id, status, by string) (bool, error) {
	moved, err := q.execChanged(ctx, `SELECT 1 FROM dead_letters WHERE id = ?`, id,
		`UPDATE dead_letters SET status = ?, resolved_by = ?, resolved_at = ? WHERE id = ? AND status = ?`,
		status, by, toMicros(now()), id, DeadLetterOpen)
	if err != nil {
		return false, fmt.Errorf("resolving dead letter %s: %w", id, err)
	}
	return moved, nil
}
