package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

func TestTerm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, line, text string }{
		{"plain title", "plain title", "plain title"},
		{"héllo wörld ✓", "héllo wörld ✓", "héllo wörld ✓"},
		{"\x1b[2Jgone", `\x1b[2Jgone`, `\x1b[2Jgone`},
		{"bell\a del\x7f nul\x00", `bell\x07 del\x7f nul\x00`, `bell\x07 del\x7f nul\x00`},
		{"two\nlines\tand tab\r", `two\nlines\tand tab\r`, "two\nlines\tand tab\\r"},
		{"csi\u009b31m c1", `csi\u009b31m c1`, `csi\u009b31m c1`},
		{"evil\u202etxt.exe", `evil\u202etxt.exe`, `evil\u202etxt.exe`},
		{"iso\u2066x\u2069 lrm\u200e", `iso\u2066x\u2069 lrm\u200e`, `iso\u2066x\u2069 lrm\u200e`},
		{"line\u2028sep", `line\u2028sep`, `line\u2028sep`},
		{"bad\xffutf8", `bad\xffutf8`, `bad\xffutf8`},
	} {
		require.Equal(t, tc.line, term(tc.in), "%q", tc.in)
		require.Equal(t, tc.text, termText(tc.in), "%q", tc.in)
	}
}

func TestShortEscapesAndCutsWholeRunes(t *testing.T) {
	t.Parallel()
	require.Equal(t, `a\x1b[2J`, short("a\x1b[2J", 20))
	s := short(strings.Repeat("é", 20), 10)
	require.Equal(t, "ééé...", s)
}

// hostile carries the controls a title, reason or review can bring.
const hostile = "x\x1b[2J\x1b]0;pwned\x07\u009b1m\u202eevil\r\nforged row\x00"

// requireInert fails when out holds a control character other than the
// newlines and tabs the printer wrote, or a bidirectional override.
func requireInert(t *testing.T, out string) {
	t.Helper()
	for _, r := range out {
		if r == '\n' || r == '\t' {
			continue
		}
		require.False(t, unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r), "%U printed raw in:\n%s", r, out)
	}
	require.Contains(t, out, `x\x1b[2J\x1b]0;pwned\x07\u009b1m\u202eevil\r\nforged row\x00`)
}

func TestHumanOutputEscapesControls(t *testing.T) {
	t.Parallel()
	now := time.Now()
	job := schemas.Job{ID: "j_1", Title: hostile, Status: schemas.JobFailed, Reason: hostile, CreatedAt: now,
		Tasks: []schemas.Task{{ID: "t_1", Key: "pm", Role: "pm", Status: schemas.TaskFailed, Reason: hostile,
			Outputs: []schemas.Output{{ID: "o_1", Revision: 1, Status: schemas.OutputRejected}},
			Reviews: []schemas.Review{{OutputID: "o_1", Decision: "reject", Reviewer: "human:ada", Feedback: hostile}}}},
		Events: []schemas.Event{{Kind: schemas.EventTaskDeadLettered, TaskID: "t_1", Message: hostile, Time: now}},
	}

	t.Run("jobs ls", func(t *testing.T) {
		var b bytes.Buffer
		printJobList(&b, schemas.JobList{Jobs: []schemas.Job{job}})
		requireInert(t, b.String())
		require.Equal(t, 2, strings.Count(b.String(), "\n"), "one header and one row:\n%s", b.String())
	})
	t.Run("jobs show", func(t *testing.T) {
		var b bytes.Buffer
		printJob(&b, job)
		requireInert(t, b.String())
	})
	t.Run("reviews ls", func(t *testing.T) {
		var b bytes.Buffer
		printReviewList(&b, schemas.ReviewList{Items: []schemas.ReviewItem{{
			Output: schemas.Output{ID: "o_1", Role: "pm", Revision: 1, CreatedAt: now}, Task: schemas.Task{Key: "pm"}, JobTitle: hostile,
		}}})
		requireInert(t, b.String())
		require.Equal(t, 2, strings.Count(b.String(), "\n"), "one header and one row:\n%s", b.String())
	})
	t.Run("dlq show", func(t *testing.T) {
		var b bytes.Buffer
		printDeadLetter(&b, schemas.DeadLetter{ID: "d_1", Reason: hostile, Payload: hostile}, nil)
		requireInert(t, b.String())
		require.Contains(t, b.String(), "\n"+`x\x1b[2J\x1b]0;pwned\x07\u009b1m\u202eevil\r`+"\nforged row\\x00\n", "the payload keeps its lines")
	})
	t.Run("event", func(t *testing.T) {
		var b bytes.Buffer
		printEvent(&b, job.Events[0], map[string]string{"t_1": "pm"})
		require.NotContains(t, b.String(), "\x1b")
		require.Equal(t, 1, strings.Count(b.String(), "\n"))
	})
}

// TestJSONOutputIsExact: --json prints the values as they are, escaped
// only as JSON escapes them.
func TestJSONOutputIsExact(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	require.NoError(t, printJSON(&b, schemas.Job{Title: hostile}))
	var back schemas.Job
	require.NoError(t, json.Unmarshal(b.Bytes(), &back))
	require.Equal(t, hostile, back.Title)
	require.NotContains(t, b.String(), "\x1b")
}
