package review

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/schemas"
)

// checkByName returns the check named name, failing the test without it.
func checkByName(t *testing.T, checks []schemas.Check, name string) schemas.Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	require.Failf(t, "missing check", "no check %q in %v", name, checks)
	return schemas.Check{}
}

// goodFiles is a passing pm output.
func goodFiles() []schemas.File {
	return []schemas.File{{Path: "PRD.md", Content: "# PRD: x\n\n## Goals\n\ng\n\n## Users\n\nu\n\n## Requirements\n\n1. r\n"}}
}

func TestLimitsWithDefaults(t *testing.T) {
	t.Parallel()
	require.Equal(t, Limits{MaxOutputBytes: 1 << 20, MaxFileBytes: 512 << 10, MaxFiles: 50}, Limits{}.WithDefaults())
	require.Equal(t, Limits{MaxOutputBytes: 1 << 20, MaxFileBytes: 10, MaxFiles: 50}, Limits{MaxOutputBytes: -1, MaxFileBytes: 10}.WithDefaults())
}

func TestCheckRulesOrderAndPass(t *testing.T) {
	t.Parallel()
	checks := CheckRules("pm", "A PRD.", goodFiles(), Limits{})
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
		require.True(t, c.Passed, "%s: %s", c.Name, c.Detail)
		require.NotEmpty(t, c.Detail)
	}
	require.Equal(t, []string{CheckNotEmpty, CheckSizeLimits, CheckSafePaths, CheckNoNUL, CheckRequiredSections, CheckNoSecrets}, names)
	require.True(t, Passed(checks))
	require.Empty(t, Feedback(checks))
}

func TestRequiredSections(t *testing.T) {
	t.Parallel()
	for _, role := range schemas.Roles {
		file, headings := RequiredSections(role)
		require.NotEmpty(t, file, role)
		require.NotEmpty(t, headings, role)
		for _, h := range headings {
			require.True(t, strings.HasPrefix(h, "## "), h)
		}
	}
	file, headings := RequiredSections("janitor")
	require.Empty(t, file)
	require.Nil(t, headings)

	// The returned slice is a copy.
	_, h := RequiredSections("pm")
	h[0] = "## Changed"
	_, h = RequiredSections("pm")
	require.Equal(t, "## Goals", h[0])
}

