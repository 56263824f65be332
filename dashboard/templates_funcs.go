package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// page is what every template gets.
type page struct {
	Title  string
	Nav    string // the section of the navigation to mark
	Viewer viewer
	Flash  string
	Error  string
	Data   any
	// Status is the response's status code; 0 means 200.
	Status int
}

type pages map[string]*template.Template

var funcs = template.FuncMap{
	"markdown":   renderMarkdown,
	"highlight":  highlight,
	"isMarkdown": isMarkdown,
	"plural":     plural,
	"ago":        ago,
	"when":       func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"short":      shortID,
	"ms":         func(ms int64) string { return (time.Duration(ms) * time.Millisecond).Round(time.Millisecond).String() },
	"msf": func(ms float64) string {
		return (time.Duration(ms * float64(time.Millisecond))).Round(time.Millisecond).String()
	},
	"pct":    func(n, of int) string { return pct(n, of) },
	"money":  func(v float64) string { return fmt.Sprintf("$%.4f", v) },
	"pretty": prettyJSON,
	"query":  query,
	"add":    func(a, b int) int { return a + b },
	"join":   strings.Join,
}

func parsePages() (pages, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := pages{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", n, err)
		}
		p[name] = t
	}
	return p, nil
}

// render writes a page; a template that fails is a bug, logged and shown
// as a 500 without details.
func (s *Server) render(w http.ResponseWriter, r *http.Request, name, title string, data any) {
	s.renderPage(w, r, name, page{Title: title, Data: data})
}

func (s *Server) renderPage(w http.ResponseWriter, r *http.Request, name string, p page) {
	t, ok := s.pages[name]
	if !ok {
		s.fail(w, r, fmt.Errorf("no template %q", name))
		return
	}
	p.Viewer = viewerOf(r)
	if p.Nav == "" {
		p.Nav = name
	}
	if p.Flash == "" {
		// Only what this server said to this session: ?flash= alone is
		// ignored, so a link cannot put words in the banner.
		p.Flash = s.auth.flash(r, p.Viewer.session)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		s.fail(w, r, fmt.Errorf("rendering %s: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if p.Status != 0 {
		w.WriteHeader(p.Status)
	}
	_, _ = buf.WriteTo(w)
}

// fail answers a request that failed on our side: the details go to the
// log, not to the page.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error().Err(err).Str("path", r.URL.Path).Msg("dashboard request failed")
	http.Error(w, "internal error; see the review service's logs", http.StatusInternalServerError)
}

func notFound(w http.ResponseWriter, what, id string) {
	http.Error(w, fmt.Sprintf("no %s %q", what, id), http.StatusNotFound)
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func pct(n, of int) string {
	if of == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// prettyJSON indents JSON, or returns the text as it is when it is not JSON.
func prettyJSON(s string) string {
	var buf bytes.Buffer
	if json.Indent(&buf, []byte(s), "", "  ") != nil {
		return s
	}
	return buf.String()
}

// query builds a query string from key, value pairs, leaving out empty values.
func query(kv ...string) template.URL {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	if len(v) == 0 {
		return ""
	}
	return template.URL("?" + v.Encode())
}
