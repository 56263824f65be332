package review

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// TestCheckNoNUL: a NUL character in the summary, a file's content or a
// file's path fails the rules, saying where, so the output is rejected
// (with that feedback for the next revision) and never promoted.
func TestCheckNoNUL(t *testing.T) {
	t.Parallel()
	good := goodFiles()
	tests := []struct {
		name    string
		content string
		files   []schemas.File
		detail  string
	}{
		{"in a file's content", "A PRD.", append(good, schemas.File{Path: "data.bin", Content: "ab\ncd\x00ef"}),
			`file "data.bin": content has a NUL character (U+0000) at byte 5, line 2; files must be text`},
		{"in a file's path", "A PRD.", append(good, schemas.File{Path: "a\x00b.md", Content: "x"}),
			`file "a\x00b.md": path has a NUL character (U+0000) at byte 1`},
		{"in the summary", "A\x00PRD.", good, "the answer's summary has a NUL character (U+0000) at byte 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checks := CheckRules("pm", tc.content, tc.files, Limits{})
			require.False(t, Passed(checks))
			c := checkByName(t, checks, CheckNoNUL)
			require.False(t, c.Passed)
			require.Equal(t, tc.detail, c.Detail)
			require.Contains(t, Feedback(checks), "- no_nul: "+tc.detail)
		})
	}
	c := checkByName(t, CheckRules("pm", "A PRD.", good, Limits{}), CheckNoNUL)
	require.True(t, c.Passed)
	require.Equal(t, "no NUL characters", c.Detail)
}
