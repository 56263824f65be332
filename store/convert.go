package store

import "github.com/troupe-dev/troupe/schemas"

// Schema returns the job as the API shows it.
func (j Job) Schema() schemas.Job {
	return schemas.Job{
		ID: j.ID, Title: j.Title, Brief: j.Brief, IdempotencyKey: j.IdempotencyKey,
		Status: j.Status, Reason: j.Reason, BudgetTokens: j.BudgetTokens,
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
	}
}

// Schema returns the task as the API shows it.
func (t Task) Schema() schemas.Task {
	deps := t.DependsOn
	if deps == nil {
		deps = []string{}
	}
	return schemas.Task{
		ID: t.ID, JobID: t.JobID, Key: t.Key, Role: t.Role, Instructions: t.Instructions,
		DependsOn: deps, Status: t.Status, Revision: t.Revision, Attempts: t.Attempts,
		Reason: t.Reason, Feedback: t.Feedback, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt,
	}
}

// Schema returns the output as the API shows it.
func (o Output) Schema() schemas.Output {
	files := o.Files
	if files == nil {
		files = []schemas.File{}
	}
	return schemas.Output{
		ID: o.ID, TaskID: o.TaskID, JobID: o.JobID, Role: o.Role, Revision: o.Revision,
		Status: o.Status, Content: o.Content, Files: files, Model: o.Model,
		PromptTokens: o.PromptTokens, CompletionTokens: o.CompletionTokens,
		LatencyMS: o.LatencyMS, Prompt: o.Prompt, CreatedAt: o.CreatedAt,
	}
}

// Schema returns the review as the API shows it.
func (r Review) Schema() schemas.Review {
	checks, lessons := r.Checks, r.Lessons
	if checks == nil {
		checks = []schemas.Check{}
	}
	if lessons == nil {
		lessons = []schemas.Lesson{}
	}
	return schemas.Review{
		ID: r.ID, OutputID: r.OutputID, TaskID: r.TaskID, JobID: r.JobID,
		Decision: r.Decision, Reviewer: r.Reviewer, Feedback: r.Feedback,
		Checks: checks, Lessons: lessons, CreatedAt: r.CreatedAt,
	}
}

// Schema returns the lesson as the API shows it.
func (l Lesson) Schema() schemas.Lesson {
	return schemas.Lesson{ID: l.ID, Text: l.Text, Scope: l.Scope, ReviewID: l.ReviewID, JobID: l.JobID, CreatedAt: l.CreatedAt}
}

// Schema returns the artifact as the API shows it.
func (a Artifact) Schema() schemas.Artifact {
	return schemas.Artifact{
		ID: a.ID, Path: a.Path, Version: a.Version, JobID: a.JobID, TaskID: a.TaskID,
		OutputID: a.OutputID, Role: a.Role, Content: a.Content, Size: a.Size, CreatedAt: a.CreatedAt,
	}
}
