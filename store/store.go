// Package store defines the store Troupe's services use: the system of
// record for jobs, tasks, outputs, reviews, artifacts, lessons, events, dead
// letters and the outbox. store/sqlite and store/postgres implement it, and
// store/storetest is the conformance suite both run.
//
// Methods are named noun-then-verb and take (ctx, params). State changes
// that must happen together run inside InTx; the Querier a transaction hands
// to its function has every method of the store.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/troupe-dev/troupe/schemas"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound is returned when a row named by id does not exist.
	ErrNotFound = errors.New("not found")
	// ErrSchemaTooNew is returned by Open when the database was migrated by a
	// newer Troupe than this one.
	ErrSchemaTooNew = errors.New("database schema is newer than this troupe")
)

// Store is a database: the Querier methods outside a transaction, InTx for
// a transaction, and the lifecycle.
type Store interface {
	Querier
	// InTx runs fn in one transaction: committed when fn returns nil, rolled
	// back otherwise. fn must use only the Querier it is given. fn may run
	// more than once before InTx returns (PostgreSQL aborts a transaction
	// in a deadlock; SQLite's group commit runs a caller again alone when
	// its group could not commit): it must have no effect outside the
	// transaction but on the variables it sets.
	InTx(ctx context.Context, fn func(q Querier) error) error
	// Migrate applies every embedded migration not yet applied.
	Migrate(ctx context.Context) error
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error
}

