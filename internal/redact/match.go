package redact

import (
	"encoding/binary"
	"slices"
	"strings"
)

// matcher finds any of a set of strings (at least MinLen bytes, in ASCII
// lower case) in a text, ignoring ASCII case. It looks at every position
// of the text once: the four bytes there, lower-cased, are tested against
// a bit set of the patterns' first four bytes, and only on a hit are the
// patterns starting with them compared. A log line without a secret costs
// about a nanosecond a byte, whatever the number of patterns (a
// strings.Replacer of the same forms cost ten times more).
type matcher struct {
	bits  [1 << 16 / 64]uint64
	heads map[uint32][]string // by first four bytes, the longest first
}

func newMatcher(patterns []string) *matcher {
	m := &matcher{heads: map[uint32][]string{}}
	for _, p := range patterns {
		h := binary.LittleEndian.Uint32([]byte(p[:4]))
		if !slices.Contains(m.heads[h], p) {
			m.heads[h] = append(m.heads[h], p)
		}
		b := bucket(h)
		m.bits[b/64] |= 1 << (b % 64)
	}
	for _, ps := range m.heads {
		slices.SortFunc(ps, func(a, b string) int { return len(b) - len(a) })
	}
	return m
}

func bucket(h uint32) uint32 { return (h * 2654435761) >> 16 }

// find appends the spans of s that match a pattern, leftmost first, the
// longest at each position, not overlapping.
func (m *matcher) find(s string, spans []span) []span {
	if len(s) < 4 {
		return spans
	}
	// Before each look, h holds the three bytes from i, lower-cased, the
	// first in its low byte; the fourth is added.
	h := uint32(lower(s[0])) | uint32(lower(s[1]))<<8 | uint32(lower(s[2]))<<16
	for i := 0; i+4 <= len(s); i++ {
		h |= uint32(lower(s[i+3])) << 24
		if b := bucket(h); m.bits[b/64]&(1<<(b%64)) != 0 {
			if p := m.at(s, i, h); p > 0 {
				spans = append(spans, span{i, i + p})
				i += p - 1
				if i+4 < len(s) {
					h = uint32(lower(s[i+1])) | uint32(lower(s[i+2]))<<8 | uint32(lower(s[i+3]))<<16
				}
				continue
			}
		}
		h >>= 8
	}
	return spans
}

// at is the length of the longest pattern at s[i:] whose first four bytes
// are h, or 0.
func (m *matcher) at(s string, i int, h uint32) int {
	for _, p := range m.heads[h] {
		if len(s)-i >= len(p) && strings.EqualFold(s[i:i+len(p)], p) {
			return len(p)
		}
	}
	return 0
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lower(c)
	}
	return string(b)
}
