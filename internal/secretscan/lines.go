package secretscan

import (
	"regexp"
	"sort"
	"strings"
)

// lineIndex holds the offsets of a text's newlines.
type lineIndex []int

func newLines(text string) lineIndex {
	var idx lineIndex
	for i := 0; ; {
		j := strings.IndexByte(text[i:], '\n')
		if j < 0 {
			return idx
		}
		idx = append(idx, i+j)
		i += j + 1
	}
}

// line is the 1-based line of offset off.
func (l lineIndex) line(off int) int { return sort.SearchInts(l, off) + 1 }

// around is the whole lines of text that [start, end) touches.
func (l lineIndex) around(text string, start, end int) string {
	from := strings.LastIndexByte(text[:start], '\n') + 1
	to := len(text)
	if end > start && text[end-1] == '\n' {
		end--
	}
	if j := strings.IndexByte(text[end:], '\n'); j >= 0 {
		to = end + j
	}
	return text[from:to]
}

// blockScalar is a YAML key whose value is a block scalar (key: >, key: |-)
// and the first line of that value.
var blockScalar = regexp.MustCompile(`(?m)^([ \t]*(?:- )?[\w.-]+:)[ \t]*[>|][+-]?[1-9]?[+-]?[ \t]*(?:#[^\n]*)?\r?\n(?:[ \t]*\r?\n)*[ \t]+\S`)

// joinBlockScalars returns text with each YAML block scalar's key moved
// onto the line of its value's first line ("api_key: >\n  sk_…" reads
// "api_key: sk_…"), every offset of the value unchanged, and the offsets
// of those values (none when there is no block scalar).
func joinBlockScalars(text string) (string, []int) {
	if !strings.Contains(text, ": >") && !strings.Contains(text, ": |") && !strings.Contains(text, ":>") && !strings.Contains(text, ":|") {
		return "", nil
	}
	ms := blockScalar.FindAllStringSubmatchIndex(text, -1)
	if len(ms) == 0 {
		return "", nil
	}
	b := []byte(text)
	values := make([]int, 0, len(ms))
	for _, m := range ms {
		start, value := m[0], m[1]-1 // the value's first byte
		key := strings.TrimLeft(text[m[2]:m[3]], " \t-") + " "
		// [start, value) becomes spaces, then the key right before the value.
		for i := start; i < value; i++ {
			b[i] = ' '
		}
		copy(b[value-len(key):value], key)
		values = append(values, value)
	}
	return string(b), values
}