func TestCheckNotEmpty(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		files  []schemas.File
		passed bool
		detail string
	}{
		{"one file", goodFiles(), true, ""},
		{"no files", nil, false, "output has no files"},
		{"blank file", []schemas.File{{Path: "a.md", Content: "x"}, {Path: "b.md", Content: " \n\t"}}, false, `file "b.md": empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := checkByName(t, CheckRules("pm", "", tt.files, Limits{}), CheckNotEmpty)
			require.Equal(t, tt.passed, c.Passed, c.Detail)
			if !tt.passed {
				require.Equal(t, tt.detail, c.Detail)
			}
		})
	}
}

func TestCheckSizeLimits(t *testing.T) {
	t.Parallel()
	limits := Limits{MaxOutputBytes: 100, MaxFileBytes: 40, MaxFiles: 2}
	f := func(p string, n int) schemas.File { return schemas.File{Path: p, Content: strings.Repeat("a", n)} }
	tests := []struct {
		name    string
		content string
		files   []schemas.File
		detail  string // empty when the check passes
	}{
		{"within", "summary", []schemas.File{f("a", 40), f("b", 40)}, ""},
		{"file too big", "", []schemas.File{f("a", 41)}, `file "a": 41 bytes, more than the limit of 40`},
		{"too many files", "", []schemas.File{f("a", 1), f("b", 1), f("c", 1)}, "3 files, more than the limit of 2"},
		{"output too big", strings.Repeat("c", 30), []schemas.File{f("a", 40), f("b", 40)}, "output is 110 bytes, more than the limit of 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := checkByName(t, CheckRules("pm", tt.content, tt.files, limits), CheckSizeLimits)
			require.Equal(t, tt.detail == "", c.Passed, c.Detail)
			if tt.detail != "" {
				require.Equal(t, tt.detail, c.Detail)
			}
		})
	}
}

func TestCheckSafePaths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path   string
		reason string // empty when the path is safe
	}{
		{"PRD.md", ""},
		{"docs/api/README.md", ""},
		{".gitignore", ""},
		{".github/workflows/ci.yml", ""},
		{"cmd/app/main.go", ""},
		{"../etc/passwd", "path escapes the staging area"},
		{"a/../../b", "path escapes the staging area"},
		{"/etc/passwd", "path is absolute"},
		{`dir\file.md`, "path contains a backslash"},
		{"C:/Windows/x", "path starts with a drive letter"},
		{"c:file", "path starts with a drive letter"},
		{"a\x00b", "path contains a control character"},
		{"a\nb", "path contains a control character"},
		{"a\x7fb", "path contains a control character"},
		{"", "empty path"},
		{".", `path is not clean (want ".")`},
		{"./a.md", `path is not clean (want "a.md")`},
		{"a//b.md", `path is not clean (want "a/b.md")`},
		{"dir/", `path is not clean (want "dir")`},
		{".git/config", "path names a .git directory"},
		{"sub/.git/hooks/pre-commit", "path names a .git directory"},
		{".ssh/id_rsa", `path is inside hidden directory ".ssh"`},
		{"a/.cache/b", `path is inside hidden directory ".cache"`},
		{strings.Repeat("a", 201), "path is 201 bytes, longer than 200"},
		{"bad\xffutf8", "path is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			files := []schemas.File{{Path: tt.path, Content: "x"}}
			c := checkByName(t, CheckRules("pm", "", files, Limits{}), CheckSafePaths)
			require.Equal(t, tt.reason == "", c.Passed, c.Detail)
			if tt.reason != "" {
				require.Equal(t, fmt.Sprintf("file %q: %s", tt.path, tt.reason), c.Detail)
			}
		})
	}
	require.Len(t, strings.Repeat("a", 200), 200)
	c := checkByName(t, CheckRules("pm", "", []schemas.File{{Path: strings.Repeat("a", 200), Content: "x"}}, Limits{}), CheckSafePaths)
	require.True(t, c.Passed, c.Detail)
}

func TestCheckSafePathsDuplicates(t *testing.T) {
	t.Parallel()
	files := []schemas.File{{Path: "a.md", Content: "1"}, {Path: "b.md", Content: "2"}, {Path: "a.md", Content: "3"}, {Path: "A.md", Content: "4"}}
	c := checkByName(t, CheckRules("pm", "", files, Limits{}), CheckSafePaths)
	require.False(t, c.Passed)
	require.Equal(t, `file "a.md": duplicate path; file "A.md": duplicates "a.md" (paths must differ in more than case)`, c.Detail)
}

func TestCheckSafePathsBoundedDetail(t *testing.T) {
	t.Parallel()
	var files []schemas.File
	for i := range 8 {
		files = append(files, schemas.File{Path: "/abs" + string(rune('a'+i)), Content: "x"})
	}
	c := checkByName(t, CheckRules("pm", "", files, Limits{}), CheckSafePaths)
	require.False(t, c.Passed)
	require.Equal(t, 5, strings.Count(c.Detail, "path is absolute"))
	require.True(t, strings.HasSuffix(c.Detail, "; and 3 more"), c.Detail)
}

func TestCheckRequiredSections(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		role   string
		files  []schemas.File
		detail string // empty when the check passes
	}{
		{"pm complete", "pm", goodFiles(), ""},
		{"pm missing users", "pm", []schemas.File{{Path: "PRD.md", Content: "## Goals\n## Requirements\n"}}, `PRD.md: missing section "## Users"`},
		{"heading case and trailing colon", "pm", []schemas.File{{Path: "PRD.md", Content: "## goals:\n## USERS\n## Requirements ##\n"}}, ""},
		{"level 3 is not level 2", "pm", []schemas.File{{Path: "PRD.md", Content: "### Goals\n## Users\n## Requirements\n"}}, `PRD.md: missing section "## Goals"`},
		{"quoted heading does not count", "pm", []schemas.File{{Path: "PRD.md", Content: "> ## Goals\n## Users\n## Requirements\n"}}, `PRD.md: missing section "## Goals"`},
		{"heading in code fence does not count", "pm", []schemas.File{{Path: "PRD.md", Content: "```\n## Goals\n```\n## Users\n## Requirements\n"}}, `PRD.md: missing section "## Goals"`},
		{"file in a subdirectory", "pm", []schemas.File{{Path: "docs/PRD.md", Content: "## Goals\n## Users\n## Requirements\n"}}, ""},
		{"missing file", "architect", goodFiles(), `missing file "ARCHITECTURE.md"`},
		{"architect", "architect", []schemas.File{{Path: "ARCHITECTURE.md", Content: "## Components\r\n## Data flow\r\n## Decisions\r\n"}}, ""},
		{"developer with code", "developer", []schemas.File{{Path: "NOTES.md", Content: "## Implementation\n"}, {Path: "main.go", Content: "package main\n"}}, ""},
		{"developer without code", "developer", []schemas.File{{Path: "NOTES.md", Content: "## Implementation\n"}, {Path: "CHANGES.txt", Content: "x"}}, "no code file: a developer output needs at least one source file besides its notes"},
		{"tester", "tester", []schemas.File{{Path: "TEST_PLAN.md", Content: "## Scope\n## Cases\n"}}, ""},
		{"writer missing both", "writer", []schemas.File{{Path: "README.md", Content: "# Title\n"}}, `README.md: missing section "## Overview"; README.md: missing section "## Usage"`},
		{"devops", "devops", []schemas.File{{Path: "RUNBOOK.md", Content: "## Deploy\n## Rollback\n"}}, ""},
		{"unknown role", "janitor", goodFiles(), `unknown role "janitor"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := checkByName(t, CheckRules(tt.role, "", tt.files, Limits{}), CheckRequiredSections)
			require.Equal(t, tt.detail == "", c.Passed, c.Detail)
			if tt.detail != "" {
				require.Equal(t, tt.detail, c.Detail)
			}
		})
	}
}

func TestCheckNoSecrets(t *testing.T) {
	t.Parallel()
	// Built from parts so this file holds no secret-looking literal.
	rep := strings.Repeat
	openai := "sk-" + "proj" + rep("Ab3", 10)
	aws := "AKIA" + "Q3EGRJ5XK2M7PLZW"
	github := "ghp_" + rep("a1B2", 9)
	slack := "xoxb-" + "1234567890-abcdef"
	google := "AIza" + rep("x9Y", 11) + "zz"
	jwt := "eyJ" + "hbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0" + "." + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	tests := []struct {
		name   string
		text   string
		secret string // must never appear in the detail
		detail string // empty when the check passes
	}{
		{"openai", "key: " + openai, openai, "README.md line 1: looks like an OpenAI API key (sk-…)"},
		{"aws", "one\ntwo\naws_access_key_id = " + aws, aws, "README.md line 3: looks like an AWS access key id (AKIA…)"},
		{"github", "export GH=" + github, github, "README.md line 1: looks like a GitHub token (ghp_…)"},
		{"slack", "x\n" + slack, slack, "README.md line 2: looks like a Slack token (xoxb…)"},
		{"google", google, google, "README.md line 1: looks like a Google API key (AIza…)"},
		{"private key", "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE\n", "MIIE", "README.md line 1: looks like a private key block"},
		{"openssh private key", "-----BEGIN OPENSSH " + "PRIVATE KEY-----", "", "README.md line 1: looks like a private key block"},
		{"jwt", "Authorization: Bearer " + jwt, jwt, "README.md line 1: looks like a JSON Web Token (eyJ…)"},
		{"generic password", `db_password = "Zx81kq0Pw7Lm3Rt9Vb"`, "Zx81kq0Pw7Lm3Rt9Vb", "README.md line 1: looks like a hard-coded credential (password=…)"},
		{"folded keyword", "paſsword = Zx81kq0Pw7Lm3Rt9Vb", "Zx81kq0Pw7Lm3Rt9Vb", "README.md line 1: looks like a hard-coded credential (paſsword=…)"},
		{"generic api key yaml", "API_KEY: 9f8e7d6c5b4a39281706", "9f8e7d6c5b4a39281706", "README.md line 1: looks like a hard-coded credential (api_key=…)"},
		{"generic secret", "client_secret='abcdEFGH1234ijklMNOP'", "abcdEFGH1234ijklMNOP", "README.md line 1: looks like a hard-coded credential (secret=…)"},
		{"generic name runs on", "export AWS_SECRET_ACCESS_KEY=" + "Qm9vZ3l3b29naWVib29n" + "Zm9vYmFy", "Qm9vZ3l3b29naWVib29n", "README.md line 1: looks like a hard-coded credential (secret=…)"},
		{"aws documented secret", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY", "", ""},
		{"env placeholder", "api_key: ${API_KEY}", "", ""},
		{"angle placeholder", "token = <your-token-goes-here>", "", ""},
		{"xxxx placeholder", "password: xxxxxxxxxxxxxxxxxxxxxxxx", "", ""},
		{"changeme placeholder", "password=changeme_changeme_123", "", ""},
		{"example placeholder", "api-key: example-key-0123456789", "", ""},
		{"aws documented example", "AKIAIOSFODNN7" + "EXAMPLE", "", ""},
		{"openai placeholder", "sk-your-key-here-0123456789abcdef", "", ""},
		{"short value", "password: hunter2", "", ""},
		{"code reading a variable", `token := os.Getenv("TOKEN")`, "", ""},
		{"prose", "Rotate the API key and the secret regularly; tokens expire.", "", ""},
		{"sk prefix too short", "sk-abc", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files := []schemas.File{{Path: "README.md", Content: tt.text}}
			c := checkByName(t, CheckRules("writer", "", files, Limits{}), CheckNoSecrets)
			require.Equal(t, tt.detail == "", c.Passed, c.Detail)
			if tt.detail != "" {
				require.Equal(t, tt.detail, c.Detail)
			}
			if tt.secret != "" {
				require.NotContains(t, c.Detail, tt.secret)
				require.NotContains(t, c.Detail, tt.secret[:min(5, len(tt.secret))])
			}
		})
	}
}

func TestCheckNoSecretsInContentAndManyFiles(t *testing.T) {
	t.Parallel()
	key := "sk-" + strings.Repeat("Q", 30)
	files := []schemas.File{
		{Path: "a.md", Content: "fine"},
		{Path: "b/c.env", Content: "\n\nOPENAI=" + key + " and again " + key},
	}
	c := checkByName(t, CheckRules("writer", "summary\n"+key, files, Limits{}), CheckNoSecrets)
	require.False(t, c.Passed)
	require.Equal(t, "content line 2: looks like an OpenAI API key (sk-…); b/c.env line 3: looks like an OpenAI API key (sk-…)", c.Detail)
	require.NotContains(t, c.Detail, "QQQQ")
}

func TestPassedAndFeedback(t *testing.T) {
	t.Parallel()
	require.True(t, Passed(nil))
	checks := []schemas.Check{
		{Name: "not_empty", Passed: true, Detail: "1 file"},
		{Name: "safe_paths", Passed: false, Detail: `file "../x": path escapes the staging area`},
		{Name: "required_sections", Passed: false, Detail: "PRD.md: missing\nsection"},
		{Name: "no_secrets", Passed: false},
	}
	require.False(t, Passed(checks))
	require.Equal(t,
		"- safe_paths: file \"../x\": path escapes the staging area\n"+
			"- required_sections: PRD.md: missing section\n"+
			"- no_secrets: failed\n",
		Feedback(checks))

	bad := CheckRules("pm", "", []schemas.File{{Path: "../PRD.md", Content: "# PRD\n"}}, Limits{})
	fb := Feedback(bad)
	require.Contains(t, fb, `- safe_paths: file "../PRD.md": path escapes the staging area`+"\n")
	require.Contains(t, fb, `- required_sections: missing file "PRD.md"`+"\n")
}

// TestOfflineDraftsPassRules is the cross-check that keeps the offline model
// and the rules in step: every role's offline draft passes every rule, first
// draft and revision alike, so offline jobs complete under the rules policy.
func TestOfflineDraftsPassRules(t *testing.T) {
	t.Parallel()
	model := llm.NewOffline()
	for _, role := range schemas.Roles {
		for _, variant := range []string{"draft", "revision"} {
			t.Run(role+"/"+variant, func(t *testing.T) {
				t.Parallel()
				task := llm.TaskContext{
					JobID:        "0b9f6c1e-3f7a-4c2e-9d51-6a2f0c8e7b14",
					JobTitle:     "Per-key rate limiting",
					Brief:        "Add per-API-key limits with clear 429s.\nEach plan has its own quota; admins can raise it.",
					TaskID:       "5d7e1a2b-8c9f-4e3d-a1b2-c3d4e5f60718",
					Key:          role,
					Instructions: "Produce the " + role + " deliverable for the rate limiter.",
					Inputs: []llm.Input{
						{Path: "projects/0b9f6c1e/pm/PRD.md", Role: "pm", TaskKey: "prd", Content: "# PRD\n## Goals\n"},
					},
				}
				if variant == "revision" {
					task.Revision = 1
					task.Feedback = Feedback(CheckRules(role, "", []schemas.File{{Path: "../x.md", Content: "api_key: " + "sk-" + strings.Repeat("z", 24)}}, Limits{}))
					task.Lessons = []schemas.Lesson{
						{ID: "l1", Text: "Always name the HTTP status codes.", Scope: "all", CreatedAt: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
						{ID: "l2", Text: "Keep the " + role + " output under two pages.", Scope: role},
					}
					require.NotEmpty(t, task.Feedback)
				}
				resp, err := model.Generate(context.Background(), llm.Request{Role: role, Task: task})
				require.NoError(t, err)
				checks := CheckRules(role, resp.Content, resp.Files, Limits{})
				require.True(t, Passed(checks), "offline %s %s fails the rules:\n%s", role, variant, Feedback(checks))
			})
		}
	}
}
