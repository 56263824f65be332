package sqlcore

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/store"
)

const modelCallColumns = `id, job_id, task_id, role, revision, model, prompt_tokens, completion_tokens,
	latency_ms, outcome, error, created_at`

// modelCallOK is the outcome of a call that succeeded; every other outcome
// counts as failed.
const modelCallOK = "ok"

// ModelCallInsert records model calls, all or none. A call without an ID
// gets one, and one without a CreatedAt gets now.
func (q *Queries) ModelCallInsert(ctx context.Context, calls []store.ModelCall) error {
	if len(calls) == 0 {
		return nil
	}
	err := q.inTx(ctx, func(q *Queries) error {
		for _, c := range calls {
			if err := q.write(ctx, nil, `INSERT INTO model_calls (`+modelCallColumns+`)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
				orNewID(c.ID), c.JobID, c.TaskID, c.Role, c.Revision, c.Model, c.PromptTokens, c.CompletionTokens,
				c.LatencyMS, c.Outcome, c.Error, toMicros(orNow(c.CreatedAt))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inserting model calls: %w", err)
	}
	return nil
}

func scanModelCallTotal(s scanner) (store.ModelCallTotal, error) {
	var t store.ModelCallTotal
	err := s.Scan(&t.Role, &t.Model, &t.Calls, &t.Failed, &t.PromptTokens, &t.CompletionTokens, &t.LatencyMS)
	return t, err
}

// ModelCallTotals sums a job's model calls by role and model, ordered by
// role then model; a job without calls has an empty, non-nil slice. The
// sums are cast back to BIGINT: PostgreSQL sums BIGINTs as NUMERIC.
func (q *Queries) ModelCallTotals(ctx context.Context, jobID string) ([]store.ModelCallTotal, error) {
	totals, err := queryAll(ctx, q, scanModelCallTotal, `SELECT role, model, count(*),
		CAST(SUM(CASE WHEN outcome <> '`+modelCallOK+`' THEN 1 ELSE 0 END) AS BIGINT),
		CAST(SUM(prompt_tokens) AS BIGINT), CAST(SUM(completion_tokens) AS BIGINT), CAST(SUM(latency_ms) AS BIGINT)
		FROM model_calls WHERE job_id = ? GROUP BY role, model ORDER BY role, model`, jobID)
	if err != nil {
		return nil, fmt.Errorf("summing model calls of job %s: %w", jobID, err)
	}
	if totals == nil {
		totals = []store.ModelCallTotal{}
	}
	return totals, nil
}

// ModelCallTokens is the total of prompt and completion tokens of a job's
// model calls, 0 when it has none.
func (q *Queries) ModelCallTokens(ctx context.Context, jobID string) (int64, error) {
	var n int64
	if err := q.queryRow(ctx, `SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT)
		FROM model_calls WHERE job_id = ?`, jobID).Scan(&n); err != nil {
		return 0, fmt.Errorf("summing model call tokens of job %s: %w", jobID, err)
	}
	return n, nil
}

func scanModelCall(s scanner) (store.ModelCall, error) {
	var (
		c         store.ModelCall
		createdAt int64
	)
	if err := s.Scan(&c.ID, &c.JobID, &c.TaskID, &c.Role, &c.Revision, &c.Model, &c.PromptTokens,
		&c.CompletionTokens, &c.LatencyMS, &c.Outcome, &c.Error, &createdAt); err != nil {
		return c, err
	}
	c.CreatedAt = fromMicros(createdAt)
	return c, nil
}

// ModelCallListByJob returns a job's model calls, oldest first (by id among
// calls of one instant); a job without calls has an empty, non-nil slice.
func (q *Queries) ModelCallListByJob(ctx context.Context, jobID string) ([]store.ModelCall, error) {
	calls, err := queryAll(ctx, q, scanModelCall,
		`SELECT `+modelCallColumns+` FROM model_calls WHERE job_id = ? ORDER BY created_at, id`, jobID)
	if err != nil {
		return nil, fmt.Errorf("listing model calls of job %s: %w", jobID, err)
	}
	if calls == nil {
		calls = []store.ModelCall{}
	}
	return calls, nil
}
