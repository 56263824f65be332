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
	"github.com/troupe-dev/troupe/store"
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

// Secrets are built from parts so this file holds no secret-looking literal.
var (
	rep = strings.Repeat
	// configuredKey is a configured model API key: sk- and 17 characters,
	// too short for any rule of its own.
	configuredKey = "sk-" + "Tq7Rb2Xw9Lm4Zp8Kd"
	stripeKey     = "sk_" + "live_" + "51HqLyjWDarjtT1zdp7dcXYZabc"
	awsID         = "AKIA" + "Q3EGRJ5XK2M7PLZW"
)

// secretForms are the forms of issue 15 that the old scanner let through,
// and those it found, each as a file's content: what must be found, the
// secret that may not appear in the check's detail, and the kind named.
var secretForms = []struct {
	name, path, text, secret, kind string
	line                           int // of the secret in text
}{
	{"configured key", "NOTES.md", "Use " + configuredKey + " for staging.", configuredKey, "configured-secret", 1},
	{"json api_key", "config.json", "{\n  \"api_key\": \"9fQ2xL7mZ4kR8tW1vB6nC3hJ\"\n}", "9fQ2xL7mZ4kR8tW1vB6nC3hJ", "generic-api-key", 2},
	{"json password", "config.json", `{"user": "app", "password": "Tr0ub4dor&3-xK!"}`, "Tr0ub4dor&3-xK!", "quoted-credential", 1},
	{"stripe live key", "billing.go", `stripe.Key = "` + stripeKey + `"`, stripeKey, "stripe-access-token", 1},
	{"postgres url", "RUNBOOK.md", "DATABASE_URL=postgres://app:pass@db.internal:5432/app", ":pass@", "url-credentials", 1},
	{"bearer header", "api.md", "Authorization: Bearer 7f3kQ9zL2mX8vB4nR6tY1wC5", "7f3kQ9zL2mX8vB4nR6tY1wC5", "bearer-token", 1},
	{"slack webhook", "notify.py", "HOOK = 'https://hooks.slack.com/services/" + "T024BE7LD/B01A2B3C4D5/" + "k8Jd7Hs6Gf5Ds4Aq3Wz2Xc1V'", "k8Jd7Hs6Gf5Ds4Aq3Wz2Xc1V", "slack-webhook-url", 1},
	{"github fine-grained pat", "ci.sh", "export GH_TOKEN=github_pat_" + "11ABCDEFG0aB3dE5gH7jK9mN1pQ3sT5v", "11ABCDEFG0aB3dE5gH7jK9mN1pQ3sT5v", "github-pat-any-length", 1},
	{"yaml folded value", "values.yaml", "service:\n  api_key: >-\n    " + stripeKey + "\n", stripeKey, "stripe-access-token", 3},
	{"key with your", "app.env", "API_KEY=your" + "8fK2mQ9xL4vR7tZ1nB", "8fK2mQ9xL4vR7tZ1nB", "generic-api-key", 1},
	{"key with example", "app.env", "api-key: example-key-" + "0123456789", "example-key-0123456789", "generic-api-key", 1},
	{"key with sample", "app.json", `{"token": "sample` + `_9xK2mQ8vL4rT7zW1"}`, "9xK2mQ8vL4rT7zW1", "generic-api-key", 1},
	{"openai project key", "SKILL.md", "sk-" + "proj-" + "Xk29fjQ8LmZp4RtY7vWc1NbH3sDg6KaE", "Xk29fjQ8LmZp4RtY7vWc1NbH3sDg6KaE", "sk-api-key", 1},
	{"aws key id", "x.ini", "aws_access_key_id = " + awsID, awsID, "aws-access-token", 1},
	{"github token", "x.sh", "export GH=" + "ghp_" + "x8Kd2Lq9Zm4Rt7Wv1Bn6Yc3Hs5Fj0Pg8Ea2U", "x8Kd2Lq9Zm4Rt7Wv1Bn6Yc3Hs5Fj0Pg8Ea2U", "github-pat", 1},
	{"private key", "id_rsa.txt", "-----BEGIN RSA " + "PRIVATE KEY-----\n" + rep("MIIEowIBAAKCAQEA", 4) + "\n-----END RSA " + "PRIVATE KEY-----\n", "MIIEowIBAAKCAQEA", "private-key", 1},
	{"jwt", "x.md", "token: " + "eyJ" + "hbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0" + "." + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjgNryP4J3jVmNHl0w5N", "jwt", 1},
}

// TestCheckNoSecrets: every form is found, the detail names the file, the
// line and the kind, and never the secret.
func TestCheckNoSecrets(t *testing.T) {
	t.Parallel()
	limits := Limits{Secrets: []string{configuredKey}}
	for _, tt := range secretForms {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			files := []schemas.File{{Path: tt.path, Content: "first line\n" + tt.text}}
			c := checkByName(t, CheckRules("writer", "", files, limits), CheckNoSecrets)
			require.False(t, c.Passed, "not found")
			require.Contains(t, c.Detail, fmt.Sprintf("%s line %d: looks like a secret (", tt.path, tt.line+1))
			require.Contains(t, c.Detail, tt.kind)
			require.NotContains(t, c.Detail, tt.secret)
		})
	}
}

