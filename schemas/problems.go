package schemas

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// RootField is the Field of a problem with the document as a whole.
const RootField = "(root)"

// maxShown is how many problems ValidationError.Error shows.
const maxShown = 3

// Problem is one thing wrong with a document.
type Problem struct {
	// Field is where: "title", "tasks[1].role", or RootField.
	Field string `json:"field"`
	// Message is what is wrong, for a person: "is required".
	Message string `json:"message"`
}

// String returns "field: message".
func (p Problem) String() string {
	return p.Field + ": " + p.Message
}

// ValidationError is a document its schema rejects. It matches ErrInvalid.
type ValidationError struct {
	// Schema is the name of the schema.
	Schema string
	// Problems lists every problem found, in document order.
	Problems []Problem
}

// Error returns the first problems, one per field, joined with "; ", such as
// `title: is required; tasks[1].role: "wizard" is not one of pm, ...`.
func (e *ValidationError) Error() string {
	var shown []string
	seen := map[string]bool{}
	more := 0
	for _, p := range e.Problems {
		if seen[p.Field] {
			continue
		}
		seen[p.Field] = true
		if len(shown) == maxShown {
			more++
			continue
		}
		shown = append(shown, p.String())
	}
	switch {
	case len(shown) == 0:
		return ErrInvalid.Error()
	case more == 1:
		shown = append(shown, "and 1 more problem")
	case more > 1:
		shown = append(shown, fmt.Sprintf("and %d more problems", more))
	}
	return strings.Join(shown, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalid
}

// SyntaxError is a payload that is not one JSON document. It matches
// ErrInvalid.
type SyntaxError struct {
	// Offset is the byte offset after which the error was found.
	Offset int64
	// Msg is what encoding/json found.
	Msg string
}

// Error returns "invalid JSON at offset N: what".
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.Offset, e.Msg)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *SyntaxError) Is(target error) bool {
	return target == ErrInvalid
}

// problem is a Problem before its field is formatted.
type problem struct {
	loc []string // JSON pointer tokens
	msg string
}

var printer = message.NewPrinter(language.English)

// problems turns the validator's tree of errors into one problem per leaf.
func (s *schemaSet) problems(verr *jsonschema.ValidationError, doc any) []Problem {
	var probs []problem
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			probs = append(probs, s.describe(e)...)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(verr)
	return sortProblems(doc, probs)
}

// sortProblems orders problems as their fields appear in the document's
// keys (alphabetically) and arrays (by index), then formats their fields.
func sortProblems(doc any, probs []problem) []Problem {
	slices.SortStableFunc(probs, func(a, b problem) int {
		for i := 0; i < len(a.loc) && i < len(b.loc); i++ {
			if c := compareToken(a.loc[i], b.loc[i]); c != 0 {
				return c
			}
		}
		return cmp.Compare(len(a.loc), len(b.loc))
	})
	out := make([]Problem, 0, len(probs))
	for _, p := range probs {
		out = append(out, Problem{Field: fieldPath(doc, p.loc), Message: p.msg})
	}
	return slices.Compact(out)
}

func compareToken(a, b string) int {
	ai, aerr := strconv.Atoi(a)
	bi, berr := strconv.Atoi(b)
	if aerr == nil && berr == nil {
		return cmp.Compare(ai, bi)
	}
	return strings.Compare(a, b)
}

// fieldPath formats JSON pointer tokens as tasks[1].role, looking at doc to
// tell array indexes from keys.
func fieldPath(doc any, loc []string) string {
	if len(loc) == 0 {
		return RootField
	}
	var b strings.Builder
	cur := doc
	for _, tok := range loc {
		if arr, ok := cur.([]any); ok {
			b.WriteString("[" + tok + "]")
			cur = nil
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(arr) {
				cur = arr[i]
			}
			continue
		}
		if isIdent(tok) {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(tok)
		} else {
			b.WriteString("[" + strconv.Quote(tok) + "]")
		}
		obj, _ := cur.(map[string]any)
		cur = obj[tok]
	}
	return b.String()
}

