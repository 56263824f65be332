package orchestrator

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

//go:embed planner.md
var plannerPrompt string

// plan asks the planner model for a job's tasks: the plan is validated
// like an explicit plan (schema and DAG); an invalid one gets one retry
// with the problem; after that the default plan is used and the job's
// timeline says why. The job then runs.
func (s *Service) plan(ctx context.Context, jobID string) error {
	job, err := s.store.JobGetByID(ctx, jobID)
	if err != nil || job.Status != schemas.JobPlanning {
		return err
	}
	var calls []llm.Call
	record := func(c llm.Call) {
		calls = append(calls, c)
		s.cfg.Metrics.ModelCall(c.Model, c.Outcome, c.Latency, c.PromptTokens, c.CompletionTokens)
	}
	user := fmt.Sprintf("# Job: %s\n\n%s\n", job.Title, job.Brief)
	for _, a := range job.Attachments {
		user += fmt.Sprintf("\nAttachment: %s (%s)\n", a.Name, a.MediaType)
	}
	tasks, perr := s.askPlan(ctx, user, record)
	if perr != nil && !errors.Is(perr, errRetryPlan) {
		tasks, perr = s.askPlan(ctx, user+"\n\nYour previous plan could not be used: "+perr.Error()+"\nAnswer again with one valid JSON plan.", record)
	}
	note := fmt.Sprintf("planned by %s: %d tasks", s.cfg.Planner.Name(), len(tasks))
	switch {
	case errors.Is(perr, errRetryPlan):
		// The planner is away: the job goes on with the default plan, and
		// says why, rather than wait for it.
		tasks = DefaultPlan()
		note = "the default plan: the planner could not be reached: " + bus.Clip(perr.Error(), 1000)
	case perr != nil:
		tasks = DefaultPlan()
		note = "the default plan: the planner's plan could not be used twice: " + bus.Clip(perr.Error(), 1000)
	}
	s.recordCalls(ctx, job.ID, calls)
	return s.startPlanned(ctx, job, tasks, note)
}

// errRetryPlan marks a planner failure worth no second prompt.
var errRetryPlan = errors.New("planner unavailable")

// askPlan makes one planner call and validates its answer.
func (s *Service) askPlan(ctx context.Context, user string, record func(llm.Call)) ([]schemas.PlanTask, error) {
	answer, err := s.cfg.Planner.Complete(ctx, plannerPrompt, user, record)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errRetryPlan, err)
	}
	start, end := strings.Index(answer, "{"), strings.LastIndex(answer, "}")
	if start < 0 || end < start {
		return nil, errors.New("no JSON object in the answer")
	}
	var plan struct {
		Tasks json.RawMessage `json:"tasks"`
	}
	if err := json.Unmarshal([]byte(answer[start:end+1]), &plan); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	doc, _ := json.Marshal(map[string]any{"title": "plan", "tasks": plan.Tasks})
	sub, err := schemas.Decode[schemas.Submission](schemas.SchemaSubmission, doc)
	if err != nil {
		return nil, err
	}
	if len(sub.Tasks) == 0 {
		return nil, errors.New("tasks: the plan has no task")
	}
	if err := ValidatePlan(sub.Tasks); err != nil {
		return nil, err
	}
	return sub.Tasks, nil
}

func (s *Service) recordCalls(ctx context.Context, jobID string, calls []llm.Call) {
	rows := make([]store.ModelCall, len(calls))
	for i, c := range calls {
		rows[i] = store.ModelCall{ID: uuid.NewString(), JobID: jobID, Role: "planner", Model: c.Model,
			PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens, LatencyMS: c.Latency.Milliseconds(),
			Outcome: c.Outcome, Error: bus.Clip(c.Err, 2000)}
	}
	s.calls.Record(ctx, rows)
}

// startPlanned adds the planned tasks, queues those that depend on
// nothing and moves the job from planning to running, in one transaction.
func (s *Service) startPlanned(ctx context.Context, job store.Job, plan []schemas.PlanTask, note string) error {
	now := time.Now().UTC()
	tasks := newTasks(job.ID, plan, now)
	err := s.store.InTx(ctx, func(q store.Querier) error {
		moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobPlanning}, To: schemas.JobRunning})
		if err != nil || !moved {
			return err
		}
		if err := q.TaskInsert(ctx, job.ID, tasks); err != nil {
			return err
		}
		return s.queueReady(ctx, q, tasks, schemas.Event{JobID: job.ID, Kind: schemas.EventJobPlanned, Message: note})
	})
	if err == nil {
		s.cfg.Notify()
		s.log.Info().Str("job_id", job.ID).Int("tasks", len(tasks)).Msg(note)
	}
	return err
}
