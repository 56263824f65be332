package schemas

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// decoders decode a document of each schema into its Go type, so that tests
// check that what validates also unmarshals.
var decoders = map[string]func([]byte) (any, error){
	SchemaSubmission:            decodeAs[Submission](SchemaSubmission),
	SchemaTask:                  decodeAs[TaskMessage](SchemaTask),
	SchemaReviewRequest:         decodeAs[ReviewRequest](SchemaReviewRequest),
	SchemaOutput:                decodeAs[Output](SchemaOutput),
	SchemaReviewDecision:        decodeAs[ReviewDecision](SchemaReviewDecision),
	SchemaReview:                decodeAs[Review](SchemaReview),
	SchemaEvent:                 decodeAs[Event](SchemaEvent),
	SchemaDeadLetter:            decodeAs[DeadLetter](SchemaDeadLetter),
	SchemaJob:                   decodeAs[Job](SchemaJob),
	SchemaJobList:               decodeAs[JobList](SchemaJobList),
	SchemaReviewList:            decodeAs[ReviewList](SchemaReviewList),
	SchemaLessonList:            decodeAs[LessonList](SchemaLessonList),
	SchemaArtifact:              decodeAs[Artifact](SchemaArtifact),
	SchemaArtifactList:          decodeAs[ArtifactList](SchemaArtifactList),
	SchemaErrorReply:            decodeAs[ErrorReply](SchemaErrorReply),
	SchemaIDRequest:             decodeAs[IDRequest](SchemaIDRequest),
	SchemaListRequest:           decodeAs[ListRequest](SchemaListRequest),
	SchemaArtifactListRequest:   decodeAs[ArtifactListRequest](SchemaArtifactListRequest),
	SchemaArtifactGetRequest:    decodeAs[ArtifactGetRequest](SchemaArtifactGetRequest),
	SchemaDeadLetterFilter:      decodeAs[DeadLetterFilter](SchemaDeadLetterFilter),
	SchemaDeadLetterListRequest: decodeAs[DeadLetterListRequest](SchemaDeadLetterListRequest),
	SchemaDeadLetterList:        decodeAs[DeadLetterList](SchemaDeadLetterList),
	SchemaDeadLetterAction:      decodeAs[DeadLetterAction](SchemaDeadLetterAction),
	SchemaDeadLetterActionReply: decodeAs[DeadLetterActionReply](SchemaDeadLetterActionReply),
	SchemaModelReview:           decodeAs[ModelReview](SchemaModelReview),
	SchemaSubmissionBatch:       decodeAs[SubmissionBatch](SchemaSubmissionBatch),
	SchemaSubmissionBatchReply:  decodeAs[SubmissionBatchReply](SchemaSubmissionBatchReply),
}

func decodeAs[T any](schema string) func([]byte) (any, error) {
	return func(data []byte) (any, error) {
		return Decode[T](schema, data)
	}
}

var (
	t0 = time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	t1 = t0.Add(90 * time.Second)
)

func fullOutput() Output {
	return Output{
		ID: "o-1", TaskID: "t-1", JobID: "j-1", Role: "developer", Revision: 1,
		Status: OutputAwaitingReview, Content: "Implemented per-key limits.",
		Files: []File{
			{Path: "limiter/limiter.go", Content: "package limiter\n"},
			{Path: "README.md", Content: ""},
		},
		Model: "openai:gpt-x", PromptTokens: 1200, CompletionTokens: 800, LatencyMS: 5300,
		Prompt: "You are the developer.", CreatedAt: t0,
	}
}

func fullReview() Review {
	return Review{
		ID: "r-1", OutputID: "o-1", TaskID: "t-1", JobID: "j-1",
		Decision: "reject", Reviewer: "human:alice", Feedback: "Add tests for bursts.",
		Checks: []Check{{Name: "secrets", Passed: true}, {Name: "sections", Passed: false, Detail: "no Usage section"}},
		Lessons: []Lesson{{
			ID: "l-1", Text: "Cover bursts in rate limiter tests.", Scope: "tester",
			ReviewID: "r-1", JobID: "j-1", CreatedAt: t1,
		}},
		CreatedAt: t1,
	}
}

func fullTask() Task {
	return Task{
		ID: "t-1", JobID: "j-1", Key: "impl", Role: "developer", Instructions: "Build it.",
		DependsOn: []string{"prd", "design"}, Status: TaskRejected, Revision: 1, Attempts: 2,
		Reason: "", Feedback: "Add tests for bursts.", CreatedAt: t0, UpdatedAt: t1,
		Outputs: []Output{fullOutput()}, Reviews: []Review{fullReview()},
	}
}

