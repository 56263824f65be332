package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// term returns s fit to print in one line or table cell of a terminal:
// control characters (C0, DEL, C1, newlines and tabs too), bidirectional
// overrides, line and paragraph separators and bytes that are not UTF-8
// are written as escapes (\x1b, \u202e, \n), so a title or a reason can
// neither drive the terminal nor pass for other rows. Every human-readable
// printer passes what it did not write itself through term or termText;
// --json prints the exact values.
func term(s string) string { return escape(s, false) }

// termText is term for text of several lines (an output's content, a dead
// letter's payload): it keeps newlines and tabs.
func termText(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unsafeRune(r, size, keepLines) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case !unsafeRune(r, size, keepLines):
			b.WriteString(s[i : i+size])
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

// unsafeRune reports whether the rune r (size bytes of the string) must be
// escaped.
func unsafeRune(r rune, size int, keepLines bool) bool {
	switch {
	case r == utf8.RuneError && size == 1:
		return true
	case keepLines && (r == '\n' || r == '\t'):
		return false
	case r < 0x80:
		return r < 0x20 || r == 0x7f
	default:
		return unicode.IsControl(r) || unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp)
	}
}

// short returns s for one line, at most about n bytes.
func short(s string, n int) string {
	s = term(s)
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
