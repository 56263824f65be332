package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

const outputColumns = `id, task_id, job_id, role, revision, status, content, files, model,
	prompt_tokens, completion_tokens, latency_ms, prompt, checks, created_at`

func scanOutput(s scanner) (store.Output, error) {
	var (
		o             store.Output
		files, checks string
		createdAt     int64
	)
	if err := s.Scan(&o.ID, &o.TaskID, &o.JobID, &o.Role, &o.Revision, &o.Status, &o.Content, &files, &o.Model,
		&o.PromptTokens, &o.CompletionTokens, &o.LatencyMS, &o.Prompt, &checks, &createdAt); err != nil {
		return o, err
	}
	if err := fromJSON(files, &o.Files); err != nil {
		return o, fmt.Errorf("output %s files: %w", o.ID, err)
	}
	if err := fromJSON(checks, &o.Checks); err != nil {
		return o, fmt.Errorf("output %s checks: %w", o.ID, err)
	}
	o.CreatedAt = fromMicros(createdAt)
	return o, nil
}

// OutputStage inserts an output (status "staged" when o.Status is empty),
// or returns the task revision's existing output with created false. It
// returns ErrNotFound when the task does not exist.
func (q *Queries) OutputStage(ctx context.Context, o store.Output) (store.Output, bool, error) {
	o, query, args, err := outputInsert(o)
	if err != nil {
		return store.Output{}, false, err
	}
	created, staged := false, o
	err = q.inTx(ctx, func(q *Queries) error {
		// A transaction run again (a deadlock, a lost connection) starts
		// from nothing: what an earlier run found was rolled back.
		created, o = false, staged
		res, err := q.exec(ctx, query, args...)
		if q.parentMissing(err) {
			return fmt.Errorf("task %s: %w", o.TaskID, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 0 {
			existing, err := q.OutputGetByTaskRevision(ctx, o.TaskID, o.Revision)
			if err != nil {
				return err
			}
			o = existing
			return nil
		}
		created = true
		return nil
	})
	if err != nil {
		return store.Output{}, false, fmt.Errorf("staging output of task %s revision %d: %w", o.TaskID, o.Revision, err)
	}
	return o, created, nil
}

// OutputAdd is store.Querier's: OutputStage's insert as a write that must
// add the row (writeChange), held back on PostgreSQL.
func (q *Queries) OutputAdd(ctx context.Context, o store.Output, exists error) error {
	o, query, args, err := outputInsert(o)
	if err != nil {
		return err
	}
	return q.writeChange(ctx, exists, func(err error) error {
		if q.parentMissing(err) {
			err = fmt.Errorf("task %s: %w", o.TaskID, store.ErrNotFound)
		}
		return fmt.Errorf("staging output of task %s revision %d: %w", o.TaskID, o.Revision, err)
	}, query, args...)
}

// outputInsert returns o with its defaults and the statement that inserts
// it unless its task revision has an output.
func outputInsert(o store.Output) (store.Output, string, []any, error) {
	o.ID = orNewID(o.ID)
	o.CreatedAt = orNow(o.CreatedAt)
	if o.Status == "" {
		o.Status = schemas.OutputStaged
	}
	files, err := toJSON(o.Files)
	if err != nil {
		return o, "", nil, fmt.Errorf("staging output: %w", err)
	}
	checks, err := toJSON(o.Checks)
	if err != nil {
		return o, "", nil, fmt.Errorf("staging output: %w", err)
	}
	return o, `INSERT INTO outputs (` + outputColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (task_id, revision) DO NOTHING`,
		[]any{o.ID, o.TaskID, o.JobID, o.Role, o.Revision, o.Status, o.Content, files, o.Model,
			o.PromptTokens, o.CompletionTokens, o.LatencyMS, o.Prompt, checks, toMicros(o.CreatedAt)}, nil
}

// OutputGetByID returns one output, or ErrNotFound.
func (q *Queries) OutputGetByID(ctx context.Context, id string) (store.Output, error) {
	o, err := queryOne(ctx, q, scanOutput, `SELECT `+outputColumns+` FROM outputs WHERE id = ?`, id)
	if err != nil {
		return store.Output{}, fmt.Errorf("getting output %s: %w", id, err)
	}
	return o, nil
}

// OutputGetByTaskRevision returns the output of one task revision, or ErrNotFound.
func (q *Queries) OutputGetByTaskRevision(ctx context.Context, taskID string, revision int) (store.Output, error) {
	o, err := queryOne(ctx, q, scanOutput,
		`SELECT `+outputColumns+` FROM outputs WHERE task_id = ? AND revision = ?`, taskID, revision)
	if err != nil {
		return store.Output{}, fmt.Errorf("getting output of task %s revision %d: %w", taskID, revision, err)
	}
	return o, nil
}

// OutputListByJob returns a job's outputs, oldest first.
func (q *Queries) OutputListByJob(ctx context.Context, jobID string) ([]store.Output, error) {
	outputs, err := queryAll(ctx, q, scanOutput,
		`SELECT `+outputColumns+` FROM outputs WHERE job_id = ? ORDER BY created_at, id`, jobID)
	if err != nil {
		return nil, fmt.Errorf("listing outputs of job %s: %w", jobID, err)
	}
	return outputs, nil
}

// OutputList returns outputs filtered by status, role and job, oldest first,
// one page at a time.
func (q *Queries) OutputList(ctx context.Context, p store.OutputListParams) ([]store.Output, error) {
	var w where
	if p.Status != "" {
		w.add(`status = ?`, p.Status)
	}
	if p.Role != "" {
		w.add(`role = ?`, p.Role)
	}
	if p.JobID != "" {
		w.add(`job_id = ?`, p.JobID)
	}
	if !p.After.IsZero() {
		after := toMicros(p.After)
		if p.AfterID != "" {
			w.add(`(created_at > ? OR (created_at = ? AND id > ?))`, after, after, p.AfterID)
		} else {
			w.add(`created_at > ?`, after)
		}
	}
	args := append(w.args, limitOr(p.Limit, 50))
	outputs, err := queryAll(ctx, q, scanOutput,
		`SELECT `+outputColumns+` FROM outputs`+w.String()+` ORDER BY created_at, id LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing outputs: %w", err)
	}
	return outputs, nil
}

// OutputSetStatus moves an output to p.To when its status is one of p.From
// (any when empty) and reports whether it moved. It returns ErrNotFound
// when the output does not exist.
func (q *Queries) OutputSetStatus(ctx context.Context, p store.OutputSetStatusParams) (bool, error) {
	var w where
	w.add(`id = ?`, p.ID)
	if len(p.From) > 0 {
		w.add(`status IN (`+placeholders(len(p.From))+`)`, anys(p.From)...)
	}
	return q.update(ctx, p.Else, "setting output "+p.ID+" status", `SELECT 1 FROM outputs WHERE id = ?`, p.ID,
		`UPDATE outputs SET status = ?`+w.String(), append([]any{p.To}, w.args...)...)
}
