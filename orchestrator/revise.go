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
	var wrote, failed bool
	var t store.Task
	var reason string
	err := s.store.InTx(ctx, func(q store.Querier) error {
		// A transaction the database aborted runs again: what an earlier
		// run said is void.
		wrote, failed = false, false
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
		reason = fmt.Sprintf("rejected at revision %d, the last allowed (review.maxRevisions is %d): %s", rev, s.cfg.MaxRevisions, bus.Clip(t.Feedback, 2000))
		jobReason := fmt.Sprintf("task %s (%s) failed: %s", t.Key, t.Role, reason)
		// The job before its tasks, as cancelling takes them: the other
		// order deadlocks with a cancel of the same job on PostgreSQL.
		jobMoved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: t.JobID, From: []string{schemas.JobRunning}, To: schemas.JobFailed, Reason: jobReason})
		if err != nil {
			return err
		}
		status := schemas.TaskFailed
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskRejected}, Revision: &rev, Status: &status, Reason: &reason,
			Else: errTaskMovedOn}); err != nil {
			return err
		}
		if err := closeOpenTasks(ctx, q, t.JobID, schemas.TaskCancelled, "job failed: "+jobReason); err != nil {
			return err
		}
		wrote, failed = true, true
		events := []schemas.Event{{JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventTaskFailed, Role: t.Role, Revision: rev, Message: reason}}
		if jobMoved {
			events = append(events, schemas.Event{JobID: t.JobID, Kind: schemas.EventJobFailed, Message: jobReason})
		}
		return bus.Emit(ctx, q, s.subj, events...)
	})
	if errors.Is(err, errTaskMovedOn) {
		return nil // revised or cancelled meanwhile
	}
	if err == nil && wrote {
		log := s.log.With().Str("job_id", t.JobID).Str("task_id", t.ID).Str("role", t.Role).Int("revision", t.Revision).Logger()
		if failed {
			log.Warn().Str("reason", reason).Msg("task failed; job failed")
		} else {
			log.Info().Msg("task sent back for revision")
		}
	}
	if wrote {
		s.cfg.Notify()
	}
	return err
}

// errTaskMovedOn rolls back a change whose task moved on meanwhile.
var errTaskMovedOn = errors.New("task moved on")