func isIdent(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// describe words one leaf error. Most leaves are one problem at their
// instance location; required and unknown fields are one problem per field.
func (s *schemaSet) describe(e *jsonschema.ValidationError) []problem {
	at := func(msg string, args ...any) []problem {
		return []problem{{loc: e.InstanceLocation, msg: fmt.Sprintf(msg, args...)}}
	}
	child := func(name string) []string {
		return append(slices.Clip(e.InstanceLocation), name)
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		msg := "is required" + s.condition(e.SchemaURL)
		var out []problem
		for _, m := range k.Missing {
			out = append(out, problem{loc: child(m), msg: msg})
		}
		return out
	case *kind.DependentRequired:
		var out []problem
		for _, m := range k.Missing {
			out = append(out, problem{loc: child(m), msg: fmt.Sprintf("is required when %s is present", k.Prop)})
		}
		return out
	case *kind.AdditionalProperties:
		known := s.properties(e.SchemaURL)
		var out []problem
		for _, p := range k.Properties {
			msg := "is not a known field"
			if alt := closest(p, known); alt != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", alt)
			}
			out = append(out, problem{loc: child(p), msg: msg})
		}
		return out
	case *kind.Type:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = article(w)
		}
		return at("must be %s, not %s", strings.Join(want, " or "), article(k.Got))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = plain(w)
		}
		return at("%s is not one of %s", display(k.Got), strings.Join(want, ", "))
	case *kind.Const:
		return at("must be %s", display(k.Want))
	case *kind.Format:
		switch k.Want {
		case "int64", "uint64":
			return at("must be a whole number, without fraction or exponent, that fits in %s", k.Want)
		case "date-time":
			return at("%s is not a date-time such as 2006-01-02T15:04:05Z", display(k.Got))
		}
		return at("%s is not a valid %s", display(k.Got), k.Want)
	case *kind.MinLength:
		if k.Want == 1 {
			return at("must not be empty")
		}
		return at("is shorter than %d characters", k.Want)
	case *kind.MaxLength:
		return at("is longer than %d characters", k.Want)
	case *kind.Pattern:
		if k.Want == `\S` && k.Got == "" {
			return nil // every blank check sits beside minLength 1, which words this better
		}
		if hint, ok := patternHints[k.Want]; ok {
			return at(hint, display(k.Got))
		}
		return at("%s does not match %s", display(k.Got), k.Want)
	case *kind.MinItems:
		if k.Want == 1 {
			return at("must not be empty")
		}
		return at("has fewer than %d items", k.Want)
	case *kind.MaxItems:
		return at("has more than %d items", k.Want)
	case *kind.UniqueItems:
		return at("items %d and %d are the same", k.Duplicates[0], k.Duplicates[1])
	case *kind.MinProperties:
		return at("has fewer than %d fields", k.Want)
	case *kind.MaxProperties:
		return at("has more than %d fields", k.Want)
	case *kind.Minimum:
		return at("must be at least %s", k.Want.RatString())
	case *kind.Maximum:
		return at("must be at most %s", k.Want.RatString())
	case *kind.ExclusiveMinimum:
		return at("must be more than %s", k.Want.RatString())
	case *kind.ExclusiveMaximum:
		return at("must be less than %s", k.Want.RatString())
	case *kind.MultipleOf:
		return at("must be a multiple of %s", k.Want.RatString())
	case *kind.ContentEncoding:
		return at("is not valid %s", k.Want)
	case *kind.FalseSchema, *kind.Not:
		return at("is not allowed")
	}
	return at("%s", e.ErrorKind.LocalizedString(printer))
}

// patternHints word the patterns of the schemas; each takes the quoted value.
var patternHints = map[string]string{
	`^[a-z0-9][a-z0-9_-]{0,62}$`: "%s is not a valid key (lowercase letters, digits, - and _, starting with a letter or digit, at most 63 characters)",
	`\S`:                         "must not be blank%.0s",
	`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$`: "%s is not a media type such as image/png",
	`^(rules|model:.+|human:.+)$`:                                         "%s is not rules, model:<id> or human:<name>",
}

// condition words the "if" of the schema at url when url is a "then":
// " when decision is reject".
func (s *schemaSet) condition(url string) string {
	base, ptr, _ := strings.Cut(url, "#")
	parent, ok := strings.CutSuffix(ptr, "/then")
	if !ok {
		return ""
	}
	ifs, _ := lookup(s.docs[base], parent+"/if").(map[string]any)
	props, _ := ifs["properties"].(map[string]any)
	var conds []string
	for name, p := range props {
		p, _ := p.(map[string]any)
		if c, ok := p["const"]; ok {
			conds = append(conds, name+" is "+plain(c))
		}
	}
	if len(conds) == 0 {
		return ""
	}
	slices.Sort(conds)
	return " when " + strings.Join(conds, " and ")
}

// properties returns the property names of the schema at url.
func (s *schemaSet) properties(url string) []string {
	base, ptr, _ := strings.Cut(url, "#")
	sch, _ := lookup(s.docs[base], ptr).(map[string]any)
	props, _ := sch["properties"].(map[string]any)
	names := make([]string, 0, len(props))
	for name := range props {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// lookup resolves a JSON pointer in doc.
func lookup(doc any, ptr string) any {
	if ptr == "" {
		return doc
	}
	cur := doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			cur = c[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// closest returns the name in known nearest to name, if it is a likely typo.
func closest(name string, known []string) string {
	best, bestDist := "", 3
	if utf8.RuneCountInString(name) <= 3 {
		bestDist = 2
	}
	for _, k := range known {
		if d := distance(strings.ToLower(name), k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance, with a swap of neighbours as one edit.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return 64
	}
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			c := 1
			if ra[i-1] == rb[j-1] {
				c = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+c)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// article puts "a" or "an" before a JSON type name.
func article(t string) string {
	switch t {
	case "null":
		return "null"
	case "array", "object", "integer":
		return "an " + t
	}
	return "a " + t
}

// display quotes a value as JSON, shortened.
func display(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := string(b)
	if utf8.RuneCountInString(s) > 40 {
		s = string([]rune(s)[:37]) + "..."
	}
	return s
}

// plain writes a string as is and anything else as JSON.
func plain(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return display(v)
}