func fullEvent() Event {
	return Event{
		ID: "e-1", JobID: "j-1", TaskID: "t-1", OutputID: "o-1", Kind: EventOutputRejected,
		Role: "developer", Revision: 1, Message: "impl rejected by human:alice", Time: t1,
		Data: map[string]any{"reviewer": "human:alice", "checks": float64(2), "nested": map[string]any{"ok": false}},
	}
}

func fullJob() Job {
	return Job{
		ID: "j-1", Title: "Per-key rate limiting", Brief: "Add per-API-key limits with clear 429s.",
		IdempotencyKey: "ticket-4711", Status: JobRunning, BudgetTokens: 200000,
		Attachments: []Attachment{{Name: "arch.png", MediaType: "image/png", Data: "iVBORw0KGgo="}},
		CreatedAt:   t0, UpdatedAt: t1,
		Tasks:  []Task{fullTask(), {ID: "t-0", JobID: "j-1", Key: "prd", Role: "pm", Status: TaskPromoted, CreatedAt: t0, UpdatedAt: t0}},
		Totals: &Totals{Tasks: 2, Promoted: 1, PromptTokens: 1200, CompletionTokens: 800},
		Events: []Event{fullEvent(), {ID: "e-0", JobID: "j-1", Kind: EventJobSubmitted, Time: t0}},
	}
}

func fullArtifact() Artifact {
	return Artifact{
		ID: "a-1", Path: "projects/j-1/developer/limiter.go", Version: 2, JobID: "j-1", TaskID: "t-1",
		OutputID: "o-1", Role: "developer", Content: "package limiter\n", Size: 16, CreatedAt: t1,
	}
}

