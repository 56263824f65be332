package redact

import (
	"net/url"
	"strings"
)

// Shapes masks the credentials of well-known shapes in s, whatever their
// value: URL user information (scheme://user:pass@host), name=value
// parameters named like a credential (key=, api_key=, access_token=,
// x-api-key=, password=, sig=, X-Amz-Signature=…), headers and JSON
// members (Authorization: Bearer …, X-Api-Key: …, "password": "…", also
// inside an escaped JSON string) and bearer tokens in prose.
//
// It scans by hand rather than with regular expressions: it runs on every
// log line, and the expressions cost a hundred times more (see
// BenchmarkWriter).
func Shapes(s string) string {
	var spans []span
	spans = userinfoSpans(s, spans)
	spans = paramSpans(s, spans)
	spans = memberSpans(s, spans)
	spans = bearerSpans(s, spans)
	return maskSpans(s, spans)
}

// span is a part of a text to mask, [from, to).
type span struct{ from, to int }

// maskSpans replaces the spans (in any order, perhaps overlapping) with
// Mask.
func maskSpans(s string, spans []span) string {
	if len(spans) == 0 {
		return s
	}
	sortSpans(spans)
	merged := spans[:0]
	for _, sp := range spans {
		if n := len(merged); n > 0 && sp.from <= merged[n-1].to {
			merged[n-1].to = max(merged[n-1].to, sp.to)
			continue
		}
		merged = append(merged, sp)
	}
	var b strings.Builder
	b.Grow(len(s))
	at := 0
	for _, sp := range merged {
		b.WriteString(s[at:sp.from])
		b.WriteString(Mask)
		at = sp.to
	}
	b.WriteString(s[at:])
	return b.String()
}

