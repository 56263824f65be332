// Package review checks staged outputs, decides on them and keeps MEMORY.
//
// This file holds the rule checks: pure functions that every review policy
// runs first. An output that fails one of them is never promoted.
package review

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Names of the rule checks, in the order CheckRules returns them.
const (
	CheckNotEmpty         = "not_empty"
	CheckSizeLimits       = "size_limits"
	CheckSafePaths        = "safe_paths"
	CheckRequiredSections = "required_sections"
	CheckNoSecrets        = "no_secrets"
	// CheckMemoryRules is recorded with a model's rejection whose lessons
	// or skill were dropped: what, and why.
	CheckMemoryRules = "memory_rules"
)

// Default limits, used for every Limits field that is zero or negative.
const (
	DefaultMaxOutputBytes = 1 << 20   // 1 MiB
	DefaultMaxFileBytes   = 512 << 10 // 512 KiB
	DefaultMaxFiles       = 50
)

// maxPathLen bounds a staged file's path, in bytes.
const maxPathLen = 200

// maxProblems bounds how many problems one check's Detail lists, so the
// feedback that goes back into the next prompt stays short.
const maxProblems = 5

// Limits bounds the size of one staged output.
type Limits struct {
	// MaxOutputBytes bounds the content plus every file's content.
	// Defaults to 1 MiB.
	MaxOutputBytes int
	// MaxFileBytes bounds one file's content. Defaults to 512 KiB.
	MaxFileBytes int
	// MaxFiles bounds the number of files. Defaults to 50.
	MaxFiles int
	// Secrets are the configured secrets (model API keys, NATS and
	// database passwords): no_secrets always looks for them, literally,
	// besides its rules, and masking hides them.
	Secrets []string
}

