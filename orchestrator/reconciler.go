package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// ReconcileConfig configures the reconciler.
type ReconcileConfig struct {
	// Interval between passes. Defaults to 30s; negative disables the reconciler.
	Interval time.Duration
	// StaleAfter is how long a task or output may sit in one state before
	// the reconciler looks at it. Defaults to 5 minutes.
	StaleAfter time.Duration
	// Batch bounds the tasks one pass looks at per kind. Defaults to 100.
	Batch int
}

func (c ReconcileConfig) withDefaults() ReconcileConfig {
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = 5 * time.Minute
	}
	if c.Batch == 0 {
		c.Batch = 100
	}
	return c
}

// reconciler makes the store, the system of record, win over a broker that
// lost a message: a task queued or running whose message is gone is
// re-dispatched with a fresh message id, a staged output whose review
// request is gone is sent for review again, and a promotion or rejection
// whose event is gone is acted on. What it re-sends is bounded per pass
// and logged; the handlers are idempotent, so a re-send that was not
// needed costs a redundant delivery, never a double effect.
type reconciler struct {
	s    *Service
	cfg  ReconcileConfig
	done chan struct{}
	quit context.CancelFunc
	// jobsAfter and jobsAfterID are where the walk of stale running jobs
	// stopped: the next pass goes on from there.
	jobsAfter   time.Time
	jobsAfterID string

	mu      sync.Mutex
	since   time.Time       // the earliest loss not yet caught up with
	streams map[string]bool // the streams that lost what they held then
	kick    chan struct{}   // a loss was reported
}

func newReconciler(s *Service) *reconciler {
	return &reconciler{s: s, cfg: s.cfg.Reconcile.withDefaults(), done: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// now asks for a reconciliation at once of what the broker may have lost
// at since: every task, review request and event older than since whose
// message is gone is sent again without waiting for StaleAfter. streams
// are those that lost everything they held (deleted, created again,
// purged): every message sent to them before since is gone.
func (r *reconciler) now(since time.Time, streams map[string]bool) {
	r.mu.Lock()
	if r.since.IsZero() || since.Before(r.since) {
		r.since = since
	}
	if r.streams == nil {
		r.streams = map[string]bool{}
	}
	for name := range streams {
		r.streams[name] = true
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *reconciler) start(ctx context.Context) {
	if r.cfg.Interval < 0 {
		close(r.done)
		return
	}
	ctx, r.quit = context.WithCancel(ctx)
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.cfg.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := r.pass(ctx); err != nil && ctx.Err() == nil {
					r.s.log.Warn().Err(err).Msg("reconcile pass")
				}
			case <-r.kick:
				r.mu.Lock()
				since, streams := r.since, r.streams
				r.since, r.streams = time.Time{}, nil
				r.mu.Unlock()
				if err := r.catchUp(ctx, since, streams); err != nil && ctx.Err() == nil {
					r.s.log.Warn().Err(err).Msg("reconciling what the broker lost")
					r.now(since, streams) // again, once the store or the broker answers
					select {
					case <-time.After(time.Second):
					case <-ctx.Done():
					}
				}
			}
		}
	}()
}

func (r *reconciler) stop() {
	if r.quit != nil {
		r.quit()
	}
	<-r.done
}

// pass runs one reconciliation.
func (r *reconciler) pass(ctx context.Context) error {
	before := time.Now().Add(-r.cfg.StaleAfter)
	if _, err := r.tasks(ctx, before, nil); err != nil {
		return fmt.Errorf("tasks: %w", err)
	}
	if _, err := r.reviews(ctx, before, nil); err != nil {
		return fmt.Errorf("reviews: %w", err)
	}
	if err := r.decisions(ctx, before); err != nil {
		return fmt.Errorf("decisions: %w", err)
	}
	return nil
}

