// Package schemas holds the JSON Schemas of every message and document Troupe
// exchanges, and the Go types they describe. Every boundary (API request,
// task message, review request, event, dead letter) validates with Validate
// before it trusts a payload.
package schemas

import (
	"encoding/json"
	"time"
)

// Roles are the six role names, in the order of the default plan.
var Roles = []string{"pm", "architect", "developer", "tester", "writer", "devops"}

// IsRole reports whether r is one of Roles.
func IsRole(r string) bool {
	for _, x := range Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Submission is a job as a user submits it on troupe.api.jobs.submit.
// Every field but Title is optional.
type Submission struct {
	Title          string       `json:"title"`
	Brief          string       `json:"brief,omitempty"`
	IdempotencyKey string       `json:"idempotency_key,omitempty"`
	Tasks          []PlanTask   `json:"tasks,omitempty"`
	Attachments    []Attachment `json:"attachments,omitempty"`
	Budget         *Budget      `json:"budget,omitempty"`
}

// PlanTask is one task of an explicit plan.
type PlanTask struct {
	Key          string   `json:"key"`
	Role         string   `json:"role"`
	Instructions string   `json:"instructions,omitempty"`
	DependsOn    []string `json:"depends_on,omitempty"`
}

// Attachment is a file given with a job, such as an image.
type Attachment struct {
	Name      string `json:"name"`
	MediaType string `json:"media_type"`
	Data      string `json:"data"` // base64
}

// Budget bounds what a job may spend.
type Budget struct {
	MaxTokens int64 `json:"max_tokens,omitempty"`
}

// TaskMessage is what the orchestrator publishes on troupe.tasks.<role>. It
// names the task; the worker reads the rest (instructions, inputs, lessons,
// feedback) from the store, which is the system of record.
type TaskMessage struct {
	TaskID   string `json:"task_id"`
	JobID    string `json:"job_id"`
	Key      string `json:"key"`
	Role     string `json:"role"`
	Revision int    `json:"revision"`
}

// ReviewRequest is what a worker publishes on troupe.review.<role> after it
// staged an output.
type ReviewRequest struct {
	OutputID string `json:"output_id"`
	TaskID   string `json:"task_id"`
	JobID    string `json:"job_id"`
	Role     string `json:"role"`
	Revision int    `json:"revision"`
}

// File is one named file of an output or artifact.
type File struct {
	Path    string `json:"path"`
	Content string `json:"content,omitempty"`
	// Size is set in summaries, which leave Content out.
	Size int `json:"size,omitempty"`
}

// Summary returns the output without its prompt and file contents (each
// file keeps its path and size), for views that list many outputs and must
// stay under the server's max payload.
func (o Output) Summary() Output {
	o.Prompt = ""
	files := make([]File, len(o.Files))
	for i, f := range o.Files {
		files[i] = File{Path: f.Path, Size: len(f.Content)}
	}
	o.Files = files
	return o
}

// Output is a staged output of one task revision.
type Output struct {
	ID               string    `json:"id"`
	TaskID           string    `json:"task_id"`
	JobID            string    `json:"job_id"`
	Role             string    `json:"role"`
	Revision         int       `json:"revision"`
	Status           string    `json:"status"`
	Content          string    `json:"content"`
	Files            []File    `json:"files"`
	Model            string    `json:"model"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	LatencyMS        int64     `json:"latency_ms"`
	Prompt           string    `json:"prompt,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
}

// Lesson is one entry of MEMORY.
type Lesson struct {
	ID        string    `json:"id,omitempty"`
	Text      string    `json:"text"`
	Scope     string    `json:"scope,omitempty"` // "all" or a role; a decision's lesson defaults to the output's role
	ReviewID  string    `json:"review_id,omitempty"`
	JobID     string    `json:"job_id,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Check is the result of one review check.
type Check struct {
	Name   string `json:"name"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail,omitempty"`
}

// ReviewDecision is a reviewer's decision on troupe.api.reviews.decide.
type ReviewDecision struct {
	OutputID string   `json:"output_id"`
	Decision string   `json:"decision"` // promote | reject
	Reviewer string   `json:"reviewer,omitempty"`
	Feedback string   `json:"feedback,omitempty"`
	Lessons  []Lesson `json:"lessons,omitempty"`
}

// Review is a recorded decision.
type Review struct {
	ID        string    `json:"id"`
	OutputID  string    `json:"output_id"`
	TaskID    string    `json:"task_id"`
	JobID     string    `json:"job_id"`
	Decision  string    `json:"decision"`
	Reviewer  string    `json:"reviewer"`
	Feedback  string    `json:"feedback,omitempty"`
	Checks    []Check   `json:"checks"`
	Lessons   []Lesson  `json:"lessons"`
	CreatedAt time.Time `json:"created_at"`
}

// Event is published on troupe.events.<job_id>.<kind> and kept in the store
// as the job's timeline.
type Event struct {
	ID       string         `json:"id"`
	JobID    string         `json:"job_id"`
	TaskID   string         `json:"task_id,omitempty"`
	OutputID string         `json:"output_id,omitempty"`
	Kind     string         `json:"kind"`
	Role     string         `json:"role,omitempty"`
	Revision int            `json:"revision"`
	Message  string         `json:"message,omitempty"`
	Time     time.Time      `json:"time"`
	Data     map[string]any `json:"data,omitempty"`
}

// Event kinds. Each is one subject token.
const (
	EventJobSubmitted         = "job_submitted"
	EventJobPlanned           = "job_planned"
	EventTaskQueued           = "task_queued"
	EventTaskStarted          = "task_started"
	EventOutputStaged         = "output_staged"
	EventOutputAwaitingReview = "output_awaiting_review"
	EventOutputPromoted       = "output_promoted"
	EventOutputRejected       = "output_rejected"
	EventTaskFailed           = "task_failed"
	EventTaskDeadLettered     = "task_dead_lettered"
	EventTaskRedispatched     = "task_redispatched"
	EventDeadLetterReplayed   = "dead_letter_replayed"
	EventJobDone              = "job_done"
	EventJobFailed            = "job_failed"
	EventJobCancelled         = "job_cancelled"
	EventJobBudgetExceeded    = "job_budget_exceeded"
)

// EventKinds are every event kind: TROUPE_EVENTS stores these only.
var EventKinds = []string{
	EventJobSubmitted, EventJobPlanned, EventTaskQueued, EventTaskStarted, EventOutputStaged,
	EventOutputAwaitingReview, EventOutputPromoted, EventOutputRejected, EventTaskFailed,
	EventTaskDeadLettered, EventTaskRedispatched, EventDeadLetterReplayed, EventJobDone,
	EventJobFailed, EventJobCancelled, EventJobBudgetExceeded,
}

// DeadLetter is a message that could not be processed, with the reason.
type DeadLetter struct {
	ID        string            `json:"id"`
	Source    string            `json:"source"`
	Subject   string            `json:"subject"`
	Payload   string            `json:"payload"`
	Headers   map[string]string `json:"headers,omitempty"`
	Reason    string            `json:"reason"`
	Class     string            `json:"class"` // permanent | transient | exhausted
	Attempts  int               `json:"attempts"`
	StreamSeq uint64            `json:"stream_seq,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	ReplayOf  string            `json:"replay_of,omitempty"`
	Status    string            `json:"status,omitempty"` // open | replayed | discarded
	TaskID    string            `json:"task_id,omitempty"`
	JobID     string            `json:"job_id,omitempty"`
	Stream    string            `json:"stream,omitempty"`
	// ResolvedBy and ResolvedAt say who replayed or discarded it, and when.
	ResolvedBy string    `json:"resolved_by,omitempty"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	// PayloadBytes is the payload's whole size, set only in API replies
	// whose Payload holds its beginning (a reply is bounded by the
	// server's max payload); the store keeps it whole.
	PayloadBytes int `json:"payload_bytes,omitempty"`
}

// Dead letter statuses.
const (
	DeadLetterOpen      = "open"
	DeadLetterReplayed  = "replayed"
	DeadLetterDiscarded = "discarded"
)

// Job statuses.
const (
	JobPlanning  = "planning"
	JobRunning   = "running"
	JobDone      = "done"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
	// JobBudgetExceeded is a job that spent its token budget: no further
	// task of it is dispatched.
	JobBudgetExceeded = "budget_exceeded"
)

// JobStatuses lists every job status, from first to last.
var JobStatuses = []string{JobPlanning, JobRunning, JobDone, JobFailed, JobCancelled, JobBudgetExceeded}

// Task statuses. A task is pending until its upstream tasks are promoted,
// queued when published, running while a worker has it, staged when its
// output waits for review, awaiting_review when a person must decide,
// rejected between a rejection and its next revision.
const (
	TaskPending        = "pending"
	TaskQueued         = "queued"
	TaskRunning        = "running"
	TaskStaged         = "staged"
	TaskAwaitingReview = "awaiting_review"
	TaskRejected       = "rejected"
	TaskPromoted       = "promoted"
	TaskFailed         = "failed"
	TaskCancelled      = "cancelled"
	// TaskDeadLettered is a task whose message was dead-lettered; it waits
	// for a replay.
	TaskDeadLettered = "dead_lettered"
)

// Output statuses.
const (
	OutputStaged         = "staged"
	OutputAwaitingReview = "awaiting_review"
	OutputPromoted       = "promoted"
	OutputRejected       = "rejected"
	// OutputCancelled is an output whose job was cancelled or failed
	// before anyone decided on it.
	OutputCancelled = "cancelled"
)

// Job is a job as the API returns it.
type Job struct {
	ID             string       `json:"id"`
	Title          string       `json:"title"`
	Brief          string       `json:"brief,omitempty"`
	IdempotencyKey string       `json:"idempotency_key,omitempty"`
	Status         string       `json:"status"`
	Reason         string       `json:"reason,omitempty"`
	BudgetTokens   int64        `json:"budget_tokens,omitempty"`
	Attachments    []Attachment `json:"attachments,omitempty"`
	CreatedAt      time.Time    `json:"created_at"`
	UpdatedAt      time.Time    `json:"updated_at"`
	Tasks          []Task       `json:"tasks,omitempty"`
	Totals         *Totals      `json:"totals,omitempty"`
	Events         []Event      `json:"events,omitempty"`
}

// Totals sums a job's model usage.
type Totals struct {
	Tasks            int          `json:"tasks"`
	Promoted         int          `json:"promoted"`
	PromptTokens     int64        `json:"prompt_tokens"`
	CompletionTokens int64        `json:"completion_tokens"`
	Calls            int          `json:"calls,omitempty"`
	BudgetTokens     int64        `json:"budget_tokens,omitempty"`
	Cost             *float64     `json:"cost,omitempty"`
	ByModel          []ModelTotal `json:"by_model,omitempty"`
}

// ModelTotal sums a job's calls of one role to one model.
type ModelTotal struct {
	Role             string   `json:"role"`
	Model            string   `json:"model"`
	Calls            int      `json:"calls"`
	Failed           int      `json:"failed"`
	PromptTokens     int64    `json:"prompt_tokens"`
	CompletionTokens int64    `json:"completion_tokens"`
	LatencyMS        int64    `json:"latency_ms"`
	Cost             *float64 `json:"cost,omitempty"`
}

// Task is a task as the API returns it.
type Task struct {
	ID           string    `json:"id"`
	JobID        string    `json:"job_id"`
	Key          string    `json:"key"`
	Role         string    `json:"role"`
	Instructions string    `json:"instructions,omitempty"`
	DependsOn    []string  `json:"depends_on"`
	Status       string    `json:"status"`
	Revision     int       `json:"revision"`
	Attempts     int       `json:"attempts"`
	Reason       string    `json:"reason,omitempty"`
	Feedback     string    `json:"feedback,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	Outputs      []Output  `json:"outputs,omitempty"`
	Reviews      []Review  `json:"reviews,omitempty"`
}

// Artifact is a promoted file in the shared area. A path has versions 1, 2, …;
// a new promotion adds a version and never overwrites one.
type Artifact struct {
	ID        string    `json:"id"`
	Path      string    `json:"path"`
	Version   int       `json:"version"`
	JobID     string    `json:"job_id,omitempty"`
	TaskID    string    `json:"task_id,omitempty"`
	OutputID  string    `json:"output_id,omitempty"`
	Role      string    `json:"role,omitempty"`
	Content   string    `json:"content,omitempty"`
	Size      int       `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// ErrorReply is the body of every API error reply.
type ErrorReply struct {
	Error string     `json:"error"`
	Code  string     `json:"code"`
	Jobs  []JobError `json:"jobs,omitempty"`
}

// JobError is what is wrong with one job of a batch.
type JobError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// SubmissionBatch is the request of troupe.api.jobs.submit_batch. Each job
// is a Submission, validated on its own.
type SubmissionBatch struct {
	Jobs []json.RawMessage `json:"jobs"`
}

// SubmissionBatchReply is the reply of troupe.api.jobs.submit_batch.
type SubmissionBatchReply struct {
	Jobs    []BatchJob `json:"jobs"`
	Created int        `json:"created"`
}

// BatchJob is one job of a batch as submitted.
type BatchJob struct {
	ID      string `json:"id"`
	Title   string `json:"title"`
	Status  string `json:"status"`
	Created bool   `json:"created"`
}

// IDRequest is the request of every API call that names one thing by id.
type IDRequest struct {
	ID string `json:"id"`
}

// ListRequest is the request of every paginated list call. Cursor is the
// next_cursor of the previous page.
type ListRequest struct {
	Status string `json:"status,omitempty"`
	Role   string `json:"role,omitempty"`
	Query  string `json:"query,omitempty"`
	JobID  string `json:"job_id,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	Cursor string `json:"cursor,omitempty"`
}

// JobList is the reply of troupe.api.jobs.list.
type JobList struct {
	Jobs       []Job  `json:"jobs"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// ReviewItem is one output waiting for a person, with its task's context.
type ReviewItem struct {
	Output   Output  `json:"output"`
	Task     Task    `json:"task"`
	JobTitle string  `json:"job_title"`
	Checks   []Check `json:"checks,omitempty"`
	Previous *Output `json:"previous,omitempty"`
}

// ReviewList is the reply of troupe.api.reviews.list.
type ReviewList struct {
	Items      []ReviewItem `json:"items"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// LessonList is the reply of troupe.api.memory.list.
type LessonList struct {
	Lessons    []Lesson `json:"lessons"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// ArtifactList is the reply of troupe.api.artifacts.list.
type ArtifactList struct {
	Artifacts  []Artifact `json:"artifacts"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// ArtifactListRequest is the request of troupe.api.artifacts.list.
type ArtifactListRequest struct {
	Prefix string `json:"prefix,omitempty"`
	JobID  string `json:"job_id,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	Cursor string `json:"cursor,omitempty"`
}

// ArtifactGetRequest is the request of troupe.api.artifacts.get: one version
// of a path, the newest when Version is 0.
type ArtifactGetRequest struct {
	Path    string `json:"path"`
	Version int    `json:"version,omitempty"`
}

// DeadLetterFilter selects dead letters; every field is optional.
type DeadLetterFilter struct {
	Status string `json:"status,omitempty"`
	Source string `json:"source,omitempty"`
	Class  string `json:"class,omitempty"`
	Query  string `json:"query,omitempty"` // substring of the reason
	JobID  string `json:"job_id,omitempty"`
	TaskID string `json:"task_id,omitempty"`
}

// DeadLetterListRequest is the request of troupe.api.dlq.list.
type DeadLetterListRequest struct {
	DeadLetterFilter
	Limit  int    `json:"limit,omitempty"`
	Cursor string `json:"cursor,omitempty"`
}

// DeadLetterList is the reply of troupe.api.dlq.list.
type DeadLetterList struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	NextCursor  string       `json:"next_cursor,omitempty"`
}

// DeadLetterAction is the request of troupe.api.dlq.replay and discard: one
// dead letter by id, or every open one that matches a filter.
type DeadLetterAction struct {
	ID     string            `json:"id,omitempty"`
	Filter *DeadLetterFilter `json:"filter,omitempty"`
	By     string            `json:"by,omitempty"`
}

// DeadLetterActionReply lists the dead letters an action changed.
type DeadLetterActionReply struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	Count       int          `json:"count"`
}

// ModelReview is what a model reviewer answers: the checklist and the decision.
type ModelReview struct {
	Decision string     `json:"decision"`
	Quality  string     `json:"quality"`
	Errors   []string   `json:"errors,omitempty"`
	Feedback string     `json:"feedback,omitempty"`
	Lessons  []Lesson   `json:"lessons,omitempty"`
	Skill    *Skill     `json:"skill,omitempty"`
	Impact   []RoleNote `json:"impact,omitempty"`
}

// Skill is a skill document a reviewer proposes for skills/<name>/SKILL.md.
type Skill struct {
	Name    string `json:"name"`
	Content string `json:"content"`
}

// RoleNote is what one role should know.
type RoleNote struct {
	Role string `json:"role"`
	Note string `json:"note"`
}

// WorkerInfo is what a running worker answers on <prefix>.workers.ping:
// who it is and how busy.
type WorkerInfo struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	Model       string    `json:"model"`
	Concurrency int       `json:"concurrency"`
	InFlight    int       `json:"in_flight"`
	StartedAt   time.Time `json:"started_at"`
	// Dispatch counts, since the worker started, how long each task it
	// started had waited: stored in JetStream → this worker starting it.
	Dispatch []Bucket `json:"dispatch,omitempty"`
}

// Bucket is one bucket of a latency histogram: Count durations longer
// than Low and at most High, in seconds.
type Bucket struct {
	Low   float64 `json:"low"`
	High  float64 `json:"high"`
	Count uint64  `json:"count"`
}

// ProcessInfo is what every Troupe process answers on
// <prefix>.processes.ping: who it is and what it has used.
type ProcessInfo struct {
	ID        string    `json:"id"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Services  []string  `json:"services"` // "dev", or as their NATS users are named: orchestrator, review, worker-<role>
	StartedAt time.Time `json:"started_at"`
	// CPUSeconds is the CPU time, user and system, used since it started.
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSMB      float64 `json:"rss_mb"`      // resident now, MiB (0 without /proc)
	PeakRSSMB  float64 `json:"peak_rss_mb"` // the most it has been resident, MiB
}
