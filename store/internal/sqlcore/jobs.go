package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const jobColumns = `id, title, brief, idempotency_key, status, reason, budget_tokens, attachments, created_at, updated_at`

func scanJob(s scanner) (store.Job, error) {
	var r jobRow
	if err := s.Scan(r.dest()...); err != nil {
		return r.Job, err
	}
	return r.job()
}

// jobRow scans a job's columns, also as part of a wider row.
type jobRow struct {
	store.Job
	attachments          string
	createdAt, updatedAt int64
}

func (r *jobRow) dest() []any {
	return []any{&r.ID, &r.Title, &r.Brief, &r.IdempotencyKey, &r.Status, &r.Reason, &r.BudgetTokens,
		&r.attachments, &r.createdAt, &r.updatedAt}
}

func (r *jobRow) job() (store.Job, error) {
	j := r.Job
	if err := fromJSON(r.attachments, &j.Attachments); err != nil {
		return j, fmt.Errorf("job %s attachments: %w", j.ID, err)
	}
	j.CreatedAt, j.UpdatedAt = fromMicros(r.createdAt), fromMicros(r.updatedAt)
	return j, nil
}

// JobCreate inserts a job with its tasks, or returns the job that holds the
// same idempotency key with created false.
func (q *Queries) JobCreate(ctx context.Context, p store.JobCreateParams) (store.Job, bool, error) {
	job := p.Job
	job.ID = orNewID(job.ID)
	job.CreatedAt = orNow(job.CreatedAt)
	if job.UpdatedAt.IsZero() {
		job.UpdatedAt = job.CreatedAt
	}
	job.UpdatedAt = orNow(job.UpdatedAt)
	attachments, err := toJSON(job.Attachments)
	if err != nil {
		return store.Job{}, false, fmt.Errorf("creating job: %w", err)
	}

	created, submitted := false, job
	err = q.inTx(ctx, func(q *Queries) error {
		// A transaction run again (a deadlock, a lost connection) starts
		// from nothing: an earlier run's insert was rolled back, and
		// another submission may have taken the key meanwhile.
		created, job = false, submitted
		// ON CONFLICT rather than look-then-insert: of two concurrent
		// creates with one key, the second waits for the first and then
		// writes nothing.
		insert := `INSERT INTO jobs (` + jobColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (idempotency_key) WHERE idempotency_key <> '' DO NOTHING`
		args := []any{job.ID, job.Title, job.Brief, job.IdempotencyKey, job.Status, job.Reason, job.BudgetTokens,
			attachments, toMicros(job.CreatedAt), toMicros(job.UpdatedAt)}
		if job.IdempotencyKey == "" {
			// Nothing to read back: held back with the tasks.
			if err := q.write(ctx, func(err error) error { return fmt.Errorf("inserting job: %w", err) }, insert, args...); err != nil {
				return err
			}
			created = true
			return q.tasksInsert(ctx, job, p.Tasks)
		}
		res, err := q.exec(ctx, insert, args...)
		if err != nil {
			return fmt.Errorf("inserting job: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("inserting job: %w", err)
		}
		if n == 0 {
			existing, err := queryOne(ctx, q, scanJob,
				`SELECT `+jobColumns+` FROM jobs WHERE idempotency_key = ? AND idempotency_key <> ''`, job.IdempotencyKey)
			if err != nil {
				return fmt.Errorf("reading job with idempotency key %q: %w", job.IdempotencyKey, err)
			}
			job = existing
			return nil
		}
		created = true
		return q.tasksInsert(ctx, job, p.Tasks)
	})
	if err != nil {
		return store.Job{}, false, fmt.Errorf("creating job: %w", err)
	}
	return job, created, nil
}

// tasksInsert inserts a new job's tasks in the order given.
func (q *Queries) tasksInsert(ctx context.Context, job store.Job, tasks []store.Task) error {
	for i, t := range tasks {
		if err := q.taskInsert(ctx, job, i, t, nil); err != nil {
			return err
		}
	}
	return nil
}

// JobGetByID returns one job, or ErrNotFound.
func (q *Queries) JobGetByID(ctx context.Context, id string) (store.Job, error) {
	j, err := queryOne(ctx, q, scanJob, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id)
	if err != nil {
		return store.Job{}, fmt.Errorf("getting job %s: %w", id, err)
	}
	return j, nil
}

// JobLock is JobGetByID holding the job's row until the transaction ends.
func (q *Queries) JobLock(ctx context.Context, id string) (store.Job, error) {
	j, err := queryOne(ctx, q, scanJob, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`+q.dialect.LockRow(), id)
	if err != nil {
		return store.Job{}, fmt.Errorf("locking job %s: %w", id, err)
	}
	return j, nil
}

// JobList returns jobs newest first, filtered, one page at a time. The
// role filter is a semi-join, so a job with many tasks of the role comes
// once.
func (q *Queries) JobList(ctx context.Context, p store.JobListParams) ([]store.Job, error) {
	var w where
	if p.Status != "" {
		w.add(`status = ?`, p.Status)
	}
	if p.Query != "" {
		w.add(`lower(title) LIKE ? ESCAPE '\'`, likeContains(p.Query))
	}
	if p.Role != "" {
		w.add(`EXISTS (SELECT 1 FROM tasks WHERE tasks.job_id = jobs.id AND tasks.role = ?)`, p.Role)
	}
	w.before(p.Before, p.BeforeID)
	args := append(w.args, limitOr(p.Limit, 50))
	jobs, err := queryAll(ctx, q, scanJob,
		`SELECT `+jobColumns+` FROM jobs`+w.String()+` ORDER BY created_at DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	return jobs, nil
}

// JobListStale returns jobs of p.Status whose updated_at is before
// p.UpdatedBefore, oldest first, after the cursor (p.After, p.AfterID),
// up to p.Limit (100 when not positive).
func (q *Queries) JobListStale(ctx context.Context, p store.JobListStaleParams) ([]store.Job, error) {
	var w where
	w.add(`status = ?`, p.Status)
	w.add(`updated_at < ?`, toMicros(p.UpdatedBefore))
	if !p.After.IsZero() {
		at := toMicros(p.After)
		w.add(`(created_at > ? OR (created_at = ? AND id > ?))`, at, at, p.AfterID)
	}
	args := append(w.args, limitOr(p.Limit, 100))
	jobs, err := queryAll(ctx, q, scanJob,
		`SELECT `+jobColumns+` FROM jobs`+w.String()+` ORDER BY created_at, id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing stale jobs: %w", err)
	}
	return jobs, nil
}

// JobSetStatus moves a job to p.To, with p.Reason, when its status is one
// of p.From (any when empty) and reports whether it moved. It returns
// ErrNotFound when the job does not exist.
func (q *Queries) JobSetStatus(ctx context.Context, p store.JobSetStatusParams) (bool, error) {
	w := where{}
	w.add(`id = ?`, p.ID)
	if len(p.From) > 0 {
		w.add(`status IN (`+placeholders(len(p.From))+`)`, anys(p.From)...)
	}
	args := append([]any{p.To, p.Reason, toMicros(now())}, w.args...)
	return q.update(ctx, p.Else, "setting job "+p.ID+" status", `SELECT 1 FROM jobs WHERE id = ?`, p.ID,
		`UPDATE jobs SET status = ?, reason = ?, updated_at = ?`+w.String(), args...)
}
