package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Dead-letter policies for the job of a dead-lettered task.
const (
	// OnDeadLetterFail fails the job; a replay revives it.
	OnDeadLetterFail = "fail"
	// OnDeadLetterWait keeps the job running until the task is replayed.
	OnDeadLetterWait = "wait"
)

// deadLetteredPrefix starts the reason of a job failed by a dead letter, so
// a replay knows to revive it.
const deadLetteredPrefix = "dead-lettered: "

// DeadLetters records dead letters and what they mean for the task they
// concern: the task says why, and its job fails (or waits for a replay).
// Every service's bus.Settler records through it.
type DeadLetters struct {
	Store    store.Store
	Subjects bus.Subjects
	// OnDeadLetter is OnDeadLetterFail (the default) or OnDeadLetterWait.
	OnDeadLetter string
	// Notify wakes the outbox relay. Optional.
	Notify func()
	// Metrics, when set, count dead letters.
	Metrics *telemetry.Metrics
	Log     zerolog.Logger
}

// Record stores d once (by id) and marks its task dead-lettered.
func (b *DeadLetters) Record(ctx context.Context, d schemas.DeadLetter) error {
	var err error
	if d.TaskID, d.JobID, err = b.identify(ctx, d); err != nil {
		return err
	}
	var wrote, counted bool
	err = b.Store.InTx(ctx, func(q store.Querier) error {
		created, err := q.DeadLetterInsert(ctx, d)
		if err != nil || !created {
			return err
		}
		counted = true
		if d.TaskID == "" {
			return nil
		}
		t, err := q.TaskGetByID(ctx, d.TaskID)
		if err != nil {
			return err
		}
		// Only a message the task still waits for stops it: a stale
		// duplicate, an old revision or a message whose work got done
		// meanwhile is kept as a record and changes nothing.
		from, ok := waitsFor(t, d)
		if !ok {
			return nil
		}
		status, rev := schemas.TaskDeadLettered, t.Revision
		reason := fmt.Sprintf("dead-lettered by %s (%s): %s; replay with: troupe dlq replay %s", d.Source, d.Class, bus.Clip(d.Reason, 2000), d.ID)
		moved, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: from, Revision: &rev, Status: &status, Reason: &reason})
		if err != nil || !moved {
			return err
		}
		wrote = true
		events := []schemas.Event{{JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventTaskDeadLettered, Role: t.Role, Revision: t.Revision,
			Message: reason, Data: map[string]any{"dead_letter_id": d.ID}}}
		if b.OnDeadLetter != OnDeadLetterWait {
			jobReason := fmt.Sprintf("%stask %s (%s): %s", deadLetteredPrefix, t.Key, t.Role, bus.Clip(d.Reason, 2000))
			moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: t.JobID, From: []string{schemas.JobRunning}, To: schemas.JobFailed, Reason: jobReason})
			if err != nil {
				return err
			}
			if moved {
				events = append(events, schemas.Event{JobID: t.JobID, Kind: schemas.EventJobFailed, Message: jobReason})
			}
		}
		return bus.Emit(ctx, q, b.Subjects, events...)
	})
	if err != nil {
		return err
	}
	if counted {
		b.Metrics.DeadLetter(d.Source, d.Class)
	}
	if wrote && b.Notify != nil {
		b.Notify()
	}
	return nil
}

// waitsFor reports whether task t still waits for the dead-lettered
// message, and from which statuses it may be stopped: a task message of
// its current revision while it is queued or running, or a review request
// of its current revision while it is staged.
func waitsFor(t store.Task, d schemas.DeadLetter) ([]string, bool) {
	var m struct {
		Revision *int `json:"revision"`
	}
	if json.Unmarshal([]byte(d.Payload), &m) != nil || m.Revision == nil || *m.Revision != t.Revision {
		return nil, false
	}
	if strings.Contains(d.Subject, ".review.") {
		return []string{schemas.TaskStaged}, t.Status == schemas.TaskStaged
	}
	return []string{schemas.TaskQueued, schemas.TaskRunning}, t.Status == schemas.TaskQueued || t.Status == schemas.TaskRunning
}

// identify reads which task and job a dead-lettered message concerns, when
// its payload says and the task exists.
func (b *DeadLetters) identify(ctx context.Context, d schemas.DeadLetter) (taskID, jobID string, err error) {
	if !strings.Contains(d.Subject, ".tasks.") && !strings.Contains(d.Subject, ".review.") {
		return "", "", nil // an event's task is not waiting for it
	}
	var ids struct {
		TaskID string `json:"task_id"`
		JobID  string `json:"job_id"`
	}
	if json.Unmarshal([]byte(d.Payload), &ids) != nil || ids.TaskID == "" {
		return "", ids.JobID, nil
	}
	t, err := b.Store.TaskGetByID(ctx, ids.TaskID)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err // retried: the record must say which task it stopped
	}
	return t.ID, t.JobID, nil
}

