package sqlcore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

const taskColumns = `id, job_id, key, role, instructions, depends_on, status, revision, attempts, reason, feedback, created_at, updated_at`

func scanTask(s scanner) (store.Task, error) {
	var r taskRow
	if err := s.Scan(r.dest()...); err != nil {
		return r.Task, err
	}
	return r.task()
}

// taskRow scans a task's columns, also as part of a wider row.
type taskRow struct {
	store.Task
	dependsOn            string
	createdAt, updatedAt int64
}

func (r *taskRow) dest() []any {
	return []any{&r.ID, &r.JobID, &r.Key, &r.Role, &r.Instructions, &r.dependsOn, &r.Status, &r.Revision,
		&r.Attempts, &r.Reason, &r.Feedback, &r.createdAt, &r.updatedAt}
}

func (r *taskRow) task() (store.Task, error) {
	t := r.Task
	if err := fromJSON(r.dependsOn, &t.DependsOn); err != nil {
		return t, fmt.Errorf("task %s depends_on: %w", t.ID, err)
	}
	t.CreatedAt, t.UpdatedAt = fromMicros(r.createdAt), fromMicros(r.updatedAt)
	return t, nil
}

// taskInsert inserts the ord-th task of a new job. ord keeps the plan's
// order among tasks created at the same instant.
func (q *Queries) taskInsert(ctx context.Context, job store.Job, ord int, t store.Task, onErr func(error) error) error {
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
	return q.write(ctx, func(err error) error {
		if onErr != nil {
			err = onErr(err)
		}
		return fmt.Errorf("inserting task %s: %w", t.Key, err)
	}, `INSERT INTO tasks (`+taskColumns+`, ord)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.JobID, t.Key, t.Role, t.Instructions, dependsOn, t.Status, t.Revision, t.Attempts,
		t.Reason, t.Feedback, toMicros(t.CreatedAt), toMicros(t.UpdatedAt), ord)
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

// JobGetWithTasks returns a job and its tasks in creation order, as
// JobGetByID and TaskListByJob do, in one query (one round trip) when the
// job has tasks; ErrNotFound when there is no such job.
func (q *Queries) JobGetWithTasks(ctx context.Context, id string) (store.Job, []store.Task, error) {
	var job store.Job
	tasks, err := queryAll(ctx, q, func(s scanner) (store.Task, error) {
		var jr jobRow
		var tr taskRow
		if err := s.Scan(append(jr.dest(), tr.dest()...)...); err != nil {
			return store.Task{}, err
		}
		var err error
		if job, err = jr.job(); err != nil {
			return store.Task{}, err
		}
		return tr.task()
	}, `SELECT `+prefixed("j.", jobColumns)+`, `+prefixed("t.", taskColumns)+`
		FROM jobs j JOIN tasks t ON t.job_id = j.id
		WHERE j.id = ? AND t.job_id = ? ORDER BY t.created_at, t.ord, t.id`, id, id)
	if err == nil && len(tasks) == 0 {
		job, err := q.JobGetByID(ctx, id) // a job without tasks, or none
		return job, nil, err
	}
	if err != nil {
		return store.Job{}, nil, fmt.Errorf("getting job %s with its tasks: %w", id, err)
	}
	return job, tasks, nil
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
	return q.update(ctx, p.Else, "updating task "+p.ID, `SELECT 1 FROM tasks WHERE id = ?`, p.ID,
		`UPDATE tasks SET `+strings.Join(sets, ", ")+w.String(), append(args, w.args...)...)
}

// TaskStart is store.Querier's. Where the database allows (PostgreSQL) it
// is one statement; the worker's notStarted reads apart what it refuses.
func (q *Queries) TaskStart(ctx context.Context, p store.TaskStartParams) (store.TaskStarted, bool, error) {
	update := `UPDATE tasks SET status = ?, attempts = attempts + 1, updated_at = ?
		WHERE id = ? AND revision = ? AND status IN (?, ?) AND (job_id = ? AND role = ?) IS TRUE
		AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.task_id = ? AND o.revision = ?)
		RETURNING ` + taskColumns
	// Two things keep PostgreSQL's plan on the unique indexes, also when it
	// was made while the tables were empty and is kept by a pooled
	// connection: the job and role are compared in an expression no index
	// serves (otherwise some connections scanned tasks by role and status),
	// and the output is looked up by the parameters, not by tasks.id (the
	// two ids differ in collation, which kept the planner off outputs'
	// unique index: it scanned every output of the revision).
	args := []any{schemas.TaskRunning, toMicros(now()), p.ID, p.Revision, schemas.TaskQueued, schemas.TaskRunning, p.JobID, p.Role, p.ID, p.Revision}
	nUpdate := len(args)
	var (
		t       store.Task
		j       store.Job
		lessons []store.Lesson
		started bool
	)
	var err error
	if q.dialect.WritingWith() {
		// One statement, held back when it is a transaction of its own
		// (so that on PostgreSQL it commits with other write-only
		// transactions). The updated task always has its
		// job (tasks.job_id is a foreign key), so the join drops no row
		// the update wrote.
		var tr taskRow
		var jr jobRow
		var lessonsJSON []byte
		dest := append(tr.dest(), jr.dest()...)
		stmt := `WITH t AS (` + update + `)
			SELECT ` + prefixed("t.", taskColumns) + `, ` + prefixed("j.", jobColumns)
		if p.Lessons > 0 {
			// The lessons come with the row, as one JSON array: no round
			// trip of their own.
			stmt += `, (SELECT coalesce(json_agg(json_build_object('id', l.id, 'text', l.text, 'scope', l.scope,
					'review_id', l.review_id, 'job_id', l.job_id, 'created_at', l.created_at)
					ORDER BY l.created_at DESC, l.id DESC), '[]')::text
				FROM (SELECT ` + lessonColumns + ` FROM lessons WHERE scope IN (?, 'all')
					ORDER BY created_at DESC, id DESC LIMIT ?) l)`
			args = append(args, p.Role, p.Lessons)
			dest = append(dest, &lessonsJSON)
		}
		var ev startedEvent
		if p.Event != nil {
			with, evArgs, err := ev.prepare(q, p)
			if err != nil {
				return store.TaskStarted{}, false, err
			}
			// The event and its message are written by the statement,
			// from the row it started: none when it started nothing.
			stmt = strings.Replace(stmt, `WITH t AS (`+update+`)`, `WITH t AS (`+update+`)`+with, 1) + `, (SELECT seq FROM o)`
			args = slices.Concat(args[:nUpdate], evArgs, args[nUpdate:])
			dest = append(dest, &ev.seq)
		}
		stmt += ` FROM t JOIN jobs j ON j.id = t.job_id`
		scanFor := func(q *Queries) func(Row) error {
			return func(row Row) error {
				// Each time the statement runs (see outboxInsertOne).
				err := row.Scan(dest...)
				started = err == nil
				ev.handOver(q, started)
				if errors.Is(err, sql.ErrNoRows) {
					return nil // not started; the row must not fail once come
				}
				return err
			}
		}
		if q.pool == nil {
			// In the caller's transaction, which needs the answer now.
			err = scanFor(q)(q.queryRow(ctx, stmt, args...))
		} else {
			err = q.inTx(ctx, func(q *Queries) error { return q.writeReturning(ctx, scanFor(q), nil, stmt, args...) })
		}
		if err == nil && started {
			if t, err = tr.task(); err == nil {
				j, err = jr.job()
			}
			if err == nil && p.Lessons > 0 {
				lessons, err = decodeLessons(lessonsJSON)
			}
			started = err == nil
		}
	} else {
		err = q.inTx(ctx, func(q *Queries) error {
			started = false // a run again starts from nothing
			var err error
			t, err = queryOne(ctx, q, scanTask, update, args...)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			j, err = queryOne(ctx, q, scanJob, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, t.JobID)
			if err == nil && p.Lessons > 0 {
				lessons, err = q.LessonList(ctx, store.LessonListParams{Scope: p.Role, IncludeGlobal: true, Limit: p.Lessons})
			}
			if err == nil && p.Event != nil {
				err = q.EventEmit(ctx, []store.Event{*p.Event}, []store.OutboxMessage{p.EventMessage})
			}
			started = err == nil
			return err
		})
	}
	if err != nil {
		return store.TaskStarted{}, false, fmt.Errorf("starting task %s: %w", p.ID, err)
	}
	if !started {
		return store.TaskStarted{}, false, nil
	}
	return store.TaskStarted{Task: t, Job: j, Lessons: lessons}, true, nil
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
		notFound := func(err error) error {
			if q.dialect.IsForeignKeyViolation(err) {
				return fmt.Errorf("adding tasks to job %s: %w", jobID, store.ErrNotFound)
			}
			return err
		}
		for i, t := range tasks {
			if err := q.taskInsert(ctx, job, next+i, t, notFound); err != nil {
				return err
			}
		}
		return nil
	})
}
