package review

import (
	"strconv"
	"strings"

	"github.com/troupe-dev/troupe/internal/secretscan"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// secretScan is what internal/secretscan finds in one output: in its
// content, in each file's content and in each file's path.
type secretScan struct {
	problems problems
	paths    map[string]string // a path with a secret -> the path masked
}

// newSecretScan scans an output with the rules and the configured secrets
// of limits.
func newSecretScan(limits Limits, content string, files []schemas.File) *secretScan {
	s := secretscan.New(limits.Secrets...)
	scan := &secretScan{paths: map[string]string{}}
	scan.add("content", s.Scan("", content))
	for _, f := range files {
		shown := f.Path
		if found := s.ScanPath(f.Path); len(found) > 0 {
			shown = secretscan.Mask(f.Path, found)
			scan.paths[f.Path] = shown
			scan.problems.addf("file %q: its path looks like a secret (%s)", shown, strings.Join(secretscan.Kinds(found), ", "))
		}
		scan.add(shown, s.Scan(f.Path, f.Content))
	}
	return scan
}

// add adds one problem per line with secrets, naming their kinds.
func (scan *secretScan) add(where string, found []secretscan.Finding) {
	for i := 0; i < len(found); {
		j := i
		for j < len(found) && found[j].Line == found[i].Line {
			j++
		}
		scan.problems.addf("%s line %d: looks like a secret (%s)", where, found[i].Line, strings.Join(secretscan.Kinds(found[i:j]), ", "))
		i = j
	}
}

func (scan *secretScan) check() schemas.Check {
	return scan.problems.check(CheckNoSecrets, "no API keys, tokens, passwords or private keys found, in contents or paths")
}

// maskPaths replaces, in every check's Detail, each path that holds a
// secret with the path masked.
func (scan *secretScan) maskPaths(checks []schemas.Check) []schemas.Check {
	if len(scan.paths) == 0 {
		return checks
	}
	var pairs []string
	for p, masked := range scan.paths {
		pairs = append(pairs, strconv.Quote(p), strconv.Quote(masked), p, masked)
	}
	r := strings.NewReplacer(pairs...)
	for i := range checks {
		checks[i].Detail = r.Replace(checks[i].Detail)
	}
	return checks
}

// MaskSecrets returns out with every secret the no_secrets check finds in
// its content, its files' contents and its files' paths replaced by
// "[secret: <kind>]": what a person is shown of an output (reviews.get,
// the dashboard). Compute its checks before masking: a masked output
// passes no_secrets.
func MaskSecrets(out store.Output, limits Limits) store.Output {
	out.Content, out.Files = maskOutput(secretscan.New(limits.Secrets...), out.Content, out.Files)
	return out
}

func maskOutput(s *secretscan.Scanner, content string, files []schemas.File) (string, []schemas.File) {
	masked := make([]schemas.File, len(files))
	for i, f := range files {
		f.Content = s.Mask(f.Path, f.Content)
		f.Path = s.MaskPath(f.Path)
		masked[i] = f
	}
	return s.Mask("", content), masked
}

// MaskPaths returns files with every secret in their paths masked, their
// contents as they are: for lists that show paths only.
func MaskPaths(files []schemas.File, limits Limits) []schemas.File {
	s := secretscan.New(limits.Secrets...)
	masked := make([]schemas.File, len(files))
	for i, f := range files {
		f.Path = s.MaskPath(f.Path)
		masked[i] = f
	}
	return masked
}
