// Package secretscan finds secrets in text and in file paths, and masks
// them: API keys, tokens, passwords, private keys and the configured
// secrets of the process itself.
//
// Its rules are gitleaks' default rules, read as data (gitleaks.toml, see
// rules.go), with Troupe's own on top (troupe.toml) for forms those let
// through. A rule's keywords are a fast prefilter: its regex runs only on
// a text that holds one of them. A rule's entropy bound and allowlists are
// honoured, except where gitleaks trusts what a writer chooses (see
// allowed). Configured secrets are found literally, also in lower case and
// in base64 at any alignment.
package secretscan

import (
	"encoding/base64"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	ahocorasick "github.com/BobuSumisu/aho-corasick"
	"golang.org/x/text/cases"
)

// KindConfigured is the kind of a finding of one of the configured secrets.
const KindConfigured = "configured-secret"

// minLiteral is the shortest configured secret searched for: a shorter one
// would match ordinary text.
const minLiteral = 8

// Finding is one secret found in a text.
type Finding struct {
	// Kind is the rule that found it (a gitleaks or Troupe rule id, or
	// KindConfigured).
	Kind string
	// Line is the 1-based line the secret starts on; 0 when a path-only
	// rule matched a file's name rather than text.
	Line int
	// Start and End are the secret's byte offsets in the text; equal when
	// there is nothing to mask (a path-only rule).
	Start, End int
}

// compiled is the rule set every Scanner shares, and its keyword index.
type compiled struct {
	*ruleSet
	trie   *ahocorasick.Trie
	byWord [][]int // keyword number -> rules
	always []int   // rules without keywords
	words  int
}

var defaultRules = sync.OnceValue(func() *compiled {
	rs, err := load(gitleaksRules, troupeRules)
	if err != nil {
		panic("secretscan: the embedded rules do not load: " + err.Error())
	}
	c := &compiled{ruleSet: rs}
	index := map[string]int{}
	var words []string
	for i, r := range rs.rules {
		if len(r.keywords) == 0 {
			c.always = append(c.always, i)
			continue
		}
		for _, k := range r.keywords {
			n, ok := index[k]
			if !ok {
				n = len(words)
				index[k] = n
				words = append(words, k)
				c.byWord = append(c.byWord, nil)
			}
			c.byWord[n] = append(c.byWord[n], i)
		}
	}
	c.trie = ahocorasick.NewTrieBuilder().AddStrings(words).Build()
	c.words = len(words)
	return c
})

// Scanner finds secrets. Its zero value is not usable: use New. A Scanner
// is safe for concurrent use.
type Scanner struct {
	c        *compiled
	literals []string // the configured secrets' forms, longest first
}

// New returns a scanner of the rules and of the given configured secrets
// (API keys, passwords), which it finds literally whatever the rules say.
// Secrets shorter than 8 bytes are not searched for: they would match
// ordinary text.
func New(secrets ...string) *Scanner {
	s := &Scanner{c: defaultRules()}
	seen := map[string]bool{}
	for _, sec := range secrets {
		for _, f := range literalForms(sec) {
			if !seen[f] {
				seen[f] = true
				s.literals = append(s.literals, f)
			}
		}
	}
	slices.SortFunc(s.literals, func(a, b string) int { return len(b) - len(a) })
	return s
}

// literalForms are the ways a configured secret is written: as is, in
// lower and upper case, and in base64 (standard and URL alphabets) at each
// of the three alignments it can have inside a longer encoded text (the
// characters that depend on the secret's bytes alone).
func literalForms(secret string) []string {
	if len(secret) < minLiteral {
		return nil
	}
	forms := []string{secret, strings.ToLower(secret), strings.ToUpper(secret)}
	for shift := range 3 {
		padded := append(make([]byte, shift), secret...)
		first := (8*shift + 5) / 6
		last := 8 * len(padded) / 6
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			forms = append(forms, enc.EncodeToString(padded)[first:last])
		}
	}
	return forms
}

