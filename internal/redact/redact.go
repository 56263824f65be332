// Package redact is the one place where secrets are masked in text that
// leaves the process: errors that become task and job reasons, events and
// dead-letter headers, model call records, log lines, and configuration
// shown by config check or logged when it changes.
//
// A Redactor masks a set of known secrets in every form they have been
// seen to leak in (as they are, lower- and upper-case, URL-escaped,
// JSON- and Go-quoted, base64 in its four alphabets, and base64 inside a
// longer base64 text such as a Basic authorization), and credentials of
// well-known shapes whatever their value: URL user information
// (scheme://user:pass@), query and key=value parameters named like a
// credential (key=, api_key=, access_token=, x-api-key=, password=,
// signature=…), headers (Authorization: Bearer …, X-Api-Key: …) and JSON
// members ("password": "…").
//
// The process keeps one set of secrets (Add), which only grows: a key
// replaced by a configuration change may still be in errors in flight, and
// nothing is ever unmasked. String and Writer mask with it.
package redact

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// Mask replaces what is hidden.
const Mask = "***"

// MinLen is the length under which a secret is not masked wherever it
// appears: a two-letter password would blank every word that contains it.
// The shapes (password=x) still mask shorter ones where they stand.
const MinLen = 4

// Redactor masks a fixed set of secrets and the well-known shapes. The
// zero value and nil mask the shapes only.
type Redactor struct {
	secrets []string // as given, for With
	exact   *matcher // every form of every secret
}

// New returns a Redactor for secrets. Empty and shorter than MinLen ones
// are left out.
func New(secrets ...string) *Redactor {
	var kept []string
	for _, s := range secrets {
		if len(s) >= MinLen && !slices.Contains(kept, s) {
			kept = append(kept, s)
		}
	}
	r := &Redactor{secrets: kept}
	var forms []string
	for _, s := range kept {
		forms = append(forms, Forms(s)...)
	}
	if len(forms) > 0 {
		r.exact = newMatcher(forms)
	}
	return r
}

// With returns a Redactor for r's secrets and more.
func (r *Redactor) With(secrets ...string) *Redactor {
	if r == nil {
		return New(secrets...)
	}
	return New(append(slices.Clone(r.secrets), secrets...)...)
}

// String returns s with every known secret and every credential of a
// well-known shape masked.
func (r *Redactor) String(s string) string {
	if r != nil && r.exact != nil {
		s = maskSpans(s, r.exact.find(s, nil))
	}
	return Shapes(s)
}

// Forms returns the forms s is masked in, in ASCII lower case: they are
// matched ignoring case, which covers the secret lower- and upper-cased,
// and %2f as well as %2F.
func Forms(s string) []string {
	forms := []string{s, url.QueryEscape(s), url.PathEscape(s)}
	b := []byte(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		forms = append(forms, enc.EncodeToString(b))
		// Inside a longer base64 text (user:key in a Basic authorization,
		// a token in a JSON document) the secret starts at any of three
		// offsets; the characters that encode its bytes alone are the
		// same whatever surrounds it.
		for shift := 0; shift <= 2; shift++ {
			if core := base64Core(enc, b, shift); len(core) >= 8 {
				forms = append(forms, core)
			}
		}
	}
	// As they appear in JSON (log lines, stored documents) and Go-quoted
	// (%q in messages).
	n := len(forms)
	for _, f := range forms[:n] {
		j, _ := json.Marshal(f)
		forms = append(forms, string(j[1:len(j)-1]))
		q := strconv.Quote(f)
		forms = append(forms, q[1:len(q)-1])
	}
	var out []string
	for _, f := range forms {
		if f = lowerASCII(f); len(f) >= MinLen && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// base64Core is the part of the encoding of b, preceded by shift bytes,
// that depends on b's bytes only.
func base64Core(enc *base64.Encoding, b []byte, shift int) string {
	padded := append(make([]byte, shift), b...)
	full := enc.WithPadding(base64.NoPadding).EncodeToString(padded)
	// After a shift, the first group of 4 characters mixes the shift
	// bytes with b's; after it, each 3 bytes are 4 characters of b alone,
	// up to the last whole group (the rest mixes with what follows).
	from, whole := 0, (len(padded)/3)*4
	if shift > 0 {
		from = 4
	}
	if whole <= from {
		return ""
	}
	return full[from:whole]
}

// The process's secrets.
var (
	mu      sync.Mutex
	process atomic.Pointer[Redactor]
)

// Add makes the process mask secrets, from now on, wherever String and
// Writer are used.
func Add(secrets ...string) {
	mu.Lock()
	defer mu.Unlock()
	cur := process.Load()
	var fresh []string
	for _, s := range secrets {
		if len(s) >= MinLen && (cur == nil || !slices.Contains(cur.secrets, s)) && !slices.Contains(fresh, s) {
			fresh = append(fresh, s)
		}
	}
	if len(fresh) == 0 {
		return
	}
	process.Store(cur.With(fresh...))
}

// String masks s with the process's secrets and the well-known shapes.
func String(s string) string { return process.Load().String(s) }

// Writer returns a writer that masks what it writes with the process's
// secrets (as they are when each write happens) before passing it to w: a
// logger's output. Every write must be whole (one log line), which zerolog
// guarantees.
func Writer(w io.Writer) io.Writer { return &writer{w: w} }

type writer struct{ w io.Writer }

func (w *writer) Write(p []byte) (int, error) {
	s := String(string(p))
	if len(s) == len(p) && s == string(p) {
		if _, err := w.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if _, err := io.WriteString(w.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}
