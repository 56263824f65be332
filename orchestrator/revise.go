package orchestrator

import (
	"context"
	"errors"
	"fmt"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// revise sends a rejected task back as its next revision, or fails it and
// its job when it has used every revision.
func (s *Service) revise(ctx context.Context, ev schemas.Event) error {
	// What the committed run did, logged once it committed: the function
	// runs again when its transaction is retried.
	var (
		wrote   bool
		t       store.Task
		failure string // the reason, when the task failed
	)
	err := s.store.InTx(ctx, func(q store.Querier) error {
		wrote, failure = false, ""
		var err error
		t, err = q.TaskGetByID(ctx, ev.TaskID)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return bus.Permanent(fmt.Errorf("unknown task %q", ev.TaskID))
			}
			return err
		}
		if t.Status != schemas.TaskRejected || t.Revision != ev.Revision {
			return nil // handled already, or the job was cancelled
		}
		// The job before the task, as a cancel takes them: taken the
		// other way round, a revision and a cancel would each wait for
		// the other (a deadlock on PostgreSQL).
		job, err := q.JobLock(ctx, t.JobID)
		if err != nil {
			return err
		}
		if job.Status != schemas.JobRunning {
			return nil // a failed job's revision waits for a replay to revive it
		}
		rev := t.Revision
		if rev < s.cfg.MaxRevisions {
			next, queued := rev+1, schemas.TaskQueued
			moved, err := q.TaskUpdate(ctx, store.TaskUpdateParams{
				ID: t.ID, From: []string{schemas.TaskRejected}, Revision: &rev, Status: &queued, SetRevision: &next,
			})
			if err != nil || !moved {
				return err
			}
			t.Revision = next
			m, err := s.taskMessage(t)
			if err != nil {
				return err
			}
			if err := q.OutboxInsert(ctx, []store.OutboxMessage{m}); err != nil {
				return err
			}
			wrote = true
			return bus.Emit(ctx, q, s.subj, queuedEvent(t))
		}
		reason := fmt.Sprintf("rejected at revision %d, the last allowed (review.maxRevisions is %d): %s", rev, s.cfg.MaxRevisions, bus.Clip(t.Feedback, 2000))
		failed := schemas.TaskFailed
		moved, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskRejected}, Revision: &rev, Status: &failed, Reason: &reason})
		if err != nil || !moved {
			return err
		}
		jobReason := fmt.Sprintf("task %s (%s) failed: %s", t.Key, t.Role, reason)
		if _, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: t.JobID, From: []string{schemas.JobRunning}, To: schemas.JobFailed, Reason: jobReason}); err != nil {
			return err
		}
		if err := closeOpenTasks(ctx, q, t.JobID, schemas.TaskCancelled, "job failed: "+jobReason); err != nil {
			return err
		}
		wrote, failure = true, reason
		return bus.Emit(ctx, q, s.subj,
			schemas.Event{JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventTaskFailed, Role: t.Role, Revision: rev, Message: reason},
			schemas.Event{JobID: t.JobID, Kind: schemas.EventJobFailed, Message: jobReason},
		)
	})
	if err != nil || !wrote {
		return err
	}
	s.cfg.Notify()
	// t is the task as the committed run left it: its new revision, or
	// the one it failed at.
	log := s.log.With().Str("job_id", t.JobID).Str("task_id", t.ID).Str("role", t.Role).Logger()
	if failure != "" {
		log.Warn().Int("revision", t.Revision).Str("reason", failure).Msg("task failed; job failed")
	} else {
		log.Info().Int("revision", t.Revision-1).Msg("task sent back for revision")
	}
	return nil
}