// TestGoValuesValidate checks that what the services marshal, fully
// populated or as small as they produce it, validates and decodes back.
func TestGoValuesValidate(t *testing.T) {
	t.Parallel()
	minimalOutput := Output{ID: "o-2", TaskID: "t-1", JobID: "j-1", Role: "pm", Status: OutputStaged, Model: "offline", CreatedAt: t0}
	noFiles := minimalOutput
	noFiles.Files = []File{}

	tests := []struct {
		name   string
		schema string
		value  any
	}{
		{"submission full", SchemaSubmission, Submission{
			Title: "Per-key rate limiting", Brief: "Add per-API-key limits with clear 429s.", IdempotencyKey: "ticket-4711",
			Tasks: []PlanTask{
				{Key: "prd", Role: "pm", Instructions: "Write the PRD."},
				{Key: "impl", Role: "developer", Instructions: "Build it.", DependsOn: []string{"prd"}},
			},
			Attachments: []Attachment{{Name: "arch.png", MediaType: "image/png", Data: "iVBORw0KGgo="}},
			Budget:      &Budget{MaxTokens: 200000},
		}},
		{"submission minimal", SchemaSubmission, Submission{Title: "Write a haiku"}},
		{"submission empty budget", SchemaSubmission, Submission{Title: "x", Budget: &Budget{}}},
		{"task", SchemaTask, TaskMessage{TaskID: "t-1", JobID: "j-1", Key: "impl", Role: "developer", Revision: 2}},
		{"task revision 0", SchemaTask, TaskMessage{TaskID: "t-1", JobID: "j-1", Key: "prd", Role: "pm"}},
		{"review request", SchemaReviewRequest, ReviewRequest{OutputID: "o-1", TaskID: "t-1", JobID: "j-1", Role: "writer"}},
		{"output full", SchemaOutput, fullOutput()},
		{"output nil files", SchemaOutput, minimalOutput},
		{"output empty files", SchemaOutput, noFiles},
		{"decision promote", SchemaReviewDecision, ReviewDecision{OutputID: "o-1", Decision: "promote"}},
		{"decision reject full", SchemaReviewDecision, ReviewDecision{
			OutputID: "o-1", Decision: "reject", Reviewer: "alice", Feedback: "Add tests for bursts.",
			Lessons: []Lesson{{Text: "Cover bursts.", Scope: "tester"}, {Text: "Say what 429 means.", Scope: "all"}},
		}},
		{"review full", SchemaReview, fullReview()},
		{"review by rules, no checks or lessons", SchemaReview, Review{
			ID: "r-2", OutputID: "o-2", TaskID: "t-1", JobID: "j-1", Decision: "promote", Reviewer: "rules", CreatedAt: t0,
		}},
		{"review by model", SchemaReview, Review{
			ID: "r-3", OutputID: "o-2", TaskID: "t-1", JobID: "j-1", Decision: "promote", Reviewer: "model:offline",
			Checks: []Check{}, Lessons: []Lesson{}, CreatedAt: t0,
		}},
		{"event full", SchemaEvent, fullEvent()},
		{"event minimal", SchemaEvent, Event{ID: "e-0", JobID: "j-1", Kind: EventJobSubmitted, Time: t0}},
		{"dead letter full", SchemaDeadLetter, DeadLetter{
			ID: "d-2", Source: "developer", Subject: "troupe.tasks.developer", Payload: `{"task_id":"t-1"}`,
			Headers: map[string]string{"Nats-Msg-Id": "task.t-1.0"}, Reason: "model kept failing", Class: "exhausted",
			Attempts: 5, StreamSeq: 18446744073709551615, CreatedAt: t0, ReplayOf: "d-1", Status: "replayed",
			TaskID: "t-1", JobID: "j-1",
		}},
		{"dead letter minimal", SchemaDeadLetter, DeadLetter{
			ID: "d-1", Source: "review", Subject: "troupe.review.pm", Reason: "invalid JSON at offset 0", Class: "permanent", CreatedAt: t0,
		}},
		{"job full", SchemaJob, fullJob()},
		{"job just submitted", SchemaJob, Job{ID: "j-2", Title: "x", Status: JobPlanning, CreatedAt: t0, UpdatedAt: t0}},
		{"job list", SchemaJobList, JobList{Jobs: []Job{fullJob()}, NextCursor: "abc"}},
		{"job list nil", SchemaJobList, JobList{}},
		{"job list empty", SchemaJobList, JobList{Jobs: []Job{}}},
		{"review list", SchemaReviewList, ReviewList{Items: []ReviewItem{{
			Output: fullOutput(), Task: fullTask(), JobTitle: "Per-key rate limiting",
			Checks: []Check{{Name: "secrets", Passed: true}}, Previous: &Output{
				ID: "o-0", TaskID: "t-1", JobID: "j-1", Role: "developer", Status: OutputRejected, CreatedAt: t0,
			},
		}}, NextCursor: "c"}},
		{"review list nil", SchemaReviewList, ReviewList{}},
		{"lesson list", SchemaLessonList, LessonList{Lessons: []Lesson{
			{ID: "l-1", Text: "Cover bursts.", Scope: "tester", ReviewID: "r-1", JobID: "j-1", CreatedAt: t0},
		}, NextCursor: "n"}},
		{"lesson list nil", SchemaLessonList, LessonList{}},
		{"artifact", SchemaArtifact, fullArtifact()},
		{"artifact as listed", SchemaArtifact, Artifact{ID: "a-2", Path: "docs/empty.md", Version: 1, CreatedAt: t0}},
		{"artifact list", SchemaArtifactList, ArtifactList{Artifacts: []Artifact{fullArtifact()}, NextCursor: "n"}},
		{"artifact list nil", SchemaArtifactList, ArtifactList{}},
		{"error reply", SchemaErrorReply, ErrorReply{Error: "title: is required", Code: "invalid"}},
		{"id request", SchemaIDRequest, IDRequest{ID: "j-1"}},
		{"list request full", SchemaListRequest, ListRequest{Status: "running", Role: "pm", Query: "rate", JobID: "j-1", Limit: 50, Cursor: "c"}},
		{"list request empty", SchemaListRequest, ListRequest{}},
		{"artifact list request", SchemaArtifactListRequest, ArtifactListRequest{Prefix: "projects/", JobID: "j-1", Limit: 10, Cursor: "projects/a"}},
		{"artifact list request empty", SchemaArtifactListRequest, ArtifactListRequest{}},
		{"artifact get request", SchemaArtifactGetRequest, ArtifactGetRequest{Path: "projects/j/pm/PRD.md", Version: 2}},
		{"dead letter list request", SchemaDeadLetterListRequest, DeadLetterListRequest{DeadLetterFilter: DeadLetterFilter{Status: "open", Source: "workers-pm", Class: "permanent", Query: "x", JobID: "j", TaskID: "t"}, Limit: 5, Cursor: "c"}},
		{"dead letter list", SchemaDeadLetterList, DeadLetterList{DeadLetters: []DeadLetter{{ID: "d", Source: "review", Subject: "troupe.review.pm", Payload: "{}", Reason: "bad", Class: "permanent", Attempts: 1, CreatedAt: t0, Status: "open"}}, NextCursor: "n"}},
		{"dead letter action by id", SchemaDeadLetterAction, DeadLetterAction{ID: "d", By: "ada"}},
		{"dead letter action by filter", SchemaDeadLetterAction, DeadLetterAction{Filter: &DeadLetterFilter{Source: "workers-developer", Query: "429"}}},
		{"dead letter action reply", SchemaDeadLetterActionReply, DeadLetterActionReply{DeadLetters: []DeadLetter{}, Count: 0}},
		{"batch error reply", SchemaErrorReply, ErrorReply{Error: "1 of 2 jobs is invalid", Code: "invalid_request", Jobs: []JobError{{Index: 1, Error: "title: is required"}}}},
		{"submission batch", SchemaSubmissionBatch, SubmissionBatch{Jobs: []json.RawMessage{json.RawMessage(`{"title":"A"}`), json.RawMessage(`{"title":"B","brief":"b"}`)}}},
		{"submission batch reply", SchemaSubmissionBatchReply, SubmissionBatchReply{Created: 1, Jobs: []BatchJob{{ID: "0b9f6a52-8a60-4fd1-9a4e-3a2d1c1f6b11", Title: "A", Status: "running", Created: true}}}},
		{"dead letter filter", SchemaDeadLetterFilter, DeadLetterFilter{}},
		{"model review", SchemaModelReview, ModelReview{Decision: "promote", Quality: "good", Errors: []string{"typo"}, Lessons: []Lesson{{Text: "l", Scope: "all"}},
			Skill: &Skill{Name: "rate-limits", Content: "# Rate limits"}, Impact: []RoleNote{{Role: "tester", Note: "test bursts"}}}},
		{"model review reject", SchemaModelReview, ModelReview{Decision: "reject", Quality: "weak", Feedback: "add X"}},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.schema] = true
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data, err := json.Marshal(tt.value)
			require.NoError(t, err)
			require.NoError(t, Validate(tt.schema, data), "%s", data)
			got, err := decoders[tt.schema](data)
			require.NoError(t, err)
			require.Equal(t, tt.value, got)
		})
	}
	for _, name := range Names() {
		require.True(t, seen[name], "no Go value is checked against %s", name)
	}
}