// Scan returns the secrets in text, the content of the file at path ("" for
// text that is no file), in the order they appear.
func (s *Scanner) Scan(path, text string) []Finding {
	if text == "" {
		return nil
	}
	lines := newLines(text)
	var found []Finding
	if s.c.generatedFile(path) {
		return tidy(s.findLiterals(found, text, lines))
	}
	run, hits := s.rulesFor(text)
	for _, i := range run {
		r := s.c.rules[i]
		switch {
		case hits[i] == nil: // no keyword, or one found only folded
			found = r.find(found, s.c.global, path, text, 0, lines)
		case r.generic:
			found = r.findNearAssignments(found, s.c.global, path, text, lines, hits[i])
		case r.oneLine:
			found = r.findOnLines(found, s.c.global, path, text, lines, hits[i])
		default:
			found = r.find(found, s.c.global, path, text, 0, lines)
		}
	}
	// A YAML block scalar's value, with its key moved onto its line.
	joined, values := joinBlockScalars(text)
	for _, v := range values {
		from, to := strings.LastIndexByte(joined[:v], '\n')+1, lineEnd(joined, v)
		for _, i := range run {
			found = s.c.rules[i].find(found, s.c.global, path, joined[from:to], from, lines)
		}
	}
	found = s.findLiterals(found, text, lines)
	return tidy(found)
}

// ScanPath returns the secrets in a file's path: in its names, with or
// without their extensions, and the path-only rules (a .p12 file). The
// offsets are in path.
func (s *Scanner) ScanPath(path string) []Finding {
	if path == "" {
		return nil
	}
	// The names one to a line, then also without what follows a dot;
	// both keep every offset. A name is no file's content: no rule's
	// path condition or allowlist applies to it.
	names := strings.ReplaceAll(path, "/", "\n")
	stems := strings.ReplaceAll(names, ".", "\n")
	var found []Finding
	for _, text := range []string{names, stems} {
		for _, f := range s.Scan("", text) {
			f.Line = 1
			found = append(found, f)
		}
	}
	for _, r := range s.c.rules {
		if r.re == nil && r.path.MatchString(path) {
			found = append(found, Finding{Kind: r.id})
		}
	}
	return tidy(found)
}

// generatedFile reports whether a global allowlist names path: a lock or
// checksum file, vendored code, an image (gitleaks' list). Their content is
// written by tools, and hashes in it read as keys; the configured secrets
// are still searched for there.
func (c *compiled) generatedFile(path string) bool {
	if path == "" {
		return false
	}
	for _, a := range c.global {
		if !a.and && anyMatch(a.paths, path) {
			return true
		}
	}
	return false
}

// rulesFor is the rules to run on text: those without keywords and those
// one of whose keywords text holds, in rule order; and for each rule the
// offsets in text where its keywords end. A rule without offsets (it has
// no keywords, or one is written with a letter only Unicode folds to
// ASCII, ſ for s) runs on the whole text.
func (s *Scanner) rulesFor(text string) (run []int, hits map[int][]int) {
	hit := make([]bool, s.c.words)
	hits = map[int][]int{}
	s.c.trie.Walk(asciiLower(text), func(end, _, pattern int64) bool {
		hit[pattern] = true
		for _, i := range s.c.byWord[pattern] {
			hits[i] = append(hits[i], int(end)+1)
		}
		return true
	})
	if !isASCII(text) {
		counts := map[int]int{}
		s.c.trie.Walk([]byte(cases.Fold().String(text)), func(_, _, pattern int64) bool {
			hit[pattern] = true
			for _, i := range s.c.byWord[pattern] {
				counts[i]++
			}
			return true
		})
		for i, n := range counts {
			if n > len(hits[i]) {
				hits[i] = nil // found only folded: the whole text
			}
		}
	}
	run = slices.Clone(s.c.always)
	for w, ok := range hit {
		if ok {
			run = append(run, s.c.byWord[w]...)
		}
	}
	slices.Sort(run)
	return slices.Compact(run), hits
}

