package llm

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/troupe-dev/troupe/schemas"
)

// The answer format the role prompts ask for: a summary, then every file
// as a block between "=== FILE: <path> ===" and "=== END FILE ===".
var (
	fileStart = regexp.MustCompile(`(?im)^[ \t]*={2,}[ \t]*FILE[ \t]*:[ \t]*(.+?)[ \t]*=*[ \t]*$`)
	fileEnd   = regexp.MustCompile(`(?im)^[ \t]*={2,}[ \t]*END[ \t]+FILE[ \t]*=*[ \t]*$`)
	fence     = regexp.MustCompile("^```[A-Za-z0-9_+-]*[ \t]*\n")
)

// ErrNoFiles is returned by ParseFiles when an answer holds no file block.
var ErrNoFiles = errors.New("the answer holds no file; write every file as a block from a line \"=== FILE: <relative/path> ===\" to a line \"=== END FILE ===\"")

// ParseFiles reads a model's answer in the documented format, tolerantly:
// any number of '=' around the markers, any case, a missing last END line,
// a block wrapped in a code fence, and backticks or quotes around the path.
// What comes before the first block is the summary.
func ParseFiles(answer string) (summary string, files []schemas.File, err error) {
	answer = strings.ReplaceAll(answer, "\r\n", "\n")
	starts := fileStart.FindAllStringSubmatchIndex(answer, -1)
	if len(starts) == 0 {
		return strings.TrimSpace(answer), nil, ErrNoFiles
	}
	summary = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(answer[:starts[0][0]]), "```"))
	seen := map[string]bool{}
	for i, m := range starts {
		path := strings.Trim(strings.TrimSpace(answer[m[2]:m[3]]), "`'\"")
		if path == "" {
			return summary, nil, fmt.Errorf("file block %d has no path", i+1)
		}
		if seen[path] {
			return summary, nil, fmt.Errorf("file %q is written twice", path)
		}
		seen[path] = true
		bodyEnd := len(answer)
		if i+1 < len(starts) {
			bodyEnd = starts[i+1][0]
		}
		body := answer[m[1]:bodyEnd]
		if end := fileEnd.FindStringIndex(body); end != nil {
			body = body[:end[0]]
		}
		body = strings.TrimPrefix(body, "\n")
		// A block the model wrapped whole in one code fence: exactly two
		// fence lines, the first and the last. A file that has fenced
		// blocks of its own (a README) is left as it is.
		if loc := fence.FindStringIndex(body); loc != nil && fenceLines(body) == 2 {
			if trimmed := strings.TrimRight(body, " \t\n"); strings.HasSuffix(trimmed, "\n```") {
				body = strings.TrimSuffix(trimmed, "```")[loc[1]:]
			}
		}
		files = append(files, schemas.File{Path: path, Content: strings.TrimRight(body, " \t\n") + "\n"})
	}
	return summary, files, nil
}

func fenceLines(body string) int {
	n := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			n++
		}
	}
	return n
}