// wants is the expected error of each file in testdata/bad: the field, then
// the start of its message.
var wants = map[string]string{
	"submission/missing-title":                 "title: is required",
	"artifact_get_request/missing-path":        "path: is required",
	"dead_letter_action/neither-id-nor-filter": "id: is required",
	"submission/empty-title":                   "title: must not be empty",
	"submission/blank-title":                   "title: must not be blank",
	"submission/title-not-string":              "title: must be a string, not a number",
	"submission/unknown-role":                  `tasks[1].role: "wizard" is not one of pm, architect, developer, tester, writer, devops`,
	"submission/bad-key":                       `tasks[0].key: "Bad Key" is not a valid key`,
	"submission/missing-role":                  "tasks[0].role: is required",
	"submission/unknown-field":                 "priority: is not a known field",
	"submission/typo-field":                    "breif: is not a known field (did you mean brief?)",
	"submission/unknown-task-field":            "tasks[0].owner: is not a known field",
	"submission/depends-on-not-array":          "tasks[1].depends_on: must be an array, not a string",
	"submission/depends-on-duplicate":          "tasks[1].depends_on: items 0 and 1 are the same",
	"submission/budget-negative":               "budget.max_tokens: must be at least 1",
	"submission/budget-zero":                   "budget.max_tokens: must be at least 1",
	"submission/budget-fraction":               "budget.max_tokens: must be an integer, not a number",
	"submission/budget-not-object":             "budget: must be an object, not a number",
	"submission/attachment-placeholder-data":   "attachments[0].data: is not valid base64",
	"submission/attachment-bad-media-type":     `attachments[0].media_type: "png" is not a media type such as image/png`,
	"submission/attachment-missing-data":       "attachments[0].data: is required",
	"submission/not-an-object":                 "(root): must be an object, not an array",
	"submission/duplicate-key":                 "tasks[0].depends_on: appears more than once",
	"task/missing-revision":                    "revision: is required",
	"task/negative-revision":                   "revision: must be at least 0",
	"task/unknown-role":                        `role: "wizard" is not one of pm,`,
	"task/empty-task-id":                       "task_id: must not be empty",
	"task/unknown-field":                       "instructions: is not a known field",
	"review_request/missing-output-id":         "output_id: is required",
	"review_request/unknown-role":              `role: "reviewer" is not one of pm,`,
	"review_request/revision-string":           "revision: must be an integer, not a string",
	"review_decision/reject-without-feedback":  "feedback: is required when decision is reject",
	"review_decision/reject-empty-feedback":    "feedback: must not be empty",
	"review_decision/reject-blank-feedback":    "feedback: must not be blank",
	"review_decision/bad-decision":             `decision: "approve" is not one of promote, reject`,
	"review_decision/missing-output-id":        "output_id: is required",
	"review_decision/lesson-empty-text":        "lessons[0].text: must not be empty",
	"review_decision/lesson-bad-scope":         `lessons[0].scope: "everyone" is not one of all, pm,`,
	"review_decision/lesson-missing-text":      "lessons[0].text: is required",
	"event/unknown-kind":                       `kind: "job_exploded" is not one of job_submitted, job_planned, task_queued,`,
	"event/bad-time":                           `time: "yesterday" is not a date-time`,
	"output/file-missing-path":                 "files[0].path: is required",
	"dead_letter/bad-class":                    `class: "fatal" is not one of permanent, transient, exhausted`,
	"id_request/missing-id":                    "id: is required",
	"list_request/limit-zero":                  "limit: must be at least 1",
	"error_reply/missing-code":                 "code: is required",
}

