package review

import (
	"fmt"
	"strings"

	"github.com/troupe-dev/troupe/schemas"
)

// CheckNoNUL is the name of the rule check that refuses a NUL character
// (U+0000) in an output's content, a file's content or a file's path:
// PostgreSQL's text cannot store one, so such an output could never be
// promoted there (SQLite would keep it, so the stores would differ).
const CheckNoNUL = "no_nul"

func checkNoNUL(content string, files []schemas.File) schemas.Check {
	var p problems
	if i := strings.IndexByte(content, 0); i >= 0 {
		p.addf("the answer's summary has a NUL character (U+0000) at byte %d", i)
	}
	for _, f := range files {
		if i := strings.IndexByte(f.Path, 0); i >= 0 {
			p.addf("file %q: path has a NUL character (U+0000) at byte %d", f.Path, i)
		}
		if i := strings.IndexByte(f.Content, 0); i >= 0 {
			p.addf("file %q: content has a NUL character (U+0000) at byte %d, %s; files must be text", f.Path, i, lineOf(f.Content, i))
		}
	}
	return p.check(CheckNoNUL, "no NUL characters")
}

// lineOf says where byte i of s is, as "line 3".
func lineOf(s string, i int) string {
	return fmt.Sprintf("line %d", strings.Count(s[:i], "\n")+1)
}
