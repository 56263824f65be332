package sqlcore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/store"
)

const taskColumns = `id, job_id, key, role, instructions, depends_on, status, revision, attempts, reason, feedback, created_at, updated_at`

func scanTask(s scanner) (store.Task, error) {
	var (
		t                    store.Task
		dependsOn            string
		createdAt, updatedAt int64
	)
	if err := s.Scan(&t.ID, &t.JobID, &t.Key, &t.Role, &t.Instructions, &dependsOn, &t.Status, &t.Revision,
		&t.Attempts, &t.Reason, &t.Feedback, &createdAt, &updatedAt); err != nil {
		return t, err
	}
	if err := fromJSON(dependsOn, &t.DependsOn); err != nil {
		return t, fmt.Errorf("task %s depends_on: %w", t.ID, err)
	}
	t.CreatedAt, t.UpdatedAt = fromMicros(createdAt), fromMicros(updatedAt)
	return t, nil
}

// taskInsert inserts the ord-th task of a new job. ord keeps the plan's
// order among tasks created at the same instant.
func (q *Queries) taskInsert(ctx context.Context, job store.Job, ord int, t store.Task) error {
	t.ID = orNewID(t.ID)
	t.JobID = job.ID
	if t.CreatedAt.IsZero() {
		t.CreatedAt = job.CreatedAt
	}
	t.CreatedAt = orNow(t.CreatedAt)
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = t.CreatedAt
	}
	t.UpdatedAt = orNow(t.UpdatedAt)
	dependsOn, err := toJSON(t.DependsOn)
	if err != nil {
		return fmt.Errorf("task %s: %w", t.Key, err)
	}
	if _, err := q.exec(ctx, `INSERT INTO tasks (`+taskColumns+`, ord)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.JobID, t.Key, t.Role, t.Instructions, dependsOn, t.Status, t.Revision, t.Attempts,
		t.Reason, t.Feedback, toMicros(t.CreatedAt), toMicros(t.UpdatedAt), ord); err != nil {
		return fmt.Errorf("inserting task %s: %w", t.Key, err)
	}
	return nil
}

// TaskGetByID returns one task, or ErrNotFound.
func (q *Queries) TaskGetByID(ctx context.Context, id string) (store.Task, error) {
	t, err := queryOne(ctx, q, scanTask, `SELECT `+taskColumns+` FROM tasks WHERE id = ?`, id)
	if err != nil {
		return store.Task{}, fmt.Errorf("getting task %s: %w", id, err)
	}
	return t, nil
}

// TaskListByJob returns a job's tasks in creation order: the order of the
// plan JobCreate was given.
func (q *Queries) TaskListByJob(ctx context.Context, jobID string) ([]store.Task, error) {
	tasks, err := queryAll(ctx, q, scanTask,
		`SELECT `+taskColumns+` FROM tasks WHERE job_id = ? ORDER BY created_at, ord, id`, jobID)
	if err != nil {
		return nil, fmt.Errorf("listing tasks of job %s: %w", jobID, err)
	}
	return tasks, nil
}

// TaskUpdate changes a task when its status is one of p.From (any when
// empty) and, when p.Revision is set, its revision equals *p.Revision, and
// reports whether it changed. It returns ErrNotFound when the task does not
// exist.
func (q *Queries) TaskUpdate(ctx context.Context, p store.TaskUpdateParams) (bool, error) {
	sets := []string{`updated_at = ?`}
	args := []any{toMicros(now())}
	set := func(col string, v any) {
		sets = append(sets, col+` = ?`)
		args = append(args, v)
	}
	if p.Status != nil {
		set(`status`, *p.Status)
	}
	if p.SetRevision != nil {
		set(`revision`, *p.SetRevision)
	}
	if p.Reason != nil {
		set(`reason`, *p.Reason)
	}
	if p.Feedback != nil {
		set(`feedback`, *p.Feedback)
	}
	if p.IncrAttempts {
		sets = append(sets, `attempts = attempts + 1`)
	}
	var w where
	w.add(`id = ?`, p.ID)
	if len(p.From) > 0 {
		w.add(`status IN (`+placeholders(len(p.From))+`)`, anys(p.From)...)
	}
	if p.Revision != nil {
		w.add(`revision = ?`, *p.Revision)
	}
	changed, err := q.execChanged(ctx, `SELECT 1 FROM tasks WHERE id = ?`, p.ID,
		`UPDATE tasks SET `+strings.Join(sets, ", ")+w.String(), append(args, w.args...)...)
	if err != nil {
		return false, fmt.Errorf("updating task %s: %w", p.ID, err)
	}
	return changed, nil
}

// TaskListStale returns tasks whose status is one of p.Statuses and whose
// updated_at is before p.UpdatedBefore, least recently updated first, up to
// p.Limit (100 when not positive). No statuses matches no task.
func (q *Queries) TaskListStale(ctx context.Context, p store.TaskListStaleParams) ([]store.Task, error) {
	if len(p.Statuses) == 0 {
		return nil, nil
	}
	args := append(anys(p.Statuses), toMicros(p.UpdatedBefore), limitOr(p.Limit, 100))
	tasks, err := queryAll(ctx, q, scanTask,
		`SELECT `+taskColumns+` FROM tasks
		WHERE status IN (`+placeholders(len(p.Statuses))+`) AND updated_at < ?
		ORDER BY updated_at, id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing stale tasks: %w", err)
	}
	return tasks, nil
}

// TaskCount counts the tasks of role (every role when empty) whose status
// is one of statuses. No statuses counts none.
func (q *Queries) TaskCount(ctx context.Context, role string, statuses []string) (int, error) {
	if len(statuses) == 0 {
		return 0, nil
	}
	var w where
	w.add(`status IN (`+placeholders(len(statuses))+`)`, anys(statuses)...)
	if role != "" {
		w.add(`role = ?`, role)
	}
	var n int
	if err := q.queryRow(ctx, `SELECT count(*) FROM tasks`+w.String(), w.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting tasks: %w", err)
	}
	return n, nil
}

// TaskInsert adds tasks to an existing job, after its other tasks.
func (q *Queries) TaskInsert(ctx context.Context, jobID string, tasks []store.Task) error {
	return q.inTx(ctx, func(q *Queries) error {
		var next int
		if err := q.queryRow(ctx, `SELECT COALESCE(MAX(ord) + 1, 0) FROM tasks WHERE job_id = ?`, jobID).Scan(&next); err != nil {
			return fmt.Errorf("adding tasks to job %s: %w", jobID, err)
		}
		job := store.Job{ID: jobID, CreatedAt: time.Now()}
		for i, t := range tasks {
			if err := q.taskInsert(ctx, job, next+i, t); err != nil {
				if q.dialect.IsForeignKeyViolation(err) {
					return fmt.Errorf("adding tasks to job %s: %w", jobID, store.ErrNotFound)
				}
				return err
			}
		}
		return nil
	})
}