// requireInvalid checks that err is a *ValidationError matching ErrInvalid
// whose message contains want, and returns it.
func requireInvalid(t *testing.T, err error, want string) *ValidationError {
	t.Helper()
	require.Error(t, err)
	require.ErrorIs(t, err, ErrInvalid)
	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	require.NotEmpty(t, verr.Problems)
	require.Contains(t, err.Error(), want)
	field, _, _ := strings.Cut(want, ": ")
	require.True(t, slices.ContainsFunc(verr.Problems, func(p Problem) bool { return p.Field == field }),
		"no problem names %s: %v", field, verr.Problems)
	return verr
}

func TestBadFiles(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/bad/*/*.json")
	require.NoError(t, err)
	var found []string
	for _, file := range files {
		schema := filepath.Base(filepath.Dir(file))
		id := schema + "/" + strings.TrimSuffix(filepath.Base(file), ".json")
		found = append(found, id)
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			want, ok := wants[id]
			require.True(t, ok, "no expected message for %s in wants", file)
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			requireInvalid(t, Validate(schema, data), want)
			_, err = decoders[schema](data)
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
	for id := range wants {
		require.Contains(t, found, id, "no file testdata/bad/%s.json", id)
	}
}

// TestBadGenerated covers documents too big to keep as files.
func TestBadGenerated(t *testing.T) {
	t.Parallel()
	tasks := make([]PlanTask, 51)
	for i := range tasks {
		tasks[i] = PlanTask{Key: "t" + strings.Repeat("x", i%5) + string(rune('a'+i%26)), Role: "pm"}
	}
	keys := make([]string, 51)
	for i := range keys {
		keys[i] = "k" + string(rune('a'+i/26)) + string(rune('a'+i%26))
	}
	tests := []struct {
		name   string
		schema string
		value  any
		want   string
	}{
		{"oversized brief", SchemaSubmission, Submission{Title: "x", Brief: strings.Repeat("a", 20001)}, "brief: is longer than 20000 characters"},
		{"oversized brief in runes", SchemaSubmission, Submission{Title: "x", Brief: strings.Repeat("é", 20001)}, "brief: is longer than 20000 characters"},
		{"long title", SchemaSubmission, Submission{Title: strings.Repeat("t", 201)}, "title: is longer than 200 characters"},
		{"long idempotency key", SchemaSubmission, Submission{Title: "x", IdempotencyKey: strings.Repeat("k", 201)}, "idempotency_key: is longer than 200 characters"},
		{"long instructions", SchemaSubmission, Submission{Title: "x", Tasks: []PlanTask{{Key: "a", Role: "pm", Instructions: strings.Repeat("i", 20001)}}}, "tasks[0].instructions: is longer than 20000 characters"},
		{"too many tasks", SchemaSubmission, Submission{Title: "x", Tasks: tasks}, "tasks: has more than 50 items"},
		{"too many dependencies", SchemaSubmission, Submission{Title: "x", Tasks: []PlanTask{{Key: "a", Role: "pm", DependsOn: keys}}}, "tasks[0].depends_on: has more than 50 items"},
		{"long key", SchemaSubmission, Submission{Title: "x", Tasks: []PlanTask{{Key: strings.Repeat("k", 64), Role: "pm"}}}, "tasks[0].key: "},
		{"long lesson", SchemaReviewDecision, ReviewDecision{OutputID: "o", Decision: "promote", Lessons: []Lesson{{Text: strings.Repeat("l", 2001), Scope: "all"}}}, "lessons[0].text: is longer than 2000 characters"},
		{"lesson with a bad scope", SchemaReviewDecision, ReviewDecision{OutputID: "o", Decision: "promote", Lessons: []Lesson{{Text: "x", Scope: "wizard"}}}, `lessons[0].scope: "wizard" is not one of all,`},
		{"job with a bad task", SchemaJob, func() Job { j := fullJob(); j.Tasks[1].Status = "lost"; return j }(), `tasks[1].status: "lost" is not one of pending,`},
		{"job with a bad output", SchemaJob, func() Job { j := fullJob(); j.Tasks[0].Outputs[0].Role = "qa"; return j }(), `tasks[0].outputs[0].role: "qa" is not one of`},
		{"job with a bad event", SchemaJob, func() Job { j := fullJob(); j.Events[1].Kind = "oops"; return j }(), `events[1].kind: "oops" is not one of`},
		{"review by nobody", SchemaReview, func() Review { r := fullReview(); r.Reviewer = "alice"; return r }(), `reviewer: "alice" is not rules, model:<id> or human:<name>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data, err := json.Marshal(tt.value)
			require.NoError(t, err)
			requireInvalid(t, Validate(tt.schema, data), tt.want)
		})
	}
}

func TestBadNumbers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		doc  string
		want string
	}{
		{`{"title":"x","budget":{"max_tokens":1000.0}}`, "budget.max_tokens: must be a whole number"},
		{`{"title":"x","budget":{"max_tokens":1e3}}`, "budget.max_tokens: must be a whole number"},
		{`{"title":"x","budget":{"max_tokens":9223372036854775808}}`, "budget.max_tokens: must be a whole number, without fraction or exponent, that fits in int64"},
		{`{"title":"x","budget":{"max_tokens":1e400}}`, "budget.max_tokens: is out of range"},
		{`{"title":"x","budget":{"max_tokens":1e99999999}}`, "budget.max_tokens: is out of range"},
		{`{"title":"x","budget":{"max_tokens":1e-99999999}}`, "budget.max_tokens: is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			t.Parallel()
			requireInvalid(t, Validate(SchemaSubmission, []byte(tt.doc)), tt.want)
		})
	}
}

func TestInvalidJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		doc    string
		offset int64
	}{
		{``, 0},
		{`{`, 1},
		{`{"title": "x",}`, 15},
		{`{"title": 'x'}`, 11},
		{`{"title": "x"} {"title": "y"}`, 16},
		{`nul`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			t.Parallel()
			err := Validate(SchemaSubmission, []byte(tt.doc))
			require.ErrorIs(t, err, ErrInvalid)
			require.Contains(t, err.Error(), "invalid JSON")
			var serr *SyntaxError
			require.ErrorAs(t, err, &serr)
			require.Equal(t, tt.offset, serr.Offset, err.Error())
			_, err = Decode[Submission](SchemaSubmission, []byte(tt.doc))
			require.ErrorIs(t, err, ErrInvalid)
		})
	}
}

func TestGoodFiles(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/good/*/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		schema := filepath.Base(filepath.Dir(file))
		t.Run(schema+"/"+filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			require.NoError(t, err)
			require.NoError(t, Validate(schema, data))
			_, err = decoders[schema](data)
			require.NoError(t, err)
		})
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/good/submission/design-example.json")
	require.NoError(t, err)
	sub, err := Decode[Submission](SchemaSubmission, data)
	require.NoError(t, err)
	require.Equal(t, "Per-key rate limiting", sub.Title)
	require.Equal(t, []string{"prd"}, sub.Tasks[1].DependsOn)
	require.Equal(t, int64(200000), sub.Budget.MaxTokens)

	_, err = Decode[Submission](SchemaSubmission, []byte(`{"brief":"x"}`))
	requireInvalid(t, err, "title: is required")
}