// TestCheckNoSecretsPasses: placeholders of low entropy, names without
// values and prose pass.
func TestCheckNoSecretsPasses(t *testing.T) {
	t.Parallel()
	for _, text := range []string{
		`api_key = "<your-key-here>"`,
		"token = <your-token-goes-here>",
		"Authorization: Bearer <your-token-here>",
		"api_key: ${API_KEY}",
		"DATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app",
		"password: xxxxxxxxxxxxxxxxxxxxxxxx",
		"password: hunter2",
		`token := os.Getenv("TOKEN")`,
		"Rotate the API key and the secret regularly; tokens expire.",
		"AKIAIOSFODNN7" + "EXAMPLE",
		"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY",
		"sk-abc",
	} {
		files := []schemas.File{{Path: "README.md", Content: text}}
		c := checkByName(t, CheckRules("writer", "", files, Limits{Secrets: []string{configuredKey}}), CheckNoSecrets)
		require.True(t, c.Passed, "%q: %s", text, c.Detail)
	}
}

// TestCheckNoSecretsInPaths: a key in a file's path fails the check, and
// no check's detail shows the path unmasked.
func TestCheckNoSecretsInPaths(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"keys/" + awsID + "/credentials.md", "config/" + stripeKey + ".json", "../" + configuredKey + ".md"} {
		files := append(goodFiles(), schemas.File{Path: p, Content: "x"})
		checks := CheckRules("pm", "", files, Limits{Secrets: []string{configuredKey}})
		c := checkByName(t, checks, CheckNoSecrets)
		require.False(t, c.Passed, p)
		require.Contains(t, c.Detail, "its path looks like a secret")
		for _, c := range checks {
			for _, secret := range []string{awsID, stripeKey, configuredKey} {
				require.NotContains(t, c.Detail, secret, c.Name)
			}
		}
	}
}

func TestCheckNoSecretsInContentAndManyFiles(t *testing.T) {
	t.Parallel()
	key := "sk-" + "proj-" + "Xk29fjQ8LmZp4RtY7vWc1NbH3sDg6KaE"
	files := []schemas.File{
		{Path: "a.md", Content: "fine"},
		{Path: "b/c.env", Content: "\n\nOPENAI=" + key + " and again " + key},
	}
	c := checkByName(t, CheckRules("writer", "summary\n"+key, files, Limits{}), CheckNoSecrets)
	require.False(t, c.Passed)
	require.Equal(t, "content line 2: looks like a secret (sk-api-key); b/c.env line 3: looks like a secret (sk-api-key)", c.Detail)
	require.NotContains(t, c.Detail, "Xk29")
}

// TestMaskSecrets: what a person is shown of an output names where a secret
// was and of what kind, and holds none of it.
func TestMaskSecrets(t *testing.T) {
	t.Parallel()
	out := MaskSecrets(store.Output{
		Content: "summary with " + configuredKey,
		Files:   []schemas.File{{Path: "keys/" + awsID + ".txt", Content: "id = " + awsID + "\nstripe: " + stripeKey}},
	}, Limits{Secrets: []string{configuredKey}})
	require.Equal(t, "summary with [secret: configured-secret]", out.Content)
	require.Equal(t, "keys/[secret: aws-access-token].txt", out.Files[0].Path)
	require.Equal(t, "id = [secret: aws-access-token]\nstripe: [secret: stripe-access-token]", out.Files[0].Content)
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