// catchUp reconciles, without waiting for StaleAfter, everything a loss
// at since may have taken. Tasks and review requests last sent before it
// are sent again: all of them when their stream lost everything it held
// (but those whose message still waits in the outbox), else as many as
// the stream lacks. Each one sent is marked fresh, so the passes move on
// until none is left. Rejections and running jobs not changed since are
// acted on, in case their events were lost.
func (r *reconciler) catchUp(ctx context.Context, since time.Time, streams map[string]bool) error {
	start := time.Now()
	unsentTasks, unsentReviews, err := r.unsent(ctx)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if !streams[bus.StreamTasks] {
		unsentTasks = nil // compare with the stream
	}
	if !streams[bus.StreamReview] {
		unsentReviews = nil
	}
	total := 0
	for range 1000 {
		sent, err := r.tasks(ctx, since, unsentTasks)
		if err != nil {
			return fmt.Errorf("tasks: %w", err)
		}
		reviews, err := r.reviews(ctx, since, unsentReviews)
		if err != nil {
			return fmt.Errorf("reviews: %w", err)
		}
		total += sent + reviews
		if sent+reviews == 0 {
			break
		}
	}
	for range 1000 {
		// A rejection whose event was lost: revising moves the task on.
		rejected, err := r.s.store.TaskListStale(ctx, store.TaskListStaleParams{Statuses: []string{schemas.TaskRejected}, UpdatedBefore: since, Limit: r.cfg.Batch})
		if err != nil {
			return fmt.Errorf("rejections: %w", err)
		}
		for _, t := range rejected {
			if err := r.s.revise(ctx, schemas.Event{JobID: t.JobID, TaskID: t.ID, Revision: t.Revision}); err != nil {
				return fmt.Errorf("rejections: %w", err)
			}
		}
		if len(rejected) < r.cfg.Batch {
			break
		}
	}
	r.jobsAfter, r.jobsAfterID = time.Time{}, ""
	for range 1000 {
		if err := r.advanceStale(ctx, since, map[string]bool{}); err != nil {
			return fmt.Errorf("jobs: %w", err)
		}
		if r.jobsAfter.IsZero() {
			break // walked them all
		}
	}
	r.s.log.Info().Int("sent_again", total).Dur("took", time.Since(start)).Time("since", since).Msg("reconciled what the broker lost")
	return nil
}

// inStream counts the messages a work-queue stream holds per subject:
// pending and unacknowledged ones alike.
func (r *reconciler) inStream(ctx context.Context, stream, filter string) (map[string]uint64, error) {
	st, err := r.s.js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, err
	}
	return info.State.Subjects, nil
}

// missing says, for each role of the stale tasks, how many more tasks the
// store has in statuses than the stream holds messages on the role's
// subject: how many messages were lost.
func (r *reconciler) missing(ctx context.Context, stale []store.Task, statuses []string, stream string, subject func(role string) string) (map[string]int, error) {
	counts, err := r.inStream(ctx, stream, subject("*"))
	if err != nil {
		return nil, err
	}
	missing := map[string]int{}
	for _, t := range stale {
		if _, seen := missing[t.Role]; seen {
			continue
		}
		n, err := r.s.store.TaskCount(ctx, t.Role, statuses)
		if err != nil {
			return nil, err
		}
		missing[t.Role] = n - int(counts[subject(t.Role)])
	}
	return missing, nil
}

// tasks re-dispatches stale queued or running tasks of a role when the
// stream holds fewer of the role's messages than the store has open tasks:
// then some messages were lost, and the stalest tasks are the ones.
//
// With lost (the stream lost everything sent before before), every stale
// task is sent again but those lost names, whose messages wait in the
// outbox.
func (r *reconciler) tasks(ctx context.Context, before time.Time, lost map[string]bool) (int, error) {
	open := []string{schemas.TaskQueued, schemas.TaskRunning}
	stale, err := r.s.store.TaskListStale(ctx, store.TaskListStaleParams{Statuses: open, UpdatedBefore: before, Limit: r.cfg.Batch + len(lost)})
	if err != nil || len(stale) == 0 {
		return 0, err
	}
	var missing map[string]int
	if lost == nil {
		if missing, err = r.missing(ctx, stale, open, bus.StreamTasks, r.s.subj.Task); err != nil {
			return 0, err
		}
	}
	sent := 0
	for _, t := range stale {
		if (lost == nil && missing[t.Role] <= 0) || (lost != nil && lost[t.ID]) {
			continue
		}
		ok, err := r.redispatch(ctx, t)
		if err != nil {
			return sent, err
		}
		if ok {
			if missing != nil {
				missing[t.Role]--
			}
			sent++
		}
	}
	if sent > 0 {
		r.s.cfg.Notify()
	}
	return sent, nil
}