func TestUnknownSchema(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"nope", "common", "", "Submission"} {
		err := Validate(name, []byte(`{}`))
		require.Error(t, err)
		require.NotErrorIs(t, err, ErrInvalid, "an unknown schema is the caller's bug, not the payload's")
		require.Contains(t, err.Error(), "unknown schema")
	}
	require.Nil(t, Schema("nope"))
}

func TestValidationErrorMessage(t *testing.T) {
	t.Parallel()
	err := Validate(SchemaSubmission, []byte(`{"titel":"x","tasks":[{"key":"A","role":"wizard","depends_on":[1]}],"budget":{"max_tokens":0}}`))
	verr := requireInvalid(t, err, "budget.max_tokens: must be at least 1")
	require.Equal(t, []Problem{
		{"budget.max_tokens", "must be at least 1"},
		{"tasks[0].depends_on[0]", "must be a string, not a number"},
		{"tasks[0].key", `"A" is not a valid key (lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters)`},
		{"tasks[0].role", `"wizard" is not one of pm, architect, developer, tester, writer, devops`},
		{"titel", "is not a known field (did you mean title?)"},
		{"title", "is required"},
	}, verr.Problems)
	require.Equal(t, SchemaSubmission, verr.Schema)
	require.Equal(t, `budget.max_tokens: must be at least 1; tasks[0].depends_on[0]: must be a string, not a number; `+
		`tasks[0].key: "A" is not a valid key (lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters); `+
		`and 3 more problems`, err.Error())

	// One message per field: the blank check adds nothing to "must not be empty".
	verr = requireInvalid(t, Validate(SchemaSubmission, []byte(`{"title":""}`)), "title: must not be empty")
	require.Len(t, verr.Problems, 1)
}

