// Package llm is the one interface Troupe's workers, reviewer and planner
// call language models through, and its providers: the built-in offline
// model here, OpenAI-compatible endpoints elsewhere.
package llm

import (
	"context"
	"errors"
	"time"

	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
)

// Model generates a role's output for one task revision.
type Model interface {
	// Name is the model's reference as configured, e.g. "offline" or
	// "bailian/qwen3.5-plus".
	Name() string
	// Generate answers one request.
	Generate(ctx context.Context, req Request) (Response, error)
}

// Completer answers a plain question with text: the model reviewer and
// the planner ask for JSON this way.
type Completer interface {
	Name() string
	Complete(ctx context.Context, system, user string, record func(Call)) (string, error)
}

// Request is one call: the rendered prompt for models that read text, and
// the same context as structured fields for models (such as the offline one)
// that build their answer from it.
type Request struct {
	Role   string // one of schemas.Roles
	System string // the role's prompt and the lessons that apply
	Prompt string // the task, its inputs and feedback, rendered
	Task   TaskContext
	// Record, when set, is told of every call made for the request
	// (repairs, fallbacks and failures too), for cost and audit.
	Record func(Call)
	// Before, when set, runs before every call (repairs and fallbacks
	// too); its error stops the request: the job's budget is spent.
	Before func(ctx context.Context) error
}

// Call is one call to a model.
type Call struct {
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	Latency          time.Duration
	Outcome          string // ok | retry | rejected | error
	Err              string // why, when not ok; masked (redact)
}

// record tells req.Record of a call, when it listens. Its error is
// masked: it is stored (model_calls.error) and shown by jobs show.
func (req Request) record(c Call) {
	if req.Record != nil {
		c.Err = redact.String(c.Err)
		req.Record(c)
	}
}

// TaskContext is what a worker knows about the task it runs.
type TaskContext struct {
	JobID        string
	JobTitle     string
	Brief        string
	TaskID       string
	Key          string
	Instructions string
	Revision     int
	Inputs       []Input          // promoted outputs of upstream tasks, read-only
	Lessons      []schemas.Lesson // MEMORY lessons relevant to the task, most relevant first
	Feedback     string           // the reviewer's feedback on the previous revision
	Attachments  []Attachment
}

// Attachment is a file given with a job, such as an image.
type Attachment = schemas.Attachment

// Input is one upstream artifact given to a task.
type Input struct {
	Path    string // e.g. projects/<job>/pm/PRD.md
	Role    string
	TaskKey string
	Content string
}

// Response is a model's answer: a summary and the files it produced.
type Response struct {
	Content          string
	Files            []schemas.File
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	Latency          time.Duration
	// ParseError says why the answer could not be read as files; Files is
	// then empty and Content holds the answer, for review to reject.
	ParseError string
}

// ErrRetryable marks an error worth retrying later (rate limit, 5xx,
// timeout); RetryAfter says when, if the provider said.
var ErrRetryable = errors.New("model call failed transiently")

// ErrRateLimited marks a provider's rate limit (HTTP 429): the request was
// fine, the provider asks to be called later. Workers wait for it while
// holding the task, rather than spending one of its deliveries.
var ErrRateLimited = errors.New("rate limited by the provider")

// RetryError is a transient model failure with the delay the provider asked for.
type RetryError struct {
	Err        error
	RetryAfter time.Duration
	// RateLimited says the provider answered 429 Too Many Requests.
	RateLimited bool
}

func (e *RetryError) Error() string { return e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }
func (e *RetryError) Is(target error) bool {
	return target == ErrRetryable || (e.RateLimited && target == ErrRateLimited)
}
