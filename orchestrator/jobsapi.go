package orchestrator

// The read side of the jobs API: jobs.get and jobs.list.

import (
	"context"
	"errors"
	"fmt"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/secretscan"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

func (s *Service) getJob(ctx context.Context, req schemas.IDRequest) (any, error) {
	return s.jobView(ctx, req.ID, true)
}

// jobView is a job with its tasks, their outputs and reviews, and totals;
// with events when full.
func (s *Service) jobView(ctx context.Context, id string, full bool) (schemas.Job, error) {
	job, err := s.store.JobGetByID(ctx, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return schemas.Job{}, &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("id: no job %q", id)}
		}
		return schemas.Job{}, err
	}
	tasks, err := s.store.TaskListByJob(ctx, id)
	if err != nil {
		return schemas.Job{}, err
	}
	view := viewOf(job, tasks)
	if full {
		totals := view.Totals
		byTask := map[string]*schemas.Task{}
		for i := range view.Tasks {
			byTask[view.Tasks[i].ID] = &view.Tasks[i]
		}
		outputs, err := s.store.OutputListByJob(ctx, id)
		if err != nil {
			return schemas.Job{}, err
		}
		if err := s.addCallTotals(ctx, totals, job); err != nil {
			return schemas.Job{}, err
		}
		mask := secretscan.New(s.cfg.Secrets...)
		for _, o := range outputs {
			if t := byTask[o.TaskID]; t != nil {
				// Contents are large: troupe.api.reviews.get and
				// artifacts.get give them one at a time.
				sum := o.Schema().Summary()
				sum.Content = mask.Mask("", sum.Content)
				for i := range sum.Files {
					sum.Files[i].Path = mask.MaskPath(sum.Files[i].Path)
				}
				t.Outputs = append(t.Outputs, sum)
			}
		}
		reviews, err := s.store.ReviewListByJob(ctx, id)
		if err != nil {
			return schemas.Job{}, err
		}
		for _, r := range reviews {
			if t := byTask[r.TaskID]; t != nil {
				t.Reviews = append(t.Reviews, r.Schema())
			}
		}
		events, err := s.store.EventListByJob(ctx, id)
		if err != nil {
			return schemas.Job{}, err
		}
		view.Events = events
	}
	return view, nil
}

// viewOf is a job with its tasks and the totals they give.
func viewOf(job store.Job, tasks []store.Task) schemas.Job {
	view := job.Schema()
	view.Totals = &schemas.Totals{Tasks: len(tasks)}
	view.Tasks = make([]schemas.Task, len(tasks))
	for i, t := range tasks {
		view.Tasks[i] = t.Schema()
		if t.Status == schemas.TaskPromoted {
			view.Totals.Promoted++
		}
	}
	return view
}

// addCallTotals adds a job's model calls to its totals: tokens, calls and
// cost, overall and by role and model.
func (s *Service) addCallTotals(ctx context.Context, totals *schemas.Totals, job store.Job) error {
	rows, err := s.store.ModelCallTotals(ctx, job.ID)
	if err != nil {
		return err
	}
	totals.BudgetTokens = job.BudgetTokens
	var cost float64
	priced := false
	for _, r := range rows {
		mt := schemas.ModelTotal{Role: r.Role, Model: r.Model, Calls: r.Calls, Failed: r.Failed,
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, LatencyMS: r.LatencyMS}
		if p, ok := s.cfg.Prices[r.Model]; ok {
			c := p.Cost(r.PromptTokens, r.CompletionTokens)
			mt.Cost, cost, priced = &c, cost+c, true
		}
		totals.ByModel = append(totals.ByModel, mt)
		totals.Calls += r.Calls
		totals.PromptTokens += r.PromptTokens
		totals.CompletionTokens += r.CompletionTokens
	}
	if priced {
		totals.Cost = &cost
	}
	return nil
}

func (s *Service) listJobs(ctx context.Context, req schemas.ListRequest) (any, error) {
	switch req.Status {
	case "", schemas.JobPlanning, schemas.JobRunning, schemas.JobDone, schemas.JobFailed, schemas.JobCancelled, schemas.JobBudgetExceeded:
	default:
		return nil, bus.BadRequest("invalid_request", "status: %q is not a job status; use planning, running, done, failed, cancelled or budget_exceeded", req.Status)
	}
	p := store.JobListParams{Status: req.Status, Query: req.Query, Limit: clampLimit(req.Limit, 50, 200)}
	if req.Cursor != "" {
		t, id, err := bus.DecodeCursor(req.Cursor)
		if err != nil {
			return nil, bus.BadRequest("invalid_request", "cursor: %v", err)
		}
		p.Before, p.BeforeID = t, id
	}
	jobs, err := s.store.JobList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := schemas.JobList{Jobs: make([]schemas.Job, len(jobs))}
	for i, j := range jobs {
		out.Jobs[i] = j.Schema()
		out.Jobs[i].Brief = "" // a list is a summary; jobs.get has it
	}
	if len(jobs) == p.Limit {
		last := jobs[len(jobs)-1]
		out.NextCursor = bus.EncodeCursor(last.CreatedAt, last.ID)
	}
	return out, nil
}
