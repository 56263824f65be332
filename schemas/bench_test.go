package schemas_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/troupe-dev/troupe/schemas"
)

// BenchmarkValidateTask times what a worker does first with every task
// message it fetches: validate it against the task schema and decode it.
// The message is one the orchestrator publishes. Run it with
//
//	go test -run '^$' -bench Validate ./schemas/
func BenchmarkValidateTask(b *testing.B) {
	msg := mustMarshal(b, schemas.TaskMessage{
		TaskID: "3f1c2a9e-0b7d-4c1e-9a53-2f8d6e4b7c10", JobID: "9b2e4f61-5d3a-4e8c-b1f7-6a0c2d9e8f43",
		Key: "impl", Role: "developer", Revision: 1,
	})
	benchDecode[schemas.TaskMessage](b, schemas.SchemaTask, msg)
}

// BenchmarkValidateSubmission times what the orchestrator does first with
// every jobs.submit request: validate and decode a job with an explicit
// six-task plan (the default plan spelled out, with instructions of a few
// hundred bytes, an idempotency key and a budget).
func BenchmarkValidateSubmission(b *testing.B) {
	instr := func(what string) string {
		return what + " " + strings.Repeat("Keep it short, name every assumption, and say what is out of scope. ", 5)
	}
	msg := mustMarshal(b, schemas.Submission{
		Title:          "Per-key rate limiting",
		Brief:          "Add per-API-key limits with clear 429s. " + strings.Repeat("Limits are configured per plan and reloaded without a restart. ", 8),
		IdempotencyKey: "ticket-4711",
		Tasks: []schemas.PlanTask{
			{Key: "prd", Role: "pm", Instructions: instr("Write the PRD.")},
			{Key: "design", Role: "architect", Instructions: instr("Design the limiter."), DependsOn: []string{"prd"}},
			{Key: "impl", Role: "developer", Instructions: instr("Build it."), DependsOn: []string{"design"}},
			{Key: "tests", Role: "tester", Instructions: instr("Test it."), DependsOn: []string{"impl"}},
			{Key: "docs", Role: "writer", Instructions: instr("Document it."), DependsOn: []string{"impl"}},
			{Key: "deploy", Role: "devops", Instructions: instr("Ship it."), DependsOn: []string{"impl", "tests"}},
		},
		Budget: &schemas.Budget{MaxTokens: 200_000},
	})
	benchDecode[schemas.Submission](b, schemas.SchemaSubmission, msg)
}

// benchDecode times Decode of msg, reporting bytes per second (SetBytes)
// and allocations.
func benchDecode[T any](b *testing.B, schema string, msg []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := schemas.Decode[T](schema, msg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func mustMarshal(b *testing.B, v any) []byte {
	b.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return data
}
