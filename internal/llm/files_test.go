package llm

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		answer  string
		summary string
		paths   []string
		first   string
		err     string
	}{
		{
			name:    "documented format",
			answer:  "I wrote the PRD.\n\n=== FILE: PRD.md ===\n# PRD\n\n## Goals\nFast.\n=== END FILE ===\n",
			summary: "I wrote the PRD.", paths: []string{"PRD.md"}, first: "# PRD\n\n## Goals\nFast.\n",
		},
		{
			name:    "two files, the last without END, CRLF",
			answer:  "Two files.\r\n=== FILE: a/main.go ===\r\npackage main\r\n=== END FILE ===\r\n=== FILE: NOTES.md ===\r\n## Implementation\r\n",
			summary: "Two files.", paths: []string{"a/main.go", "NOTES.md"}, first: "package main\n",
		},
		{
			name:    "loose markers, quoted path, fenced body",
			answer:  "==== file: `docs/x.md` ====\n```markdown\n# X\n```\n== end file ==\n",
			summary: "", paths: []string{"docs/x.md"}, first: "# X\n",
		},
		{
			name:    "a file with fenced blocks of its own",
			answer:  "=== FILE: README.md ===\n```bash\nmake build\n```\n\nThen run:\n\n```bash\n./app\n```\n=== END FILE ===\n",
			summary: "", paths: []string{"README.md"}, first: "```bash\nmake build\n```\n\nThen run:\n\n```bash\n./app\n```\n",
		},
		{name: "no block", answer: "Here is the PRD: # PRD ...", err: "holds no file"},
		{name: "twice", answer: "=== FILE: a ===\n1\n=== END FILE ===\n=== FILE: a ===\n2\n", err: `file "a" is written twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			summary, files, err := ParseFiles(tt.answer)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.summary, summary)
			var paths []string
			for _, f := range files {
				paths = append(paths, f.Path)
			}
			require.Equal(t, tt.paths, paths)
			require.Equal(t, tt.first, files[0].Content)
		})
	}
}
