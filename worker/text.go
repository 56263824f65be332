package worker

import (
	"fmt"
	"strings"

	"github.com/troupe-dev/troupe/schemas"
)

// storableSummary returns an answer's summary as a store can keep it: a
// NUL character, which PostgreSQL's text refuses (the output could then
// never be staged), becomes U+FFFD, and a failed answer_format check says
// where it was, so review rejects the output with the reason. (NUL in a
// file is kept, JSON-escaped, for review's no_nul rule to reject.)
func storableSummary(content string) (string, *schemas.Check) {
	i := strings.IndexByte(content, 0)
	if i < 0 {
		return content, nil
	}
	return strings.ReplaceAll(content, "\x00", "\uFFFD"), &schemas.Check{Name: "answer_format", Passed: false,
		Detail: fmt.Sprintf("the answer's summary has a NUL character (U+0000) at byte %d; answers must be text", i)}
}