func (r *reconciler) redispatch(ctx context.Context, t store.Task) (bool, error) {
	var moved bool
	err := r.s.store.InTx(ctx, func(q store.Querier) error {
		rev := t.Revision
		var err error
		// A no-op update that only matches if nothing moved meanwhile; it
		// also marks the task fresh, so it is not re-sent every pass.
		moved, err = q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{t.Status}, Revision: &rev})
		if err != nil || !moved {
			return err
		}
		m, err := r.s.taskMessage(t)
		if err != nil {
			return err
		}
		m.MsgID = fmt.Sprintf("%s.redispatch.%d", m.MsgID, time.Now().UnixNano())
		if err := q.OutboxInsert(ctx, []store.OutboxMessage{m}); err != nil {
			return err
		}
		return bus.Emit(ctx, q, r.s.subj, schemas.Event{
			JobID: t.JobID, TaskID: t.ID, Kind: schemas.EventTaskRedispatched, Role: t.Role, Revision: t.Revision,
			Message: fmt.Sprintf("%s since %s and its message is not in %s: sent again", t.Status, t.UpdatedAt.Format(time.RFC3339), bus.StreamTasks),
		})
	})
	if moved && err == nil {
		r.s.log.Warn().Str("job_id", t.JobID).Str("task_id", t.ID).Str("role", t.Role).Int("revision", t.Revision).
			Str("status", t.Status).Time("since", t.UpdatedAt).Msg("re-dispatched a task whose message was lost")
	}
	return moved, err
}

// reviews re-sends the review request of stale staged outputs when the
// review stream holds fewer of the role's requests than there are.
// With lost, as tasks.
func (r *reconciler) reviews(ctx context.Context, before time.Time, lost map[string]bool) (int, error) {
	stale, err := r.s.store.TaskListStale(ctx, store.TaskListStaleParams{Statuses: []string{schemas.TaskStaged}, UpdatedBefore: before, Limit: r.cfg.Batch + len(lost)})
	if err != nil || len(stale) == 0 {
		return 0, err
	}
	var missing map[string]int
	if lost == nil {
		if missing, err = r.missing(ctx, stale, []string{schemas.TaskStaged}, bus.StreamReview, r.s.subj.Review); err != nil {
			return 0, err
		}
	}
	sent := 0
	for _, t := range stale {
		if (lost == nil && missing[t.Role] <= 0) || (lost != nil && lost[t.ID]) {
			continue
		}
		out, err := r.s.store.OutputGetByTaskRevision(ctx, t.ID, t.Revision)
		if errors.Is(err, store.ErrNotFound) {
			r.s.log.Error().Str("job_id", t.JobID).Str("task_id", t.ID).Int("revision", t.Revision).Msg("task is staged without an output; left for an operator")
			continue
		}
		if err != nil {
			return sent, err
		}
		var moved bool
		err = r.s.store.InTx(ctx, func(q store.Querier) error {
			rev := t.Revision
			moved, err = q.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskStaged}, Revision: &rev})
			if err != nil || !moved {
				return err
			}
			m, err := bus.OutboxJSON(r.s.subj.Review(t.Role), fmt.Sprintf("review.%s.redispatch.%d", out.ID, time.Now().UnixNano()),
				schemas.ReviewRequest{OutputID: out.ID, TaskID: t.ID, JobID: t.JobID, Role: t.Role, Revision: t.Revision})
			if err != nil {
				return err
			}
			return q.OutboxInsert(ctx, []store.OutboxMessage{m})
		})
		if err != nil {
			return sent, err
		}
		if moved {
			sent++
			if missing != nil {
				missing[t.Role]--
			}
			r.s.cfg.Notify()
			r.s.log.Warn().Str("job_id", t.JobID).Str("task_id", t.ID).Str("output_id", out.ID).Msg("re-sent a review request that was lost")
		}
	}
	return sent, nil
}