// Replay republishes a dead letter's message with a fresh message id and
// the header Troupe-Replay-Of, in one transaction with putting its task
// back where the message finds it (queued for a task, staged for a
// review) and reviving a job the dead letter failed.
func (b *DeadLetters) Replay(ctx context.Context, id, by string) (schemas.DeadLetter, error) {
	var d schemas.DeadLetter
	err := b.Store.InTx(ctx, func(q store.Querier) error {
		var err error
		d, err = q.DeadLetterGetByID(ctx, id)
		if err != nil {
			return err
		}
		moved, err := q.DeadLetterResolve(ctx, id, schemas.DeadLetterReplayed, by)
		if err != nil {
			return err
		}
		if !moved {
			return bus.Conflict("dead letter %s is %s already", id, d.Status)
		}
		msg := store.OutboxMessage{Subject: d.Subject, MsgID: "replay." + uuid.NewString(), Payload: []byte(d.Payload), Headers: map[string]string{}}
		for k, v := range d.Headers {
			if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Troupe-") && !strings.HasPrefix(k, "Nats-") {
				msg.Headers[k] = v
			}
		}
		msg.Headers[bus.HeaderReplayOf] = d.ID
		if d.TaskID == "" {
			return q.OutboxInsert(ctx, []store.OutboxMessage{msg})
		}
		t, err := q.TaskGetByID(ctx, d.TaskID)
		if err != nil {
			return err
		}
		back := schemas.TaskQueued
		if strings.Contains(d.Subject, ".review.") {
			back = schemas.TaskStaged
		}
		reason := ""
		moved, err = q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskDeadLettered}, Status: &back, Reason: &reason})
		if err != nil {
			return err
		}
		if moved && back == schemas.TaskQueued {
			// Send the task as it is now, not as the old message said.
			t.Status = back
			fresh, err := bus.OutboxJSON(d.Subject, msg.MsgID, schemas.TaskMessage{TaskID: t.ID, JobID: t.JobID, Key: t.Key, Role: t.Role, Revision: t.Revision})
			if err != nil {
				return err
			}
			msg.Payload = fresh.Payload
		}
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{msg}); err != nil {
			return err
		}
		if moved {
			if err := reviveJob(ctx, q, t.JobID); err != nil {
				return err
			}
		}
		return bus.Emit(ctx, q, b.Subjects, schemas.Event{
			JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventDeadLetterReplayed, Role: t.Role, Revision: t.Revision,
			Message: fmt.Sprintf("dead letter %s replayed by %s", d.ID, by), Data: map[string]any{"dead_letter_id": d.ID},
		})
	})
	if err != nil {
		return schemas.DeadLetter{}, err
	}
	if b.Notify != nil {
		b.Notify()
	}
	return b.Store.DeadLetterGetByID(ctx, id)
}

// Discard closes a dead letter without replaying it; the record stays. A
// task that waited for it fails, and so does its job, in the same
// transaction: nothing is left waiting for a replay that will not come.
func (b *DeadLetters) Discard(ctx context.Context, id, by string) (schemas.DeadLetter, error) {
	err := b.Store.InTx(ctx, func(q store.Querier) error {
		d, err := q.DeadLetterGetByID(ctx, id)
		if err != nil {
			return err
		}
		moved, err := q.DeadLetterResolve(ctx, id, schemas.DeadLetterDiscarded, by)
		if err != nil {
			return err
		}
		if !moved {
			return bus.Conflict("dead letter %s is %s already", id, d.Status)
		}
		if d.TaskID == "" {
			return nil
		}
		t, err := q.TaskGetByID(ctx, d.TaskID)
		if err != nil {
			return err
		}
		failed, reason := schemas.TaskFailed, fmt.Sprintf("dead letter %s discarded by %s: %s", d.ID, by, bus.Clip(d.Reason, 1000))
		if ok, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskDeadLettered}, Status: &failed, Reason: &reason}); err != nil || !ok {
			return err
		}
		jobReason := fmt.Sprintf("task %s (%s) failed: %s", t.Key, t.Role, reason)
		if _, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: t.JobID, From: []string{schemas.JobRunning, schemas.JobFailed}, To: schemas.JobFailed, Reason: jobReason}); err != nil {
			return err
		}
		if err := closeOpenTasks(ctx, q, t.JobID, schemas.TaskCancelled, "job failed: "+jobReason); err != nil {
			return err
		}
		return bus.Emit(ctx, q, b.Subjects,
			schemas.Event{JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventTaskFailed, Role: t.Role, Revision: t.Revision, Message: reason},
			schemas.Event{JobID: t.JobID, Kind: schemas.EventJobFailed, Message: jobReason})
	})
	if err != nil {
		return schemas.DeadLetter{}, err
	}
	if b.Notify != nil {
		b.Notify()
	}
	return b.Store.DeadLetterGetByID(ctx, id)
}

// reviveJob puts a job a dead letter failed back to running, once none of
// its tasks waits for a replay any more.
func reviveJob(ctx context.Context, q store.Querier, jobID string) error {
	job, err := q.JobGetByID(ctx, jobID)
	if err != nil || job.Status != schemas.JobFailed || !strings.HasPrefix(job.Reason, deadLetteredPrefix) {
		return err
	}
	tasks, err := q.TaskListByJob(ctx, jobID)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if t.Status == schemas.TaskDeadLettered {
			return nil // still waiting for another replay
		}
	}
	_, err = q.JobSetStatus(ctx, store.JobSetStatusParams{ID: jobID, From: []string{schemas.JobFailed}, To: schemas.JobRunning})
	return err
}

// errNoDeadLetter is the API's not-found error for a dead letter.
func errNoDeadLetter(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("id: no dead letter %q", id)}
	}
	return err
}
