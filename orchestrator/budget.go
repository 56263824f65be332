package orchestrator

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// stopIfSpent ends a running job whose model calls have used its token
// budget: status budget_exceeded, its open tasks cancelled, nothing more
// dispatched. It reports whether it stopped the job.
func stopIfSpent(ctx context.Context, q store.Querier, subj bus.Subjects, job store.Job) (bool, error) {
	if job.BudgetTokens <= 0 {
		return false, nil
	}
	used, err := q.ModelCallTokens(ctx, job.ID)
	if err != nil || used < job.BudgetTokens {
		return false, err
	}
	reason := fmt.Sprintf("token budget spent: %d of %d tokens used", used, job.BudgetTokens)
	moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobRunning}, To: schemas.JobBudgetExceeded, Reason: reason})
	if err != nil || !moved {
		return false, err
	}
	if err := closeOpenTasks(ctx, q, job.ID, schemas.TaskCancelled, reason); err != nil {
		return false, err
	}
	return true, bus.Emit(ctx, q, subj, schemas.Event{JobID: job.ID, Kind: schemas.EventJobBudgetExceeded, Message: reason,
		Data: map[string]any{"tokens_used": used, "budget_tokens": job.BudgetTokens}})
}

// Budgets checks jobs' token budgets for the workers: before a task calls
// its model, a job that spent its budget is stopped instead.
type Budgets struct {
	Store    store.Store
	Subjects bus.Subjects
	Notify   func()
}

// Spent reports whether the job has spent its budget, and if so stops it.
func (b *Budgets) Spent(ctx context.Context, jobID string) (bool, error) {
	// Most jobs have no budget, or are not running: a read tells, without
	// a transaction that writes.
	job, err := b.Store.JobGetByID(ctx, jobID)
	if err != nil {
		return false, err
	}
	switch {
	case job.Status == schemas.JobBudgetExceeded:
		return true, nil
	case job.Status != schemas.JobRunning || job.BudgetTokens <= 0:
		return false, nil
	}
	// A budget with tokens left: still only reads.
	if used, err := b.Store.ModelCallTokens(ctx, jobID); err != nil || used < job.BudgetTokens {
		return false, err
	}
	// Spent: stop the job, in a transaction that checks again.
	var stopped bool
	err = b.Store.InTx(ctx, func(q store.Querier) error {
		job, err := q.JobGetByID(ctx, jobID)
		if err != nil {
			return err
		}
		if job.Status == schemas.JobBudgetExceeded {
			stopped = true
			return nil
		}
		if job.Status != schemas.JobRunning {
			return nil
		}
		stopped, err = stopIfSpent(ctx, q, b.Subjects, job)
		return err
	})
	if stopped && b.Notify != nil {
		b.Notify()
	}
	return stopped, err
}