func TestFieldPath(t *testing.T) {
	t.Parallel()
	doc := map[string]any{
		"tasks": []any{map[string]any{"role": "x"}},
		"data":  map[string]any{"a.b": []any{1}, "0": 1},
	}
	tests := []struct {
		loc  []string
		want string
	}{
		{nil, "(root)"},
		{[]string{"title"}, "title"},
		{[]string{"tasks", "0", "role"}, "tasks[0].role"},
		{[]string{"tasks", "0", "missing"}, "tasks[0].missing"},
		{[]string{"data", "a.b", "0"}, `data["a.b"][0]`},
		{[]string{"data", "0"}, `data["0"]`},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, fieldPath(doc, tt.loc))
	}
}

// TestSchemaFiles checks every embedded file: it compiles, has its $id, and
// follows the house rules (a description on every property, no unknown
// fields in any object with properties).
func TestSchemaFiles(t *testing.T) {
	t.Parallel()
	_, err := compile()
	require.NoError(t, err)

	entries, err := files.ReadDir("json")
	require.NoError(t, err)
	var embedded []string
	for _, e := range entries {
		embedded = append(embedded, strings.TrimSuffix(e.Name(), ".json"))
	}
	require.ElementsMatch(t, append(Names(), "common"), embedded)
	require.True(t, slices.IsSorted(Names()))
	require.Len(t, Names(), len(decoders))

	for _, name := range embedded {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw := Schema(name)
			require.NotNil(t, raw)
			var doc map[string]any
			require.NoError(t, json.Unmarshal(raw, &doc))
			require.Equal(t, "https://json-schema.org/draft/2020-12/schema", doc["$schema"])
			require.Equal(t, BaseURL+name+".json", doc["$id"])
			require.NotEmpty(t, doc["title"])
			require.NotEmpty(t, doc["description"])
			checkRules(t, name, doc)
		})
	}
}

func checkRules(t *testing.T, where string, v any) {
	switch v := v.(type) {
	case map[string]any:
		if props, ok := v["properties"].(map[string]any); ok && v["type"] == "object" {
			require.Equal(t, false, v["additionalProperties"], "%s: additionalProperties must be false", where)
			for name, p := range props {
				p, _ := p.(map[string]any)
				require.NotEmpty(t, p["description"], "%s.%s: no description", where, name)
			}
		}
		for k, x := range v {
			checkRules(t, where+"/"+k, x)
		}
	case []any:
		for _, x := range v {
			checkRules(t, where, x)
		}
	}
}
