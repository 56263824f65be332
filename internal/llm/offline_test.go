package llm

import (
	"context"
	"go/parser"
	"go/token"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// offlineFiles is each role's expected files (main markdown first) and the
// headings of the main file.
var offlineFiles = map[string]struct {
	files    []string
	headings []string
}{
	"pm":        {[]string{"PRD.md"}, []string{"# PRD: Per-key rate limiting", "## Goals", "## Users", "## Requirements", "## Out of scope"}},
	"architect": {[]string{"ARCHITECTURE.md"}, []string{"## Components", "## Data flow", "## Decisions", "## Risks"}},
	"developer": {[]string{"NOTES.md", "main.go"}, []string{"## Implementation"}},
	"tester":    {[]string{"TEST_PLAN.md", "main_test.go"}, []string{"## Scope", "## Cases", "## Risks"}},
	"writer":    {[]string{"README.md"}, []string{"## Overview", "## Usage", "## Troubleshooting"}},
	"devops":    {[]string{"RUNBOOK.md", "Dockerfile", "deploy.yaml"}, []string{"## Deploy", "## Rollback", "## Monitoring"}},
}

func setupRequest(role string) Request {
	return Request{
		Role:   role,
		System: "You are the " + role + ".",
		Prompt: "Do the task.",
		Task: TaskContext{
			JobID:        "job-1",
			JobTitle:     "Per-key rate limiting",
			Brief:        "Add per-API-key limits with clear 429s. Limits are configurable per plan.",
			TaskID:       "task-1",
			Key:          role,
			Instructions: "Write the " + role + " output.\nKeep it short!",
			Inputs: []Input{
				{Path: "projects/job-1/pm/PRD.md", Role: "pm", TaskKey: "prd", Content: "# PRD"},
				{Path: "projects/job-1/architect/ARCHITECTURE.md", Role: "architect", TaskKey: "design", Content: "# Architecture"},
			},
			Lessons: []schemas.Lesson{
				{ID: "l1", Text: "Name every error code\nin the PRD.", Scope: "all", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
				{ID: "l2", Text: "Prefer table tests.", Scope: role},
			},
		},
	}
}

func fileByPath(t *testing.T, files []schemas.File, p string) string {
	t.Helper()
	for _, f := range files {
		if f.Path == p {
			return f.Content
		}
	}
	require.Failf(t, "missing file", "no file %q among %v", p, files)
	return ""
}

func TestOfflineName(t *testing.T) {
	t.Parallel()
	var m Model = NewOffline()
	require.Equal(t, "offline", m.Name())
}

func TestOfflineDeterministic(t *testing.T) {
	t.Parallel()
	m := NewOffline()
	for _, role := range schemas.Roles {
		req := setupRequest(role)
		req.Task.Feedback = "- required_sections: PRD.md: missing section \"## Users\""
		req.Task.Revision = 1
		first, err := m.Generate(context.Background(), req)
		require.NoError(t, err)
		for range 5 {
			again, err := m.Generate(context.Background(), setupRequestWith(req))
			require.NoError(t, err)
			require.Equal(t, first, again, role)
		}
	}
}

// setupRequestWith returns a deep copy of req, so a second call shares no
// memory with the first.
func setupRequestWith(req Request) Request {
	c := req
	c.Task.Inputs = append([]Input(nil), req.Task.Inputs...)
	c.Task.Lessons = append([]schemas.Lesson(nil), req.Task.Lessons...)
	return c
}

func TestOfflineRoleFiles(t *testing.T) {
	t.Parallel()
	m := NewOffline()
	for _, role := range schemas.Roles {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			want, ok := offlineFiles[role]
			require.True(t, ok, "test table lacks role %s", role)

			req := setupRequest(role)
			resp, err := m.Generate(context.Background(), req)
			require.NoError(t, err)

			var paths []string
			for _, f := range resp.Files {
				paths = append(paths, f.Path)
				require.NotEmpty(t, strings.TrimSpace(f.Content), f.Path)
			}
			require.Equal(t, want.files, paths)

			main := resp.Files[0].Content
			lines := strings.Split(main, "\n")
			for _, h := range append(want.headings, "## Inputs", "## Lessons applied") {
				require.Contains(t, lines, h, "%s lacks heading %q", want.files[0], h)
			}
			require.NotContains(t, main, "## Reviewer feedback addressed")

			// The task's context shows in the draft.
			require.Contains(t, main, "Per-key rate limiting")
			require.Contains(t, main, "> Write the "+role+" output.")
			require.Contains(t, main, "> Keep it short!")
			require.Contains(t, main, "`projects/job-1/pm/PRD.md`")
			require.Contains(t, main, "`projects/job-1/architect/ARCHITECTURE.md`")
			require.Contains(t, main, "- Name every error code in the PRD.\n")
			require.Contains(t, main, "- Prefer table tests.\n")

			// The summary names the files; usage is a deterministic estimate.
			for _, p := range paths {
				require.Contains(t, resp.Content, p)
			}
			require.NotContains(t, resp.Content, "\n")
			require.Equal(t, "offline", resp.Model)
			require.Equal(t, int64(len(req.System+req.Prompt)/4), resp.PromptTokens)
			out := len(resp.Content)
			for _, f := range resp.Files {
				out += len(f.Content)
			}
			require.Equal(t, int64(out/4), resp.CompletionTokens)
			require.Zero(t, resp.Latency)
		})
	}
}