func sortSpans(spans []span) {
	// Few spans: insertion sort by start, the longer first.
	for i := 1; i < len(spans); i++ {
		for j := i; j > 0 && (spans[j].from < spans[j-1].from || spans[j].from == spans[j-1].from && spans[j].to > spans[j-1].to); j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
}

// userinfoSpans finds scheme://userinfo@: everything between :// and @.
func userinfoSpans(s string, spans []span) []span {
	for i := 0; ; {
		k := strings.Index(s[i:], "://")
		if k < 0 {
			return spans
		}
		from := i + k + 3
		j := from
		for j < len(s) && !strings.ContainsRune("/@?# \t\r\n\"'\\<>", rune(s[j])) {
			j++
		}
		if j < len(s) && s[j] == '@' && j > from {
			spans = append(spans, span{from, j})
		}
		i = from
	}
}

// paramSpans finds name=value where name is a credential's.
func paramSpans(s string, spans []span) []span {
	for i := 0; ; {
		k := strings.IndexByte(s[i:], '=')
		if k < 0 {
			return spans
		}
		eq := i + k
		i = eq + 1
		start := nameStart(s, eq)
		if start == eq || (start > 0 && !strings.ContainsRune(" \t\r\n?&;,({\"'", rune(s[start-1]))) {
			continue
		}
		if name := s[start:eq]; !specificName(name) && !shortName(name) {
			continue
		}
		end := i
		for end < len(s) && !strings.ContainsRune(" \t\r\n&;,\"'\\#<>)}", rune(s[end])) {
			end++
		}
		if end > i && s[end-1] == ':' && (end == len(s) || s[end] == ' ') {
			end-- // "...?key=x: connection refused": the colon is the message's
		}
		if end > i {
			spans = append(spans, span{i, end})
		}
	}
}

// memberSpans finds "name": "value" (JSON, also escaped in a JSON
// string) and name: value (a header, a YAML line) where name is a
// credential's. A header's value may start with its scheme (Bearer,
// Basic), which is kept.
func memberSpans(s string, spans []span) []span {
	for i := 0; ; {
		k := strings.IndexByte(s[i:], ':')
		if k < 0 {
			return spans
		}
		colon := i + k
		i = colon + 1
		end := colon
		for end > 0 && (s[end-1] == ' ' || s[end-1] == '\t') {
			end--
		}
		quoted := end > 0 && s[end-1] == '"'
		if quoted {
			end--
			if end > 0 && s[end-1] == '\\' {
				end--
			}
		}
		start := nameStart(s, end)
		if start == end || !specificName(s[start:end]) {
			continue
		}
		if quoted {
			if start == 0 || s[start-1] != '"' {
				continue
			}
		} else if start > 0 && !strings.ContainsRune(" \t\r\n\"'{,;(", rune(s[start-1])) {
			continue
		}
		v := i
		for v < len(s) && (s[v] == ' ' || s[v] == '\t') {
			v++
		}
		if quoted {
			if strings.HasPrefix(s[v:], `\"`) {
				v += 2
			} else if strings.HasPrefix(s[v:], `"`) {
				v++
			} else {
				continue
			}
			e := v
			for e < len(s) && s[e] != '"' && s[e] != '\\' {
				e++
			}
			if e > v {
				spans = append(spans, span{v, e})
			}
			continue
		}
		for _, scheme := range []string{"bearer", "basic", "token", "digest"} {
			if w := v + len(scheme); w < len(s) && strings.EqualFold(s[v:w], scheme) && (s[w] == ' ' || s[w] == '\t') {
				for v = w; v < len(s) && (s[v] == ' ' || s[v] == '\t'); v++ {
				}
				break
			}
		}
		e := v
		for e < len(s) && !strings.ContainsRune(" \t\r\n\"'\\,;", rune(s[e])) {
			e++
		}
		if e > v {
			spans = append(spans, span{v, e})
		}
	}
}

// bearerSpans finds "Bearer <token>" in prose: a token of at least 8
// characters.
func bearerSpans(s string, spans []span) []span {
	for i := 0; i+6 < len(s); i++ {
		if s[i]|0x20 != 'b' || !strings.EqualFold(s[i:i+6], "bearer") || (i > 0 && isNameByte(s[i-1])) {
			continue
		}
		v := i + 6
		for v < len(s) && (s[v] == ' ' || s[v] == '\t') {
			v++
		}
		if v == i+6 {
			continue
		}
		e := v
		for e < len(s) && (isNameByte(s[e]) || strings.IndexByte("~+/", s[e]) >= 0) {
			e++
		}
		for e < len(s) && s[e] == '=' {
			e++
		}
		if e-v >= 8 {
			spans = append(spans, span{v, e})
		}
		i = e
	}
	return spans
}

// nameStart is where the name that ends at end starts: letters, digits,
// '_', '.' and '-'.
func nameStart(s string, end int) int {
	start := end
	for start > 0 && isNameByte(s[start-1]) {
		start--
	}
	return start
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
}

// specificSuffixes end the names that carry a credential whatever comes
// before them (x-api-key, client_secret, clientSecret, session_token,
// X-Amz-Signature), compared without separators and case.
var specificSuffixes = []string{"apikey", "accesskey", "secretkey", "privatekey", "token", "password", "passwd",
	"secret", "signature", "credential", "credentials", "authorization"}

func specificName(name string) bool {
	if len(name) > 64 {
		return false
	}
	var buf [64]byte
	n := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || c == '-' || c == '.' {
			continue
		}
		buf[n] = c | 0x20
		n++
	}
	squeezed := string(buf[:n])
	for _, suf := range specificSuffixes {
		if strings.HasSuffix(squeezed, suf) {
			return true
		}
	}
	return false
}

// shortName is a name whose last part (after '_', '.' or '-') is a short
// word for a credential: key, sig, auth, pass, pwd. As the end of a word
// they are too common (monkey, sslkey) to count.
func shortName(name string) bool {
	last := name[strings.LastIndexAny(name, "_.-")+1:]
	for _, w := range []string{"key", "sig", "auth", "pass", "pwd"} {
		if strings.EqualFold(last, w) {
			return true
		}
	}
	return false
}

// IsCredentialName reports whether a parameter, header, field or
// environment variable so named carries a credential: API_KEY,
// access_token, X-Amz-Signature, DB_PASS, key.
func IsCredentialName(name string) bool { return specificName(name) || shortName(name) }

// ShapedValues returns the values in s that Shapes masks (a URL's
// password, a query's key=...), as they are and URL-decoded: the secrets
// a configured URL carries.
func ShapedValues(s string) []string {
	var spans []span
	spans = userinfoSpans(s, spans)
	spans = paramSpans(s, spans)
	spans = memberSpans(s, spans)
	spans = bearerSpans(s, spans)
	var out []string
	for _, sp := range spans {
		v := s[sp.from:sp.to]
		out = append(out, v)
		if _, pass, ok := strings.Cut(v, ":"); ok && sp.to < len(s) && s[sp.to] == '@' {
			out = append(out, pass) // a URL's password alone, beside user:password
		}
		if u, err := url.QueryUnescape(v); err == nil && u != v {
			out = append(out, u)
		}
	}
	return out
}