// asciiLower is text with its ASCII letters in lower case: every offset
// stays. The rules' (?i) folds more (ſ is an s, the Kelvin sign a k),
// which rulesFor looks for apart.
func asciiLower(text string) []byte {
	b := []byte(text)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// findOnLines runs a rule whose matches never span lines only on the
// lines where its keywords end (at the offsets of ends), each with its
// newline.
func (r rule) findOnLines(found []Finding, global []allowlist, path, text string, lines lineIndex, ends []int) []Finding {
	from, to := -1, -1
	for _, end := range ends {
		start := strings.LastIndexByte(text[:end-1], '\n') + 1
		stop := min(lineEnd(text, end-1)+1, len(text)) // with its newline
		if start < to {
			to = max(to, stop)
			continue
		}
		if from >= 0 {
			found = r.find(found, global, path, text[from:to], from, lines)
		}
		from, to = start, stop
	}
	if from >= 0 {
		found = r.find(found, global, path, text[from:to], from, lines)
	}
	return found
}

// findNearAssignments runs a generic rule (a name, an assignment, a value)
// only on the lines where one of its keywords, ending at an offset of ends,
// is followed by an assignment, and the two lines after them (the value may
// follow on the next line). Its regex, run on the whole text, is most of
// a scan's cost; most keywords (a "key" in prose) assign nothing.
func (r rule) findNearAssignments(found []Finding, global []allowlist, path, text string, lines lineIndex, ends []int) []Finding {
	from, to := -1, -1
	flush := func() {
		if from >= 0 {
			found = r.find(found, global, path, text[from:to], from, lines)
		}
	}
	for _, end := range ends {
		op := assignmentAt(text, end)
		if op < 0 || (r.id == "generic-api-key" && !genericValueAt(text, op)) {
			continue
		}
		// The hit's line, and the next one when the value is not on it.
		start := strings.LastIndexByte(text[:end], '\n') + 1
		stop := lineEnd(text, op+1)
		if strings.TrimSpace(strings.Trim(text[op+1:stop], "`'\"=")) == "" {
			stop = lineEnd(text, stop+1)
		}
		stop = min(stop+1, len(text))
		if start <= to {
			to = max(to, stop)
			continue
		}
		flush()
		from, to = start, stop
	}
	flush()
	return found
}

// assignmentAt returns the offset of the assignment that follows the
// rest of a name at i ([ \t\w.-]{0,20}) and up to three spaces or
// quotes: =, :, >, |, ? or a comma, what every generic rule's regex needs
// after its keyword; -1 when there is none.
func assignmentAt(text string, i int) int {
	for n := 0; n < 20 && i < len(text) && isNameByte(text[i]); n++ {
		i++
	}
	for n := 0; n < 3 && i < len(text) && strings.IndexByte(" \t\r\n\v\f'\"", text[i]) >= 0; n++ {
		i++
	}
	if i < len(text) && strings.IndexByte("=:>|?,", text[i]) >= 0 {
		return i
	}
	return -1
}

// genericRegex is the regex of gitleaks' generic-api-key rule that
// genericValueAt is written for; a test checks gitleaks.toml still has it.
const genericRegex = `(?i)[\w.-]{0,50}?(?:access|auth|(?-i:[Aa]pi|API)|credential|creds|key|passw(?:or)?d|secret|token)(?:[ \t\w.-]{0,20})[\s'"]{0,3}(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)[\x60'"\s=]{0,5}([\w.=-]{10,150}|[a-z0-9][a-z0-9+/]{11,}={0,3})(?:[\x60'"\s;]|\\[nr]|$)`

// genericValueAt reports whether, after the assignment at op, the rest of
// genericRegex can match: up to four more operator characters, up to five
// quotes, spaces or =, then a value of 10 to 150 [\w.=-] or a base64 run,
// then its end. It is exact, for the value's classes hold none of the
// characters that may end it; the regex still decides.
func genericValueAt(text string, op int) bool {
	last := min(len(text), op+10)
	for p := op + 1; p <= last; p++ {
		if valueRunEnds(text, p, isValueByte, 10, 150, 0) || (p < len(text) && isAlnum(text[p]) && valueRunEnds(text, p, isBase64Byte, 12, len(text), 3)) {
			return true
		}
		if p < len(text) && strings.IndexByte("=:>|`'\" \t\r\n\v\f", text[p]) < 0 {
			return false
		}
	}
	return false
}

// valueRunEnds reports whether the run of in-class bytes at p is from
// lo to hi long and, after up to pad =, is followed by the end of the
// text, a quote, a space, a ; or an escaped \n or \r.
func valueRunEnds(text string, p int, in func(byte) bool, lo, hi, pad int) bool {
	i := p
	for i < len(text) && in(text[i]) {
		i++
	}
	if i-p < lo || i-p > hi {
		return false
	}
	for n := 0; n < pad && i < len(text) && text[i] == '='; n++ {
		i++
	}
	switch {
	case i == len(text):
		return true
	case strings.IndexByte("`'\" \t\r\n\v\f;", text[i]) >= 0:
		return true
	case text[i] == '\\' && i+1 < len(text) && strings.IndexByte("nrNR", text[i+1]) >= 0:
		return true
	}
	return false
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isValueByte(c byte) bool { return isAlnum(c) || c == '_' || c == '.' || c == '=' || c == '-' }

func isBase64Byte(c byte) bool { return isAlnum(c) || c == '+' || c == '/' }

// lineEnd is the offset of the newline that ends the line at i, or the
// text's length.
func lineEnd(text string, i int) int {
	if i >= len(text) {
		return len(text)
	}
	if j := strings.IndexByte(text[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(text)
}

func isNameByte(c byte) bool {
	return c == ' ' || c == '\t' || c == '.' || c == '-' || c == '_' ||
		'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// find appends r's findings in text, which starts at offset base of the
// content of path.
func (r rule) find(found []Finding, global []allowlist, path, text string, base int, lines lineIndex) []Finding {
	if r.re == nil || (r.path != nil && !r.path.MatchString(path)) {
		return found
	}
	for _, m := range r.re.FindAllStringSubmatchIndex(text, -1) {
		start, end := m[0], m[1]
		for end > start && text[end-1] == '\n' {
			end--
		}
		// The secret is the rule's group, else its first non-empty one,
		// else the whole match.
		if r.secretGroup > 0 {
			start, end = m[2*r.secretGroup], m[2*r.secretGroup+1]
		} else {
			for g := 1; 2*g < len(m); g++ {
				if m[2*g] >= 0 && m[2*g+1] > m[2*g] {
					start, end = m[2*g], m[2*g+1]
					break
				}
			}
		}
		if start < 0 || end <= start {
			continue
		}
		secret := text[start:end]
		if r.entropy > 0 && entropy(secret) <= r.entropy {
			continue
		}
		match := text[m[0]:m[1]]
		line := lines.around(text, m[0], m[1])
		if allowed(global, r, path, secret, match, line) || allowed(r.allow, r, path, secret, match, line) {
			continue
		}
		found = append(found, Finding{Kind: r.id, Line: lines.line(base + start), Start: base + start, End: base + end})
	}
	return found
}

// allowed reports whether one of the allowlists lets a finding of r pass.
// A path on its own is dealt with by generatedFile. A "stop word" on its
// own is not honoured, for a writer chooses it: a stop word allows a value only when what is left of
// it without its stop words would itself pass the rule's entropy bound
// (at least 3), so "example-key-…" or "your…" with a random tail is still
// a secret.
func allowed(lists []allowlist, r rule, path, secret, match, line string) bool {
	for _, a := range lists {
		target := secret
		switch a.target {
		case "match":
			target = match
		case "line":
			target = line
		}
		regex := anyMatch(a.regexes, target)
		stop := len(a.stopwords) > 0 && stopwordAllows(a.stopwords, secret, r.entropy)
		if !a.and {
			if regex || stop {
				return true
			}
			continue
		}
		ok := len(a.paths) > 0 || len(a.regexes) > 0 || len(a.stopwords) > 0
		if len(a.paths) > 0 && !anyMatch(a.paths, path) {
			ok = false
		}
		if len(a.regexes) > 0 && !regex {
			ok = false
		}
		if len(a.stopwords) > 0 && !stop {
			ok = false
		}
		if ok {
			return true
		}
	}
	return false
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// stopwordAllows reports whether secret holds a stop word and what is left
// without them is short or of low entropy.
func stopwordAllows(words []string, secret string, bound float64) bool {
	lower := strings.ToLower(secret)
	if len(lower) != len(secret) {
		return false
	}
	cut := make([]bool, len(secret))
	any := false
	for _, w := range words {
		for i := 0; ; {
			j := strings.Index(lower[i:], w)
			if j < 0 {
				break
			}
			any = true
			for k := i + j; k < i+j+len(w); k++ {
				cut[k] = true
			}
			i += j + 1
		}
	}
	if !any {
		return false
	}
	var rest strings.Builder
	for i := range len(secret) {
		if !cut[i] {
			rest.WriteByte(secret[i])
		}
	}
	return rest.Len() < minLiteral || entropy(rest.String()) <= math.Max(bound, 3)
}

// findLiterals appends where the configured secrets' forms appear.
func (s *Scanner) findLiterals(found []Finding, text string, lines lineIndex) []Finding {
	for _, lit := range s.literals {
		for i := 0; ; {
			j := strings.Index(text[i:], lit)
			if j < 0 {
				break
			}
			start := i + j
			found = append(found, Finding{Kind: KindConfigured, Line: lines.line(start), Start: start, End: start + len(lit)})
			i = start + len(lit)
		}
	}
	return found
}

// tidy orders findings by place, drops repeats and a generic rule's
// finding that a specific one overlaps.
func tidy(found []Finding) []Finding {
	if len(found) < 2 {
		return found
	}
	sort.SliceStable(found, func(i, j int) bool {
		a, b := found[i], found[j]
		switch {
		case a.Start != b.Start:
			return a.Start < b.Start
		case a.End != b.End:
			return a.End > b.End
		}
		// The configured secret names itself best.
		return a.Kind == KindConfigured && b.Kind != KindConfigured
	})
	out := found[:0]
	for i, f := range found {
		if slices.Contains(out, f) {
			continue
		}
		if genericRules[f.Kind] && overlapsSpecific(found, i) {
			continue
		}
		out = append(out, f)
	}
	return out
}

func overlapsSpecific(found []Finding, i int) bool {
	f := found[i]
	for j, g := range found {
		if j != i && !genericRules[g.Kind] && g.Start < f.End && f.Start < g.End {
			return true
		}
	}
	return false
}

// Mask returns text with each finding replaced by "[secret: <kind>]".
// Overlapping findings are masked as one.
func Mask(text string, found []Finding) string {
	if len(found) == 0 {
		return text
	}
	spans := slices.Clone(found)
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].Start < spans[j].Start })
	var b strings.Builder
	at := 0
	for _, f := range spans {
		switch {
		case f.End <= f.Start:
		case f.Start < at: // overlaps the span masked before
			at = max(at, f.End)
		default:
			b.WriteString(text[at:f.Start])
			b.WriteString("[secret: " + f.Kind + "]")
			at = f.End
		}
	}
	b.WriteString(text[at:])
	return b.String()
}

// Mask returns text, the content of path, with every secret masked.
func (s *Scanner) Mask(path, text string) string { return Mask(text, s.Scan(path, text)) }

// MaskPath returns path with every secret in it masked.
func (s *Scanner) MaskPath(path string) string { return Mask(path, s.ScanPath(path)) }

// Kinds are the distinct kinds of findings, in order.
func Kinds(found []Finding) []string {
	var kinds []string
	for _, f := range found {
		if !slices.Contains(kinds, f.Kind) {
			kinds = append(kinds, f.Kind)
		}
	}
	return kinds
}

// entropy is the Shannon entropy of s in bits per byte, as gitleaks
// computes it.
func entropy(s string) float64 {
	if s == "" {
		return 0
	}
	counts := map[rune]int{}
	for _, c := range s {
		counts[c]++
	}
	inv := 1 / float64(len(s))
	e := 0.0
	for _, n := range counts {
		f := float64(n) * inv
		e -= f * math.Log2(f)
	}
	return e
}