// Querier is every read and write of the store.
type Querier interface {
	// JobCreate inserts a job with its tasks. When p.Job.IdempotencyKey is set
	// and a job with that key exists, nothing is written and the existing job
	// is returned with created false. Empty IDs are generated and zero times
	// set to now; tasks take the job's ID and, without a time, its CreatedAt.
	JobCreate(ctx context.Context, p JobCreateParams) (job Job, created bool, err error)
	// JobGetByID returns one job, or ErrNotFound.
	JobGetByID(ctx context.Context, id string) (Job, error)
	// JobLock is JobGetByID that, inside a transaction, holds the job's
	// row until the transaction ends, as an update of it would. A
	// transaction that changes a job and its tasks locks the job first,
	// so that two of them never wait for each other (a deadlock).
	JobLock(ctx context.Context, id string) (Job, error)
	// JobList returns jobs newest first, filtered, one page at a time.
	JobList(ctx context.Context, p JobListParams) ([]Job, error)
	// JobListStale returns jobs of p.Status not updated since
	// p.UpdatedBefore, oldest first, one page at a time: the reconciler
	// walks every one of them across its passes.
	JobListStale(ctx context.Context, p JobListStaleParams) ([]Job, error)
	// JobSetStatus moves a job to p.To when its status is one of p.From (any
	// status when From is empty), setting Reason to p.Reason, and reports
	// whether it moved; ErrNotFound when there is no such job. With p.Else
	// set it must move (see TaskUpdateParams.Else).
	JobSetStatus(ctx context.Context, p JobSetStatusParams) (bool, error)

	// TaskInsert adds tasks to an existing job (a job planned after it was
	// created), after its other tasks.
	TaskInsert(ctx context.Context, jobID string, tasks []Task) error
	// TaskGetByID returns one task, or ErrNotFound.
	TaskGetByID(ctx context.Context, id string) (Task, error)
	// TaskListByJob returns a job's tasks in creation order.
	TaskListByJob(ctx context.Context, jobID string) ([]Task, error)
	// JobGetWithTasks is JobGetByID and TaskListByJob in one query.
	JobGetWithTasks(ctx context.Context, id string) (Job, []Task, error)
	// TaskStart marks a task running for one more attempt, when it is
	// p.Revision of job p.JobID as p.Role, queued or running, and has no
	// output of that revision yet; it returns the task as updated, its
	// job and, when p.Lessons asks, the lessons its prompt may use. When
	// it changes nothing, started is false and the caller reads what
	// stands in the way.
	TaskStart(ctx context.Context, p TaskStartParams) (st TaskStarted, started bool, err error)
	// TaskUpdate changes a task when its status is one of p.From (any when
	// empty) and, when p.Revision is set, its revision equals *p.Revision;
	// it reports whether it changed. Nil fields are left as they are.
	// ErrNotFound when there is no such task. With p.Else set it must
	// change (see TaskUpdateParams.Else).
	TaskUpdate(ctx context.Context, p TaskUpdateParams) (bool, error)

	// OutputStage inserts a staged output. Outputs are unique per (task,
	// revision): when one exists, nothing is written and the existing output
	// is returned with created false. Status defaults to "staged"; ErrNotFound
	// when the task does not exist.
	OutputStage(ctx context.Context, o Output) (out Output, created bool, err error)
	// OutputAdd is OutputStage for a transaction that reads nothing back:
	// when the task's revision has an output already, the transaction
	// fails with exists. ErrNotFound when the task does not
	// exist; that too may come from a later statement or the commit.
	// Like TaskUpdateParams.Else, the insert is held back on PostgreSQL.
	OutputAdd(ctx context.Context, o Output, exists error) error
	// OutputGetByID returns one output, or ErrNotFound.
	OutputGetByID(ctx context.Context, id string) (Output, error)
	// OutputGetByTaskRevision returns the output of one task revision, or ErrNotFound.
	OutputGetByTaskRevision(ctx context.Context, taskID string, revision int) (Output, error)
	// OutputListByJob returns a job's outputs, oldest first.
	OutputListByJob(ctx context.Context, jobID string) ([]Output, error)
	// OutputList returns outputs filtered by status and role, oldest first.
	OutputList(ctx context.Context, p OutputListParams) ([]Output, error)
	// OutputSetStatus moves an output to p.To when its status is one of
	// p.From (any when empty) and reports whether it moved; ErrNotFound when
	// there is no such output. With p.Else set it must move (see TaskUpdateParams.Else).
	OutputSetStatus(ctx context.Context, p OutputSetStatusParams) (bool, error)

	// ReviewInsert records a review decision; ErrNotFound when the output
	// does not exist.
	ReviewInsert(ctx context.Context, r Review) error
	// ReviewListByJob returns a job's reviews, oldest first.
	ReviewListByJob(ctx context.Context, jobID string) ([]Review, error)
	// ReviewListByOutput returns an output's reviews, oldest first.
	ReviewListByOutput(ctx context.Context, outputID string) ([]Review, error)

	// ArtifactInsert adds a version of a path: the version is one more than
	// the path's newest (1 for a new path) and is set on the returned row.
	ArtifactInsert(ctx context.Context, a Artifact) (Artifact, error)
	// ArtifactAdd adds a version of a path as ArtifactInsert does, without
	// telling which: inside a transaction a store may send it with the
	// next statement.
	ArtifactAdd(ctx context.Context, a Artifact) error
	// ArtifactList returns the newest version of every path that starts with
	// p.Prefix (and belongs to p.JobID when set), ordered by path, without content.
	// With p.JobID, "newest" is the newest version that job wrote.
	ArtifactList(ctx context.Context, p ArtifactListParams) ([]Artifact, error)
	// ArtifactGet returns one version of a path with its content (the newest
	// when version is 0), or ErrNotFound.
	ArtifactGet(ctx context.Context, path string, version int) (Artifact, error)
	// ArtifactListByTask returns the newest artifacts promoted from a task,
	// with content, ordered by path.
	ArtifactListByTask(ctx context.Context, taskID string) ([]Artifact, error)

	// LessonInsert adds lessons to MEMORY.
	LessonInsert(ctx context.Context, lessons []Lesson) error
	// LessonList returns lessons newest first, filtered by scope (a role
	// also matches "all" when p.IncludeGlobal) and by text, one page at a time.
	LessonList(ctx context.Context, p LessonListParams) ([]Lesson, error)

	// EventInsert appends events to jobs' timelines.
	EventInsert(ctx context.Context, events []Event) error
	// EventListByJob returns a job's events, oldest first.
	EventListByJob(ctx context.Context, jobID string) ([]Event, error)

	// EventEmit appends events to jobs' timelines and queues msgs to
	// publish, msgs[i] announcing events[i], all or none.
	EventEmit(ctx context.Context, events []Event, msgs []OutboxMessage) error
	// OutboxInsert adds messages to publish. Seq is assigned by the store.
	OutboxInsert(ctx context.Context, msgs []OutboxMessage) error
	// OutboxListUnsent returns up to limit (100 when not positive) unsent
	// messages in Seq order.
	OutboxListUnsent(ctx context.Context, limit int) ([]OutboxMessage, error)
	// OutboxDeleteSent removes messages that were published. Unknown seqs
	// are ignored.
	OutboxDeleteSent(ctx context.Context, seqs []int64) error
	// OutboxClaim claims up to p.Limit unsent messages, in Seq order, that
	// are due (NextAttemptAt not after now) and not claimed by another
	// relay (or whose claim expired): it sets ClaimedBy = p.Owner and
	// ClaimedUntil = now + p.Lease and returns them. Concurrent relays
	// never get the same message while its claim holds (PostgreSQL: FOR
	// UPDATE SKIP LOCKED). With p.Subjects, only messages whose subject
	// matches one of them are claimed; a filter it cannot apply exactly is
	// an error.
	OutboxClaim(ctx context.Context, p OutboxClaimParams) ([]OutboxMessage, error)
	// OutboxMarkFailed records a failed publish of one message: Attempts
	// goes up by one, LastError and NextAttemptAt are set, and the claim is
	// released. It returns the new attempt count, or ErrNotFound when the
	// message is not there unsent (another relay sent it meanwhile).
	OutboxMarkFailed(ctx context.Context, seq int64, lastError string, nextAttempt time.Time) (int, error)

	// DeadLetterInsert records a dead letter, with Status "open" when empty.
	// It is idempotent by id: when a dead letter with d.ID exists, nothing is
	// written and created is false.
	DeadLetterInsert(ctx context.Context, d DeadLetter) (created bool, err error)
	// DeadLetterGetByID returns one dead letter, or ErrNotFound.
	DeadLetterGetByID(ctx context.Context, id string) (DeadLetter, error)
	// DeadLetterList returns dead letters newest first, filtered, one page at a time.
	DeadLetterList(ctx context.Context, p DeadLetterListParams) ([]DeadLetter, error)
	// DeadLetterResolve moves a dead letter from "open" to status
	// ("replayed" or "discarded"), recording who (by) and when (ResolvedAt),
	// and reports whether it moved. ErrNotFound when it does not exist.
	DeadLetterResolve(ctx context.Context, id, status, by string) (bool, error)

	// ModelCallInsert records model calls: one row per call, failed ones too.
	// A call whose ID is recorded already is left as it is, so a write
	// whose commit went unanswered can be made again.
	ModelCallInsert(ctx context.Context, calls []ModelCall) error
	// ModelCallTotals sums a job's model calls by role and model, ordered
	// by role then model.
	ModelCallTotals(ctx context.Context, jobID string) ([]ModelCallTotal, error)
	// ModelCallTokens is the total of prompt and completion tokens of a
	// job's model calls.
	ModelCallTokens(ctx context.Context, jobID string) (int64, error)
	// ModelCallListByJob returns a job's model calls, oldest first.
	ModelCallListByJob(ctx context.Context, jobID string) ([]ModelCall, error)

	// TaskListStale returns tasks whose status is one of p.Statuses and
	// whose UpdatedAt is before p.UpdatedBefore, least recently updated
	// first, for the reconciler.
	TaskListStale(ctx context.Context, p TaskListStaleParams) ([]Task, error)
	// TaskCount counts the tasks of a role (every role when role is empty)
	// whose status is one of statuses.
	TaskCount(ctx context.Context, role string, statuses []string) (int, error)

	// JobCountByStatus counts jobs per status. A status without jobs is
	// absent from the map.
	JobCountByStatus(ctx context.Context) (map[string]int, error)
	// TaskCountByRoleStatus counts tasks per role and status, ordered by
	// role then status (bytewise). Pairs without tasks are absent.
	TaskCountByRoleStatus(ctx context.Context) ([]RoleStatusCount, error)
	// OutputCount counts outputs with a status ("" any), of a role ("" any).
	OutputCount(ctx context.Context, status, role string) (int, error)
	// DeadLetterCount counts dead letters with a status ("" any).
	DeadLetterCount(ctx context.Context, status string) (int, error)
	// RoleStats summarises each role that has tasks, ordered by role
	// (bytewise); lessons are counted from lessonsSince.
	RoleStats(ctx context.Context, lessonsSince time.Time) ([]RoleStat, error)
	// JobsFinished counts jobs that finished (status done, failed or
	// cancelled, by UpdatedAt) from since to now, in buckets of width
	// bucket, oldest first; every bucket is present, empty ones with zero
	// counts. The first bucket starts at since, the last is the one that
	// holds now; none when since is after now. bucket is truncated to the
	// microsecond and must stay positive, and there may be at most
	// MaxJobBuckets buckets.
	JobsFinished(ctx context.Context, since time.Time, bucket time.Duration) ([]JobBucket, error)
}

