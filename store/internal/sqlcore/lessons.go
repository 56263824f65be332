package sqlcore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const lessonColumns = `id, text, scope, review_id, job_id, created_at`

func scanLesson(s scanner) (store.Lesson, error) {
	var (
		l         store.Lesson
		createdAt int64
	)
	if err := s.Scan(&l.ID, &l.Text, &l.Scope, &l.ReviewID, &l.JobID, &createdAt); err != nil {
		return l, err
	}
	l.CreatedAt = fromMicros(createdAt)
	return l, nil
}

// LessonInsert adds lessons to MEMORY, all or none.
func (q *Queries) LessonInsert(ctx context.Context, lessons []store.Lesson) error {
	if len(lessons) == 0 {
		return nil
	}
	err := q.inTx(ctx, func(q *Queries) error {
		for _, l := range lessons {
			if err := q.write(ctx, nil, `INSERT INTO lessons (`+lessonColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
				orNewID(l.ID), l.Text, l.Scope, l.ReviewID, l.JobID, toMicros(orNow(l.CreatedAt))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inserting lessons: %w", err)
	}
	return nil
}

// LessonList returns lessons newest first, filtered by scope (a role also
// matches "all" when p.IncludeGlobal) and by text, one page at a time.
func (q *Queries) LessonList(ctx context.Context, p store.LessonListParams) ([]store.Lesson, error) {
	var w where
	switch {
	case p.Scope != "" && p.IncludeGlobal:
		w.add(`scope IN (?, 'all')`, p.Scope)
	case p.Scope != "":
		w.add(`scope = ?`, p.Scope)
	}
	if p.Query != "" {
		w.add(`lower(text) LIKE ? ESCAPE '\'`, likeContains(p.Query))
	}
	w.before(p.Before, p.BeforeID)
	args := append(w.args, limitOr(p.Limit, 100))
	lessons, err := queryAll(ctx, q, scanLesson,
		`SELECT `+lessonColumns+` FROM lessons`+w.String()+` ORDER BY created_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing lessons: %w", err)
	}
	return lessons, nil
}

// decodeLessons reads the JSON array of lesson objects that TaskStart's
// statement builds on PostgreSQL.
func decodeLessons(data []byte) ([]store.Lesson, error) {
	var rows []struct {
		ID        string `json:"id"`
		Text      string `json:"text"`
		Scope     string `json:"scope"`
		ReviewID  string `json:"review_id"`
		JobID     string `json:"job_id"`
		CreatedAt int64  `json:"created_at"`
	}
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, fmt.Errorf("reading lessons: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil // as LessonList
	}
	lessons := make([]store.Lesson, len(rows))
	for i, r := range rows {
		lessons[i] = store.Lesson{ID: r.ID, Text: r.Text, Scope: r.Scope, ReviewID: r.ReviewID, JobID: r.JobID, CreatedAt: fromMicros(r.CreatedAt)}
	}
	return lessons, nil
}