// decisions acts on promotions and rejections whose events were lost: a
// stale rejected task is revised, and the jobs of stale pending tasks are
// advanced. Both are idempotent, so acting twice does nothing.
func (r *reconciler) decisions(ctx context.Context, before time.Time) error {
	stale, err := r.s.store.TaskListStale(ctx, store.TaskListStaleParams{
		Statuses: []string{schemas.TaskRejected, schemas.TaskPending}, UpdatedBefore: before, Limit: r.cfg.Batch,
	})
	if err != nil {
		return err
	}
	// Jobs whose planning failed or was cut short by a restart: plan them
	// again; without a planner now, or after three rounds of staleness,
	// they get the default plan, and their timeline says why.
	planning, err := r.s.store.JobList(ctx, store.JobListParams{Status: schemas.JobPlanning, Limit: r.cfg.Batch})
	if err != nil {
		return err
	}
	giveUp := time.Now().Add(-3 * r.cfg.StaleAfter)
	for _, j := range planning {
		if !j.UpdatedAt.Before(before) {
			continue
		}
		switch {
		case r.s.cfg.Planner == nil:
			err = r.s.startPlanned(ctx, j, DefaultPlan(), "the default plan: no planner is configured any more")
		case j.CreatedAt.Before(giveUp):
			err = r.s.startPlanned(ctx, j, DefaultPlan(), "the default plan: the planner did not answer in time")
		default:
			pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			err = r.s.plan(pctx, j.ID)
			cancel()
		}
		if err != nil {
			r.s.log.Warn().Err(err).Str("job_id", j.ID).Msg("planning again failed")
		}
	}
	advanced := map[string]bool{}
	if err := r.advanceStale(ctx, before, advanced); err != nil {
		return err
	}
	for _, t := range stale {
		if t.Status == schemas.TaskRejected {
			if err := r.s.revise(ctx, schemas.Event{JobID: t.JobID, TaskID: t.ID, Revision: t.Revision}); err != nil {
				return err
			}
			continue
		}
		if !advanced[t.JobID] {
			advanced[t.JobID] = true
			if err := r.s.advance(ctx, t.JobID); err != nil {
				return err
			}
		}
		// Mark it looked at, so the next pass looks at others.
		if _, err := r.s.store.TaskUpdate(ctx, store.TaskUpdateParams{ID: t.ID, From: []string{schemas.TaskPending}}); err != nil {
			return err
		}
	}
	return nil
}

// advanceStale advances running jobs not changed since before: one whose
// last promotion event was lost has nothing left that would move it. The
// walk goes oldest first, five pages a call, and carries on from where
// the last call stopped, so every stale job has its turn however many
// there are; a walk that reached the end starts again next time.
func (r *reconciler) advanceStale(ctx context.Context, before time.Time, advanced map[string]bool) error {
	p := store.JobListStaleParams{Status: schemas.JobRunning, UpdatedBefore: before, After: r.jobsAfter, AfterID: r.jobsAfterID, Limit: 100}
	for page := 0; page < 5; page++ {
		jobs, err := r.s.store.JobListStale(ctx, p)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if !advanced[j.ID] {
				advanced[j.ID] = true
				if err := r.s.advance(ctx, j.ID); err != nil {
					return err
				}
			}
			p.After, p.AfterID = j.CreatedAt, j.ID
			r.jobsAfter, r.jobsAfterID = j.CreatedAt, j.ID
		}
		if len(jobs) < p.Limit {
			r.jobsAfter, r.jobsAfterID = time.Time{}, "" // walked them all: the next walk starts again
			break
		}
	}
	return nil
}

// unsent names the tasks whose task message, and those whose review
// request, wait in the outbox after a failed publish (a stream missing):
// they reach the new stream without help. A row not tried yet may be
// published already and wait only to be deleted: it does not count.
func (r *reconciler) unsent(ctx context.Context) (tasks, reviews map[string]bool, err error) {
	rows, err := r.s.store.OutboxListUnsent(ctx, 100_000)
	if err != nil {
		return nil, nil, err
	}
	tasks, reviews = map[string]bool{}, map[string]bool{}
	for _, m := range rows {
		if m.Attempts == 0 {
			continue
		}
		var ids struct {
			TaskID string `json:"task_id"`
		}
		if json.Unmarshal(m.Payload, &ids) != nil || ids.TaskID == "" {
			continue
		}
		switch {
		case strings.HasPrefix(m.Subject, r.s.subj.Task("")):
			tasks[ids.TaskID] = true
		case strings.HasPrefix(m.Subject, r.s.subj.Review("")):
			reviews[ids.TaskID] = true
		}
	}
	return tasks, reviews, nil
}