// MaxJobBuckets is the most buckets JobsFinished returns; asking for more
// is an error rather than a slice nobody can draw.
const MaxJobBuckets = 10_000

// Job is a row of jobs.
type Job struct {
	ID             string
	Title          string
	Brief          string
	IdempotencyKey string // empty when none; unique when set
	Status         string
	Reason         string
	BudgetTokens   int64
	Attachments    []schemas.Attachment
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Task is a row of tasks.
type Task struct {
	ID           string
	JobID        string
	Key          string // unique per job
	Role         string
	Instructions string
	DependsOn    []string
	Status       string
	Revision     int
	Attempts     int
	Reason       string
	Feedback     string // the latest reviewer feedback, for the next revision
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Output is a row of outputs.
type Output struct {
	ID               string
	TaskID           string
	JobID            string
	Role             string
	Revision         int
	Status           string
	Content          string
	Files            []schemas.File
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	LatencyMS        int64
	Prompt           string
	Checks           []schemas.Check // rule checks, set when review parks it for a person
	CreatedAt        time.Time
}

// Review is a row of reviews.
type Review struct {
	ID        string
	OutputID  string
	TaskID    string
	JobID     string
	Decision  string
	Reviewer  string
	Feedback  string
	Checks    []schemas.Check
	Lessons   []schemas.Lesson
	CreatedAt time.Time
}

// Artifact is a row of artifacts: one version of one path.
type Artifact struct {
	ID        string
	Path      string
	Version   int
	JobID     string
	TaskID    string
	OutputID  string
	Role      string
	Content   string
	Size      int
	CreatedAt time.Time
}

// Lesson is a row of lessons.
type Lesson struct {
	ID        string
	Text      string
	Scope     string // "all" or a role
	ReviewID  string
	JobID     string
	CreatedAt time.Time
}

// Event is a row of events.
type Event = schemas.Event

// DeadLetter is a row of dead_letters.
type DeadLetter = schemas.DeadLetter

// OutboxMessage is a row of outbox: a message to publish once the
// transaction that wrote it commits. MsgID is fixed when the row is written,
// so a publish retried after a crash is deduplicated by the stream.
type OutboxMessage struct {
	Seq       int64
	Subject   string
	MsgID     string
	Payload   []byte
	Headers   map[string]string
	CreatedAt time.Time
	// Attempts counts failed publishes; LastError is the latest failure.
	Attempts  int
	LastError string
	// NextAttemptAt is when a relay may try again (zero: at once).
	NextAttemptAt time.Time
}

// OutboxDirect lets a relay publish the outbox rows a transaction writes as
// soon as the transaction commits, instead of finding them on its next
// pass. The rows whose subject Match accepts (every row when Match is nil)
// are written claimed by Owner for Lease, so no relay's pass takes them
// meanwhile, and are handed to Committed, with their Seq, once their
// transaction has committed (never when it rolled back). A process that
// stops before publishing them leaves them to any relay when the lease
// ends. Committed must not block.
type OutboxDirect struct {
	Owner     string
	Lease     time.Duration
	Match     func(subject string) bool
	Committed func(msgs []OutboxMessage)
}

// ModelCall is a row of model_calls: one call to a model, for cost and audit.
type ModelCall struct {
	ID               string
	JobID            string
	TaskID           string
	Role             string
	Revision         int
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	LatencyMS        int64
	Outcome          string // ok | retry | rejected | error
	Error            string // why, when not ok; never holds a secret
	CreatedAt        time.Time
}

// ModelCallTotal sums the calls of one role and model.
type ModelCallTotal struct {
	Role             string
	Model            string
	Calls            int
	Failed           int // calls whose outcome is not ok
	PromptTokens     int64
	CompletionTokens int64
	LatencyMS        int64
}

// RoleStatusCount is the number of tasks of one role in one status.
type RoleStatusCount struct {
	Role   string
	Status string
	Count  int
}

// RoleStat summarises the work of one role.
type RoleStat struct {
	Role      string
	Tasks     int // every task of the role
	Done      int // tasks promoted
	Failed    int // tasks failed
	Cancelled int // tasks cancelled
	Promoted  int // promoted outputs of the role
	FirstPass int // promoted outputs with Revision 0 (promoted without a revision)
	// MeanOutputMS is the mean LatencyMS of the role's outputs, whatever
	// their status (the time a worker spent producing one); 0 when none.
	MeanOutputMS float64
	Lessons      int // lessons scoped to this role created at or after lessonsSince
}

// JobBucket counts the jobs that finished in [Start, Start+bucket), by
// final status.
type JobBucket struct {
	Start     time.Time
	Done      int
	Failed    int
	Cancelled int
}

// OutboxClaimParams are the arguments of OutboxClaim.
type OutboxClaimParams struct {
	Owner string        // the claiming relay, unique per process
	Limit int           // defaults to 100
	Lease time.Duration // how long the claim holds; defaults to 30s
	// Subjects, when set, are NATS subject filters: only messages whose
	// subject matches one of them are claimed ("*" is one token, a last
	// ">" one or more; literal tokens compare exactly, case included). A
	// relay whose NATS user may publish only some subjects claims only
	// those, and leaves the rest to a relay that may publish them. A
	// filter may have literal tokens before and after its wildcards but
	// not between two of them. Empty claims every subject.
	Subjects []string
	// Reclaim also claims the messages Owner holds a claim on already:
	// rows handed to it at commit (OutboxDirect) that it let go of.
	Reclaim bool
}

// JobCreateParams are the arguments of JobCreate.
type JobCreateParams struct {
	Job   Job
	Tasks []Task
}

// JobListParams filter JobList. Pages are by creation time: Before is the
// CreatedAt of the last job of the previous page (zero for the first page)
// and BeforeID breaks ties.
type JobListParams struct {
	Status   string
	Query    string // substring of the title, case-insensitive
	Role     string // jobs with a task of this role
	Before   time.Time
	BeforeID string
	Limit    int // defaults to 50
}

// JobListStaleParams are the arguments of JobListStale. Pages are by
// creation time, oldest first: After is the CreatedAt of the last job of
// the previous page (zero for the first page) and AfterID breaks ties.
type JobListStaleParams struct {
	Status        string
	UpdatedBefore time.Time
	After         time.Time
	AfterID       string
	Limit         int // defaults to 100
}

// JobSetStatusParams are the arguments of JobSetStatus.
type JobSetStatusParams struct {
	ID     string
	From   []string
	To     string
	Reason string
	Else   error // as TaskUpdateParams.Else
}

// OutputSetStatusParams are the arguments of OutputSetStatus.
type OutputSetStatusParams struct {
	ID   string
	From []string
	To   string
	Else error // as TaskUpdateParams.Else
}

// TaskStartParams names the task message a worker starts.
type TaskStartParams struct {
	ID, JobID, Role string
	Revision        int
	// Lessons, when positive, also reads up to this many lessons scoped
	// to Role or "all", newest first (LessonList with IncludeGlobal), with
	// the task: on PostgreSQL in the same statement.
	Lessons int
	// Event, when set, is recorded with its outbox message EventMessage
	// (as EventEmit records them) when the task starts, in the start's
	// transaction (on PostgreSQL its statement), and not otherwise: the
	// task's task_started.
	Event        *Event
	EventMessage OutboxMessage
}

// TaskStarted is what TaskStart read when it started a task.
type TaskStarted struct {
	Task    Task
	Job     Job
	Lessons []Lesson // when TaskStartParams.Lessons asked for them
}

// TaskUpdateParams are the arguments of TaskUpdate.
type TaskUpdateParams struct {
	ID           string
	From         []string
	Revision     *int // only when the task is at this revision
	Status       *string
	SetRevision  *int
	Reason       *string
	Feedback     *string
	IncrAttempts bool
	// Else makes the update one that must change the task: when it
	// changes none (the task is not in a status From names, say), the
	// transaction it is part of fails with Else, which the caller tells
	// apart with errors.Is. TaskUpdate then reports true at once, and on
	// PostgreSQL the update is held back and sent with the transaction's
	// next statement or its commit, so that a transaction of such writes
	// is one round trip to the server. Outside a transaction TaskUpdate
	// returns Else itself. For updates whose "no" ends the transaction
	// anyway; one whose "no" leads elsewhere reads its answer.
	Else error
}

// OutputListParams filter OutputList.
type OutputListParams struct {
	Status  string
	Role    string
	JobID   string
	After   time.Time // CreatedAt of the last output of the previous page
	AfterID string    // its id, to break ties
	Limit   int       // defaults to 50
}

// ArtifactListParams filter ArtifactList.
type ArtifactListParams struct {
	Prefix    string
	JobID     string
	AfterPath string // the last path of the previous page
	Limit     int    // defaults to 100
}

// LessonListParams filter LessonList.
type LessonListParams struct {
	Scope         string // "" for every scope
	IncludeGlobal bool   // with Scope set, also lessons scoped "all"
	Query         string // substring, case-insensitive
	Before        time.Time
	BeforeID      string
	Limit         int // defaults to 100
}

// DeadLetterListParams filter DeadLetterList. Every filter is optional.
type DeadLetterListParams struct {
	Status   string
	Source   string
	Class    string
	Query    string // substring of the reason, case-insensitive
	JobID    string
	TaskID   string
	ReplayOf string
	Before   time.Time // CreatedAt of the last dead letter of the previous page
	BeforeID string    // its id, to break ties
	Limit    int       // defaults to 100
}

// TaskListStaleParams are the arguments of TaskListStale.
type TaskListStaleParams struct {
	Statuses      []string
	UpdatedBefore time.Time
	Limit         int // defaults to 100
}
