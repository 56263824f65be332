package schemas

import (
	"testing"
)

// TestNULRefused: a NUL character (written \u0000) is refused in every
// string of every document, with the field that holds it: PostgreSQL's text
// cannot store one (SQLite can, so it would be kept on one store and fail
// with an internal error on the other).
func TestNULRefused(t *testing.T) {
	t.Parallel()
	const id = `"0b3c5c8e-8f5a-4c3e-9d7e-2a1b3c4d5e6f"`
	tests := []struct {
		schema string
		doc    string
		want   string
	}{
		{SchemaSubmission, `{"title":"a\u0000b"}`, `title: contains a NUL character (\u0000), not allowed in text`},
		{SchemaSubmission, `{"title":"x","brief":"\u0000"}`, `brief: contains a NUL character`},
		{SchemaSubmission, `{"title":"x","tasks":[{"key":"a","role":"pm","instructions":"do\u0000it"}]}`, `tasks[0].instructions: contains a NUL character`},
		{SchemaSubmission, `{"title":"x","idempotency_key":"k\u0000"}`, `idempotency_key: contains a NUL character`},
		{SchemaSubmission, `{"title":"x","attachments":[{"name":"a\u0000.png","media_type":"image/png","data":"eA=="}]}`, `attachments[0].name: contains a NUL character`},
		{SchemaSubmission, `{"title":"x","a\u0000b":1}`, `(root): has a name with a NUL character (\u0000)`},
		{SchemaSubmissionBatch, `{"jobs":[{"title":"x\u0000"}]}`, `jobs[0].title: contains a NUL character`},
		{SchemaReviewDecision, `{"output_id":` + id + `,"decision":"reject","feedback":"no\u0000"}`, `feedback: contains a NUL character`},
		{SchemaReviewDecision, `{"output_id":` + id + `,"decision":"promote","reviewer":"ada\u0000"}`, `reviewer: contains a NUL character`},
		{SchemaReviewDecision, `{"output_id":` + id + `,"decision":"promote","lessons":[{"text":"x\u0000","scope":"all"}]}`, `lessons[0].text: contains a NUL character`},
		{SchemaDeadLetterAction, `{"id":` + id + `,"by":"ops\u0000"}`, `by: contains a NUL character`},
		{SchemaDeadLetterAction, `{"filter":{"query":"x\u0000"}}`, `filter.query: contains a NUL character`},
		{SchemaListRequest, `{"query":"x\u0000"}`, `query: contains a NUL character`},
	}
	for _, tt := range tests {
		t.Run(tt.schema+" "+tt.want, func(t *testing.T) {
			t.Parallel()
			requireInvalid(t, Validate(tt.schema, []byte(tt.doc)), tt.want)
		})
	}
}
