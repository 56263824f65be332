package worker_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/worker"
)

func TestRolePromptMentionsRequiredSections(t *testing.T) {
	t.Parallel()
	shared, err := os.ReadFile("roles/_format.md")
	require.NoError(t, err)
	for _, role := range schemas.Roles {
		t.Run(role, func(t *testing.T) {
			t.Parallel()
			prompt, err := worker.RolePrompt(role)
			require.NoError(t, err)

			file, headings := review.RequiredSections(role)
			require.NotEmpty(t, file)
			require.Contains(t, prompt, "`"+file+"`")
			for _, h := range headings {
				require.Contains(t, prompt, "`"+h+"`", "prompt of %s lacks heading %q", role, h)
			}
			// The line stating the required headings lists exactly the
			// ones review checks, so prompt and rules cannot drift apart.
			quoted := make([]string, len(headings))
			for i, h := range headings {
				quoted[i] = "`" + h + "`"
			}
			require.Contains(t, prompt, "exactly: "+strings.Join(quoted, ", ")+".")

			// Every prompt ends with the identical shared part.
			require.True(t, strings.HasSuffix(prompt, strings.TrimSpace(string(shared))+"\n"))
			require.True(t, strings.HasPrefix(prompt, "# Role: "+role))
			for _, s := range []string{
				"=== FILE: <relative/path> ===", "=== END FILE ===",
				"read shared, write isolated", "## Inputs", "## Lessons applied",
				"## Reviewer feedback addressed", "secret",
			} {
				require.Contains(t, prompt, s)
			}
		})
	}
}

func TestRolePromptDeveloperNeedsCode(t *testing.T) {
	t.Parallel()
	prompt, err := worker.RolePrompt("developer")
	require.NoError(t, err)
	require.Contains(t, prompt, "At least one code file is required")
}

func TestRolePromptUnknownRole(t *testing.T) {
	t.Parallel()
	for _, role := range []string{"janitor", "", "_format", "../pm", "PM"} {
		_, err := worker.RolePrompt(role)
		require.Error(t, err)
		require.ErrorContains(t, err, `"`+role+`"`)
	}
}
