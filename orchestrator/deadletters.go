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
	Log    zerolog.Logger
}

// Record stores d once (by id) and marks its task dead-lettered.
func (b *DeadLetters) Record(ctx context.Context, d schemas.DeadLetter) error {
	d.TaskID, d.JobID = b.identify(ctx, d)
	var wrote bool
	err := b.Store.InTx(ctx, func(q store.Querier) error {
		created, err := q.DeadLetterInsert(ctx, d)
		if err != nil || !created || d.TaskID == "" {
			return err
		}
		t, err := q.TaskGetByID(ctx, d.TaskID)
		if err != nil {
			return err
		}
		if terminalTask(t.Status) || t.Status == schemas.TaskDeadLettered {
			return nil
		}
		status := schemas.TaskDeadLettered
		reason := fmt.Sprintf("dead-lettered by %s (%s): %s; replay with: troupe dlq replay %s", d.Source, d.Class, bus.Clip(d.Reason, 2000), d.ID)
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, Status: &status, Reason: &reason}); err != nil {
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
	if wrote && b.Notify != nil {
		b.Notify()
	}
	return nil
}

// identify reads which task and job a dead-lettered message concerns, when
// its payload says and the task exists.
func (b *DeadLetters) identify(ctx context.Context, d schemas.DeadLetter) (taskID, jobID string) {
	if !strings.Contains(d.Subject, ".tasks.") && !strings.Contains(d.Subject, ".review.") {
		return "", "" // an event's task is not waiting for it
	}
	var ids struct {
		TaskID string `json:"task_id"`
		JobID  string `json:"job_id"`
	}
	if json.Unmarshal([]byte(d.Payload), &ids) != nil || ids.TaskID == "" {
		return "", ids.JobID
	}
	t, err := b.Store.TaskGetByID(ctx, ids.TaskID)
	if err != nil {
		return "", ""
	}
	return t.ID, t.JobID
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
		headers := map[string]string{}
		for k, v := range d.Headers {
			if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Troupe-") && !strings.HasPrefix(k, "Nats-") {
				headers[k] = v
			}
		}
		headers[bus.HeaderReplayOf] = d.ID
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{{
			Subject: d.Subject, MsgID: "replay." + uuid.NewString(), Payload: []byte(d.Payload), Headers: headers,
		}}); err != nil {
			return err
		}
		if d.TaskID == "" {
			return nil
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
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskDeadLettered}, Status: &back, Reason: &reason}); err != nil {
			return err
		}
		job, err := q.JobGetByID(ctx, t.JobID)
		if err != nil {
			return err
		}
		if job.Status == schemas.JobFailed && strings.HasPrefix(job.Reason, deadLetteredPrefix) {
			if _, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobFailed}, To: schemas.JobRunning}); err != nil {
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

// Discard closes a dead letter without replaying it; the record stays.
func (b *DeadLetters) Discard(ctx context.Context, id, by string) (schemas.DeadLetter, error) {
	d, err := b.Store.DeadLetterGetByID(ctx, id)
	if err != nil {
		return schemas.DeadLetter{}, err
	}
	moved, err := b.Store.DeadLetterResolve(ctx, id, schemas.DeadLetterDiscarded, by)
	if err != nil {
		return schemas.DeadLetter{}, err
	}
	if !moved {
		return schemas.DeadLetter{}, bus.Conflict("dead letter %s is %s already", id, d.Status)
	}
	return b.Store.DeadLetterGetByID(ctx, id)
}

// errNoDeadLetter is the API's not-found error for a dead letter.
func errNoDeadLetter(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("id: no dead letter %q", id)}
	}
	return err
}