// WithDefaults returns l with every unset (zero or negative) field set to its
// default.
func (l Limits) WithDefaults() Limits {
	if l.MaxOutputBytes <= 0 {
		l.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// requiredSections is each role's main markdown file and its required
// headings. The role prompts (worker/roles) and the offline model produce
// exactly these.
var requiredSections = map[string]struct {
	file     string
	headings []string
}{
	"pm":        {"PRD.md", []string{"## Goals", "## Users", "## Requirements"}},
	"architect": {"ARCHITECTURE.md", []string{"## Components", "## Data flow", "## Decisions"}},
	"developer": {"NOTES.md", []string{"## Implementation"}},
	"tester":    {"TEST_PLAN.md", []string{"## Scope", "## Cases"}},
	"writer":    {"README.md", []string{"## Overview", "## Usage"}},
	"devops":    {"RUNBOOK.md", []string{"## Deploy", "## Rollback"}},
}

// RequiredSections returns the main markdown file of role and the `## `
// headings it must contain, each written as it appears in the file (e.g.
// "## Goals"). A developer output must in addition hold at least one code
// file. An unknown role has none: it returns "" and nil.
func RequiredSections(role string) (file string, headings []string) {
	r, ok := requiredSections[role]
	if !ok {
		return "", nil
	}
	return r.file, append([]string(nil), r.headings...)
}

// Checks are an output's checks: those made at staging (its answer's
// format) first, then the rule checks.
func Checks(out store.Output, limits Limits) []schemas.Check {
	return append(slices.Clone(out.Checks), CheckRules(out.Role, out.Content, out.Files, limits)...)
}

// CheckRules runs every rule check on one staged output of role and returns
// one Check per rule, in the order not_empty, size_limits, safe_paths,
// no_nul, required_sections, no_secrets. A failed check's Detail says what
// failed; it never quotes a secret: a path with one is shown masked.
func CheckRules(role string, content string, files []schemas.File, limits Limits) []schemas.Check {
	limits = limits.WithDefaults()
	scan := newSecretScan(limits, content, files)
	return scan.maskPaths([]schemas.Check{
		checkNotEmpty(files),
		checkSizeLimits(content, files, limits),
		checkSafePaths(files),
		checkNoNUL(content, files),
		checkRequiredSections(role, files),
		scan.check(),
	})
}

// Passed reports whether every check passed.
func Passed(checks []schemas.Check) bool {
	for _, c := range checks {
		if !c.Passed {
			return false
		}
	}
	return true
}

// Feedback renders the failed checks as feedback for the next revision, one
// line each ("- name: detail"). It is empty when every check passed.
func Feedback(checks []schemas.Check) string {
	var b strings.Builder
	for _, c := range checks {
		if c.Passed {
			continue
		}
		detail := oneLine(c.Detail)
		if detail == "" {
			detail = "failed"
		}
		fmt.Fprintf(&b, "- %s: %s\n", c.Name, detail)
	}
	return bus.Clip(b.String(), maxFeedback)
}

// maxFeedback bounds rule feedback: it travels in events and task rows.
const maxFeedback = 4000

// problems collects the failures of one check and renders them bounded.
type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) check(name, okDetail string) schemas.Check {
	if len(p) == 0 {
		return schemas.Check{Name: name, Passed: true, Detail: okDetail}
	}
	shown := p
	if len(shown) > maxProblems {
		shown = shown[:maxProblems]
	}
	detail := strings.Join(shown, "; ")
	if len(p) > maxProblems {
		detail += fmt.Sprintf("; and %d more", len(p)-maxProblems)
	}
	return schemas.Check{Name: name, Passed: false, Detail: detail}
}

func checkNotEmpty(files []schemas.File) schemas.Check {
	var p problems
	if len(files) == 0 {
		p.addf("output has no files")
	}
	for _, f := range files {
		if strings.TrimSpace(f.Content) == "" {
			p.addf("file %q: empty", f.Path)
		}
	}
	return p.check(CheckNotEmpty, fmt.Sprintf("%d non-empty file(s)", len(files)))
}

func checkSizeLimits(content string, files []schemas.File, l Limits) schemas.Check {
	var p problems
	if len(files) > l.MaxFiles {
		p.addf("%d files, more than the limit of %d", len(files), l.MaxFiles)
	}
	total := len(content)
	for _, f := range files {
		total += len(f.Content)
		if len(f.Content) > l.MaxFileBytes {
			p.addf("file %q: %d bytes, more than the limit of %d", f.Path, len(f.Content), l.MaxFileBytes)
		}
	}
	if total > l.MaxOutputBytes {
		p.addf("output is %d bytes, more than the limit of %d", total, l.MaxOutputBytes)
	}
	return p.check(CheckSizeLimits, fmt.Sprintf("%d file(s), %d bytes in all", len(files), total))
}

func checkSafePaths(files []schemas.File) schemas.Check {
	var p problems
	seen := make(map[string]string, len(files))
	for _, f := range files {
		if reason := unsafePath(f.Path); reason != "" {
			p.addf("file %q: %s", f.Path, reason)
			continue
		}
		// Paths equal but for case collide on case-insensitive file systems.
		key := strings.ToLower(f.Path)
		if first, dup := seen[key]; dup {
			if first == f.Path {
				p.addf("file %q: duplicate path", f.Path)
			} else {
				p.addf("file %q: duplicates %q (paths must differ in more than case)", f.Path, first)
			}
			continue
		}
		seen[key] = f.Path
	}
	return p.check(CheckSafePaths, fmt.Sprintf("all %d path(s) are relative and inside the staging area", len(files)))
}

var driveLetter = regexp.MustCompile(`^[A-Za-z]:`)

// unsafePath returns why p may not name a staged file, or "" when it may.
// The order matters only for which reason a path with several problems gets.
func unsafePath(p string) string {
	switch {
	case p == "":
		return "empty path"
	case len(p) > maxPathLen:
		return fmt.Sprintf("path is %d bytes, longer than %d", len(p), maxPathLen)
	case !utf8.ValidString(p):
		return "path is not valid UTF-8"
	case strings.ContainsFunc(p, unicode.IsControl):
		return "path contains a control character"
	case strings.Contains(p, `\`):
		return "path contains a backslash"
	case strings.HasPrefix(p, "/"):
		return "path is absolute"
	case driveLetter.MatchString(p):
		return "path starts with a drive letter"
	}
	elems := strings.Split(p, "/")
	for _, e := range elems {
		if e == ".." {
			return "path escapes the staging area"
		}
	}
	if path.Clean(p) != p || p == "." {
		return fmt.Sprintf("path is not clean (want %q)", path.Clean(p))
	}
	for i, e := range elems {
		if !strings.HasPrefix(e, ".") {
			continue
		}
		last := i == len(elems)-1
		switch {
		case e == ".git":
			return "path names a .git directory"
		case !last && e != ".github":
			return fmt.Sprintf("path is inside hidden directory %q", e)
		}
	}
	return ""
}

func checkRequiredSections(role string, files []schemas.File) schemas.Check {
	var p problems
	name, headings := RequiredSections(role)
	if name == "" {
		p.addf("unknown role %q", role)
		return p.check(CheckRequiredSections, "")
	}
	f, ok := findFile(files, name)
	if !ok {
		p.addf("missing file %q", name)
	} else {
		have := markdownHeadings(f.Content)
		for _, h := range headings {
			if !have[strings.ToLower(h)] {
				p.addf("%s: missing section %q", f.Path, h)
			}
		}
	}
	if role == "developer" && !hasCodeFile(files) {
		p.addf("no code file: a developer output needs at least one source file besides its notes")
	}
	return p.check(CheckRequiredSections, fmt.Sprintf("%s has %s", name, strings.Join(headings, ", ")))
}

// findFile returns the file at path name or, failing that, the first file
// at a safe path whose base name is name (a model may put PRD.md under
// docs/). A file at an unsafe path never counts: safe_paths reports it.
func findFile(files []schemas.File, name string) (schemas.File, bool) {
	for _, f := range files {
		if f.Path == name {
			return f, true
		}
	}
	for _, f := range files {
		if path.Base(f.Path) == name && unsafePath(f.Path) == "" {
			return f, true
		}
	}
	return schemas.File{}, false
}

// markdownHeadings returns the level-2 headings of a markdown text, lower
// case, without trailing spaces, colons or closing #s. Lines inside fenced
// code blocks are not headings.
func markdownHeadings(text string) map[string]bool {
	have := make(map[string]bool)
	fence := ""
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\r\n")
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			fence = "```"
			continue
		}
		if strings.HasPrefix(trimmed, "~~~") {
			fence = "~~~"
			continue
		}
		if !strings.HasPrefix(line, "## ") {
			continue
		}
		h := strings.TrimRight(line, " \t#:")
		have[strings.ToLower(h)] = true
	}
	return have
}

// docExtensions are the extensions of files that are not code.
var docExtensions = map[string]bool{
	".md": true, ".markdown": true, ".txt": true, ".rst": true, ".adoc": true,
}

func hasCodeFile(files []schemas.File) bool {
	for _, f := range files {
		if strings.TrimSpace(f.Content) == "" {
			continue
		}
		if !docExtensions[strings.ToLower(path.Ext(f.Path))] {
			return true
		}
	}
	return false
}

// oneLine folds a text onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