func TestOfflinePMRequirements(t *testing.T) {
	t.Parallel()
	resp, err := NewOffline().Generate(context.Background(), setupRequest("pm"))
	require.NoError(t, err)
	prd := fileByPath(t, resp.Files, "PRD.md")
	section := prd[strings.Index(prd, "## Requirements"):strings.Index(prd, "## Out of scope")]
	require.Contains(t, section, "1. Add per-API-key limits with clear 429s.\n")
	require.Contains(t, section, "2. Limits are configurable per plan.\n")
	require.Contains(t, section, "3. Write the pm output.\n")
	require.Contains(t, section, "4. Keep it short!\n")
}

func TestOfflineNoInputsNoLessons(t *testing.T) {
	t.Parallel()
	req := Request{Role: "writer", Task: TaskContext{JobTitle: "Tiny"}}
	resp, err := NewOffline().Generate(context.Background(), req)
	require.NoError(t, err)
	readme := fileByPath(t, resp.Files, "README.md")
	require.Contains(t, readme, "## Inputs\n\nNone: this task has no upstream inputs.")
	require.Contains(t, readme, "## Lessons applied\n\nNone: no lessons from MEMORY apply to this task.")
	require.GreaterOrEqual(t, resp.PromptTokens, int64(1))
	require.GreaterOrEqual(t, resp.CompletionTokens, int64(1))
}

func TestOfflineFeedbackRevision(t *testing.T) {
	t.Parallel()
	m := NewOffline()
	for _, role := range schemas.Roles {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			req := setupRequest(role)
			draft, err := m.Generate(context.Background(), req)
			require.NoError(t, err)

			req.Task.Revision = 2
			req.Task.Feedback = "The goals are vague.\n## Users is thin: name the personas."
			rev, err := m.Generate(context.Background(), req)
			require.NoError(t, err)

			require.NotEqual(t, draft.Files[0].Content, rev.Files[0].Content)
			main := rev.Files[0].Content
			require.Contains(t, main, "\n## Reviewer feedback addressed\n")
			require.Contains(t, main, "Revision 2 addresses this feedback on revision 1")
			require.Contains(t, main, "> The goals are vague.\n")
			// Quoted, the feedback's own heading does not become one of the draft's.
			require.Contains(t, main, "> ## Users is thin: name the personas.\n")
			require.Contains(t, rev.Content, "feedback")
		})
	}
}

func TestOfflineGoFilesParse(t *testing.T) {
	t.Parallel()
	m := NewOffline()
	titles := []string{"Per-key rate limiting", "Quotes \" and `backticks` and */ and\nnewlines", "", "日本語のタイトル"}
	for _, role := range []string{"developer", "tester"} {
		for _, title := range titles {
			req := setupRequest(role)
			req.Task.JobTitle = title
			req.Task.Key = "key\nwith newline"
			resp, err := m.Generate(context.Background(), req)
			require.NoError(t, err)
			n := 0
			for _, f := range resp.Files {
				if !strings.HasSuffix(f.Path, ".go") {
					continue
				}
				n++
				file, err := parser.ParseFile(token.NewFileSet(), f.Path, f.Content, parser.ParseComments|parser.AllErrors)
				require.NoError(t, err, "%s for title %q:\n%s", f.Path, title, f.Content)
				require.Equal(t, "main", file.Name.Name)
			}
			require.Equal(t, 1, n, role)
		}
	}
}

func TestOfflineUnknownRole(t *testing.T) {
	t.Parallel()
	_, err := NewOffline().Generate(context.Background(), Request{Role: "janitor"})
	require.ErrorIs(t, err, ErrUnknownRole)
	require.ErrorContains(t, err, `"janitor"`)
}

func TestOfflineContextDone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := NewOffline().Generate(ctx, setupRequest("pm"))
	require.ErrorIs(t, err, context.Canceled)
}

func TestSlug(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Per-key rate limiting":    "per-key-rate-limiting",
		"  Hello,  World!  ":       "hello-world",
		"42 things":                "app-42-things",
		"日本語":                      "app",
		"":                         "app",
		strings.Repeat("abc ", 30): strings.TrimRight(strings.Repeat("abc-", 10), "-"),
	} {
		require.Equal(t, want, slug(in), in)
	}
}
