package secretscan

import (
	_ "embed"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// gitleaksRules is gitleaks' default configuration, config/gitleaks.toml of
// github.com/zricethezav/gitleaks/v8 v8.30.1, unchanged (MIT: its licence
// is LICENSE.gitleaks beside it). To refresh it, in a temporary directory:
//
//	go mod download -json github.com/zricethezav/gitleaks/v8@latest
//
// copy config/gitleaks.toml (and LICENSE) from the "Dir" it prints over
// these, say the version here, and run this package's tests.
//
//go:embed gitleaks.toml
var gitleaksRules string

// GitleaksVersion is the gitleaks release gitleaks.toml comes from.
const GitleaksVersion = "v8.30.1"

// troupeRules are Troupe's own rules, in the same format, for forms the
// gitleaks rules let through.
//
//go:embed troupe.toml
var troupeRules string

// file is the part of gitleaks' configuration format the scanner reads.
// Keys it does not know (minVersion, tags, …) are ignored.
type file struct {
	Allowlist  *allowlistFile  `toml:"allowlist"`
	Allowlists []allowlistFile `toml:"allowlists"`
	Rules      []struct {
		ID          string          `toml:"id"`
		Description string          `toml:"description"`
		Regex       string          `toml:"regex"`
		Path        string          `toml:"path"`
		SecretGroup int             `toml:"secretGroup"`
		Entropy     float64         `toml:"entropy"`
		Keywords    []string        `toml:"keywords"`
		Allowlists  []allowlistFile `toml:"allowlists"`
		SkipReport  bool            `toml:"skipReport"`
	} `toml:"rules"`
}

type allowlistFile struct {
	Description string   `toml:"description"`
	Condition   string   `toml:"condition"`
	Paths       []string `toml:"paths"`
	RegexTarget string   `toml:"regexTarget"`
	Regexes     []string `toml:"regexes"`
	StopWords   []string `toml:"stopwords"`
	TargetRules []string `toml:"targetRules"`
}

// rule is one compiled rule.
type rule struct {
	id          string
	re          *regexp.Regexp // nil for a rule on paths only
	path        *regexp.Regexp // when set, the rule applies to files whose path matches
	secretGroup int
	entropy     float64
	keywords    []string // lower case; none: the rule always runs
	allow       []allowlist
	generic     bool // gives way to a specific rule's finding at the same place
	oneLine     bool // no match spans lines: it runs on the lines of its keywords
}

// allowlist says when a finding is not a secret after all.
type allowlist struct {
	and       bool
	paths     []*regexp.Regexp
	target    string // "" (the secret), "match" or "line"
	regexes   []*regexp.Regexp
	stopwords []string // lower case
}

// genericRules are the rules that match a value by its name alone; a
// specific rule's finding at the same place is reported instead.
var genericRules = map[string]bool{"generic-api-key": true, "quoted-credential": true}

// ruleSet is every rule and the allowlists that apply to all of them.
type ruleSet struct {
	rules  []rule
	global []allowlist
}

// load parses configuration files in gitleaks' format, in order, into one
// rule set. A rule id may appear only once.
func load(sources ...string) (*ruleSet, error) {
	rs := &ruleSet{}
	seen := map[string]bool{}
	for _, src := range sources {
		var f file
		if _, err := toml.Decode(src, &f); err != nil {
			return nil, err
		}
		targeted := map[string][]allowlist{}
		lists := f.Allowlists
		if f.Allowlist != nil {
			lists = append(lists, *f.Allowlist)
		}
		for _, a := range lists {
			al, err := compileAllowlist(a)
			if err != nil {
				return nil, fmt.Errorf("global allowlist: %w", err)
			}
			if len(a.TargetRules) == 0 {
				rs.global = append(rs.global, al)
			}
			for _, id := range a.TargetRules {
				targeted[id] = append(targeted[id], al)
			}
		}
		for _, fr := range f.Rules {
			if fr.ID == "" || seen[fr.ID] {
				return nil, fmt.Errorf("rule %q: missing or repeated id", fr.ID)
			}
			seen[fr.ID] = true
			if fr.SkipReport {
				continue
			}
			r := rule{id: fr.ID, secretGroup: fr.SecretGroup, entropy: fr.Entropy, generic: genericRules[fr.ID]}
			var err error
			if fr.Regex != "" {
				if r.re, err = regexp.Compile(fr.Regex); err != nil {
					return nil, fmt.Errorf("rule %s: %w", fr.ID, err)
				}
				r.oneLine = !spansLines(fr.Regex)
				if r.secretGroup > r.re.NumSubexp() {
					return nil, fmt.Errorf("rule %s: secretGroup %d, but the regex has %d groups", fr.ID, r.secretGroup, r.re.NumSubexp())
				}
			}
			if fr.Path != "" {
				if r.path, err = regexp.Compile(fr.Path); err != nil {
					return nil, fmt.Errorf("rule %s: path: %w", fr.ID, err)
				}
			}
			if r.re == nil && r.path == nil {
				return nil, fmt.Errorf("rule %s: neither regex nor path", fr.ID)
			}
			for _, k := range fr.Keywords {
				r.keywords = append(r.keywords, strings.ToLower(k))
			}
			for _, a := range fr.Allowlists {
				al, err := compileAllowlist(a)
				if err != nil {
					return nil, fmt.Errorf("rule %s: %w", fr.ID, err)
				}
				r.allow = append(r.allow, al)
			}
			rs.rules = append(rs.rules, r)
		}
		for i := range rs.rules {
			rs.rules[i].allow = append(rs.rules[i].allow, targeted[rs.rules[i].id]...)
		}
	}
	return rs, nil
}

func compileAllowlist(a allowlistFile) (allowlist, error) {
	al := allowlist{target: a.RegexTarget}
	switch strings.ToUpper(a.Condition) {
	case "AND", "&&":
		al.and = true
	case "", "OR", "||":
	default:
		return al, fmt.Errorf("allowlist condition %q: want AND or OR", a.Condition)
	}
	switch al.target {
	case "secret":
		al.target = ""
	case "", "match", "line":
	default:
		return al, fmt.Errorf("allowlist regexTarget %q: want secret, match or line", a.RegexTarget)
	}
	for _, p := range a.Paths {
		re, err := regexp.Compile(p)
		if err != nil {
			return al, err
		}
		al.paths = append(al.paths, re)
	}
	for _, p := range a.Regexes {
		re, err := regexp.Compile(p)
		if err != nil {
			return al, err
		}
		al.regexes = append(al.regexes, re)
	}
	for _, w := range a.StopWords {
		al.stopwords = append(al.stopwords, strings.ToLower(w))
	}
	return al, nil
}

// spansLines reports whether a match of the regex src may hold a newline
// before its last character: a newline only in a trailing one-character
// end (gitleaks' rules end with [\x60'"\s;]) keeps the match on its line.
func spansLines(src string) bool {
	re, err := syntax.Parse(src, syntax.Perl)
	if err != nil {
		return true
	}
	if re.Op == syntax.OpConcat && len(re.Sub) > 1 {
		last := re.Sub[len(re.Sub)-1]
		if width(last) <= 2 {
			return slices.ContainsFunc(re.Sub[:len(re.Sub)-1], matchesNewline)
		}
	}
	return matchesNewline(re)
}

// matchesNewline reports whether re may match a newline.
func matchesNewline(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpAnyChar:
		return true
	case syntax.OpLiteral:
		return slices.Contains(re.Rune, '\n')
	case syntax.OpCharClass:
		for i := 0; i+1 < len(re.Rune); i += 2 {
			if re.Rune[i] <= '\n' && '\n' <= re.Rune[i+1] {
				return true
			}
		}
		return false
	}
	return slices.ContainsFunc(re.Sub, matchesNewline)
}

// width is the most characters re matches, or more than 2 when it cannot
// tell.
func width(re *syntax.Regexp) int {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 0
	case syntax.OpLiteral:
		return len(re.Rune)
	case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return 1
	case syntax.OpCapture:
		return width(re.Sub[0])
	case syntax.OpAlternate:
		w := 0
		for _, sub := range re.Sub {
			w = max(w, width(sub))
		}
		return w
	case syntax.OpConcat:
		w := 0
		for _, sub := range re.Sub {
			w += width(sub)
		}
		return w
	}
	return 3
}
