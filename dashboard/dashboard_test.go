package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/orchestrator"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// fixture is a dashboard served by httptest over a fresh SQLite store and
// an embedded NATS server with Troupe's topology.
type fixture struct {
	store *sqlite.Store
	nc    *nats.Conn
	js    jetstream.JetStream
	dash  *Server
	url   string
	log   zerolog.Logger
}

// services chooses what answers the API beside the dashboard.
type services struct {
	review       bool // the real review service (reviews.decide)
	orchestrator bool // the real orchestrator (dlq.replay, dlq.discard)
}

func setup(t *testing.T, cfg Config, svc services) *fixture {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: t.TempDir(), Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	log := zerolog.New(zerolog.NewTestWriter(t))
	nc, js, err := bus.Connect(srv.ClientURL(), "dashboard-test", log)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	ctx := context.Background()
	require.NoError(t, bus.Topology{Roles: schemas.Roles}.Ensure(ctx, js))
	st := sqlite.NewTestStore(t)

	if svc.review {
		rs := review.NewService(review.Config{Logger: log}, st, nc, js)
		require.NoError(t, rs.Start(ctx))
		t.Cleanup(func() { _ = rs.Stop(context.Background()) })
	}
	if svc.orchestrator {
		// No reconciler: the test's rows are not a real job's, and a pass
		// must not move them under the assertions.
		o := orchestrator.New(orchestrator.Config{Logger: log, Reconcile: orchestrator.ReconcileConfig{Interval: -1}}, st, nc, js)
		require.NoError(t, o.Start(ctx))
		t.Cleanup(func() { _ = o.Stop(context.Background()) })
	}

	cfg.Logger = log
	d, err := New(cfg, st, nc, js)
	require.NoError(t, err)
	hs := httptest.NewServer(d.Handler())
	t.Cleanup(hs.Close)
	// Runs before hs.Close, which waits for the live streams to end.
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return &fixture{store: st, nc: nc, js: js, dash: d, url: hs.URL, log: log}
}

// stage stores a running job whose one task (role) waits for a person,
// with its output awaiting review.
func (f *fixture) stage(t *testing.T, title, role, content string, files []schemas.File) store.Output {
	t.Helper()
	ctx := context.Background()
	job, _, err := f.store.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: title, Status: schemas.JobRunning},
		Tasks: []store.Task{{Key: "impl", Role: role, Instructions: "Build the limiter.", Status: schemas.TaskAwaitingReview}},
	})
	require.NoError(t, err)
	tasks, err := f.store.TaskListByJob(ctx, job.ID)
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	out, created, err := f.store.OutputStage(ctx, store.Output{
		TaskID: tasks[0].ID, JobID: job.ID, Role: role, Status: schemas.OutputAwaitingReview,
		Content: content, Files: files, Model: "test/model", PromptTokens: 10, CompletionTokens: 5,
	})
	require.NoError(t, err)
	require.True(t, created)
	return out
}

func (f *fixture) output(t *testing.T, id string) store.Output {
	t.Helper()
	o, err := f.store.OutputGetByID(context.Background(), id)
	require.NoError(t, err)
	return o
}

func (f *fixture) reviews(t *testing.T, outputID string) []store.Review {
	t.Helper()
	rs, err := f.store.ReviewListByOutput(context.Background(), outputID)
	require.NoError(t, err)
	return rs
}

// requireUndecided asserts that nothing decided the output.
func (f *fixture) requireUndecided(t *testing.T, outputID string) {
	t.Helper()
	require.Equal(t, schemas.OutputAwaitingReview, f.output(t, outputID).Status)
	require.Empty(t, f.reviews(t, outputID))
}

// browser is one visitor: a cookie jar, redirects not followed, and
// headers (credentials) sent with every request.
type browser struct {
	t      *testing.T
	base   string
	client *http.Client
	header http.Header
}

func (f *fixture) browser(t *testing.T) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &browser{t: t, base: f.url, header: http.Header{}, client: &http.Client{
		Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) location() string { return r.header.Get("Location") }

func (b *browser) do(method, path string, form url.Values, header http.Header) reply {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	require.NoError(b.t, err)
	for k, v := range b.header {
		req.Header[k] = v
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.client.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

func (b *browser) get(path string) reply { return b.do(http.MethodGet, path, nil, nil) }

func (b *browser) post(path string, form url.Values) reply {
	return b.do(http.MethodPost, path, form, nil)
}

// page GETs a page and requires a 200.
func (b *browser) page(path string) reply {
	b.t.Helper()
	r := b.get(path)
	require.Equal(b.t, http.StatusOK, r.status, "GET %s: %s", path, r.body)
	return r
}

// decide opens an output's review page and submits its form, as a person
// pressing a button: the hidden fields of the page plus form.
func (b *browser) decide(outputID string, form url.Values) reply {
	b.t.Helper()
	p := b.page("/reviews/" + outputID)
	doc := parseHTML(b.t, p.body)
	decide := byID(doc, "decide")
	require.NotNil(b.t, decide, "the page has the decision form")
	for _, in := range all(decide, "input") {
		if attr(in, "type") == "hidden" && !form.Has(attr(in, "name")) {
			form.Set(attr(in, "name"), attr(in, "value"))
		}
	}
	return b.post("/reviews/"+outputID, form)
}

// HTML helpers.

func parseHTML(t *testing.T, s string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(s))
	require.NoError(t, err)
	return doc
}

func walk(n *html.Node, fn func(*html.Node)) {
	fn(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, fn)
	}
}

func all(root *html.Node, tag string) []*html.Node {
	var out []*html.Node
	walk(root, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == tag {
			out = append(out, n)
		}
	})
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(attr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

func byID(root *html.Node, id string) *html.Node {
	var found *html.Node
	walk(root, func(n *html.Node) {
		if found == nil && n.Type == html.ElementNode && attr(n, "id") == id {
			found = n
		}
	})
	return found
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
	})
	return b.String()
}

// textByID is the text of the element with id, failing when there is none.
func textByID(t *testing.T, body, id string) string {
	t.Helper()
	n := byID(parseHTML(t, body), id)
	require.NotNil(t, n, "no element #%s", id)
	return strings.TrimSpace(text(n))
}

// flash is the text of the page's flash message.
func flash(t *testing.T, body string) string {
	t.Helper()
	for _, p := range all(parseHTML(t, body), "p") {
		if hasClass(p, "flash") {
			return strings.TrimSpace(text(p))
		}
	}
	return ""
}

func csrfToken(t *testing.T, body string) string {
	t.Helper()
	for _, in := range all(parseHTML(t, body), "input") {
		if attr(in, "name") == "csrf" && attr(in, "value") != "" {
			return attr(in, "value")
		}
	}
	t.Fatalf("no csrf input in the page")
	return ""
}

// requireInert asserts that nothing in a page can run script: no script
// element but the dashboard's own, no event handler, no javascript: URL,
// no frame or plugin, no inline style.
func requireInert(t *testing.T, body string) {
	t.Helper()
	scripts := 0
	walk(parseHTML(t, body), func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "script":
			scripts++
			require.Equal(t, "/static/app.js", attr(n, "src"), "only the dashboard's script")
			require.Nil(t, n.FirstChild, "the dashboard's script element has no inline code")
		case "iframe", "frame", "object", "embed", "base", "style":
			t.Errorf("a <%s> element made it into the page", n.Data)
		}
		for _, a := range n.Attr {
			key := strings.ToLower(a.Key)
			require.False(t, strings.HasPrefix(key, "on"), "<%s %s=%q>: an event handler", n.Data, a.Key, a.Val)
			require.NotEqual(t, "style", key, "<%s style=%q>: inline style", n.Data, a.Val)
			switch key {
			case "href", "src", "action", "formaction", "xlink:href", "srcset", "poster":
				v := strings.ToLower(strings.Map(func(r rune) rune {
					if r <= ' ' { // browsers ignore these inside a scheme
						return -1
					}
					return r
				}, a.Val))
				for _, scheme := range []string{"javascript:", "vbscript:", "data:text/html"} {
					require.False(t, strings.HasPrefix(v, scheme), "<%s %s=%q>", n.Data, a.Key, a.Val)
				}
			}
		}
	})
	require.Equal(t, 1, scripts, "exactly one script element")
}

// TestCheckExposure: without credentials the dashboard serves loopback
// only, and the refusal says which setting to use.
func TestCheckExposure(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080", "127.0.0.1:0"} {
		require.NoError(t, CheckExposure(addr, "", nil), addr)
	}
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "192.168.1.20:8080", "[::]:8080", "10.0.0.5:80"} {
		err := CheckExposure(addr, "", nil)
		require.Error(t, err, addr)
		require.Contains(t, err.Error(), "TROUPE_DASHBOARD_TOKEN", addr)
		require.Contains(t, err.Error(), "TROUPE_DASHBOARD_USERS", addr)
		// Strong enough credentials make any address acceptable.
		require.NoError(t, CheckExposure(addr, "9f2c81d4e07ab3c6", nil), addr)
		require.NoError(t, CheckExposure(addr, "", map[string]string{"ada": "Tr0ub4dor&3x!"}), addr)
	}
	require.Error(t, CheckExposure("127.0.0.1", "", nil), "an address without a port is an error, not a pass")
}

// TestListenRefusesExposure: Listen checks exposure before it binds, and
// serves on loopback.
func TestListenRefusesExposure(t *testing.T) {
	t.Parallel()
	d, err := New(Config{Logger: zerolog.New(zerolog.NewTestWriter(t))}, nil, nil, nil)
	require.NoError(t, err)
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		_, err := d.Listen(addr)
		require.Error(t, err, addr)
		require.Contains(t, err.Error(), "TROUPE_DASHBOARD_TOKEN")
	}
	addr, err := d.Listen("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	resp, err := http.Get("http://" + addr + "/static/app.js")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NotEmpty(t, resp.Header.Get("Content-Security-Policy"))
}

// evilMarkdown is model output that tries every way into the page.
const evilMarkdown = `# Summary

<script>window.pwned=1</script>

<img src=x onerror="alert(1)">

<a href="javascript:alert(1)">x</a> and [y](javascript:alert(2)) and [z](jav&#x61;script:alert(2))

![pic](javascript:alert(2))

<iframe src="https://evil.example/"></iframe>

<p style="background:url(https://evil.example/x.png)">styled</p>

<div onclick="alert(6)">click</div>

Plain **bold** text and [a real link](https://example.com/docs).
`

// TestUntrustedOutputRendersInert: an output whose summary and files are
// made of script, handlers and javascript: links shows as text on the
// review page; nothing in it can run, and the CSP forbids what might.
func TestUntrustedOutputRendersInert(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{})
	code := "package main\n\nconst s = \"</pre><script>alert(3)</script>\"\n"
	js := "const s = '</pre><script>alert(3)</script>';\n"
	out := f.stage(t, "<script>alert(9)</script> job", "developer", evilMarkdown, []schemas.File{
		{Path: "NOTES.md", Content: evilMarkdown},
		{Path: "main.go", Content: code},
		{Path: "app.js", Content: js},
		{Path: `x" onmouseover="alert(7).txt`, Content: "<script>alert(8)</script>"},
	})
	b := f.browser(t)
	p := b.page("/reviews/" + out.ID)

	csp := p.header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.Contains(t, csp, "object-src 'none'")
	require.Contains(t, csp, "frame-ancestors 'none'")
	require.NotContains(t, csp, "unsafe-inline")
	require.NotContains(t, csp, "unsafe-eval")
	require.Equal(t, "nosniff", p.header.Get("X-Content-Type-Options"))
	require.Equal(t, "text/html; charset=utf-8", p.header.Get("Content-Type"))

	requireInert(t, p.body)
	require.NotContains(t, p.body, "window.pwned=1</script>")
	require.NotContains(t, p.body, "<script>alert")

	doc := parseHTML(t, p.body)
	// The code is shown, as text, whole.
	var codeTexts []string
	for _, div := range all(doc, "div") {
		if hasClass(div, "code") {
			codeTexts = append(codeTexts, text(div))
		}
	}
	require.Len(t, codeTexts, 3, "main.go, app.js and the .txt file are shown as code")
	require.Contains(t, codeTexts[0], `"</pre><script>alert(3)</script>"`)
	require.Contains(t, codeTexts[1], `'</pre><script>alert(3)</script>'`)
	require.Contains(t, codeTexts[2], "<script>alert(8)</script>")
	require.Contains(t, p.body, "&lt;script&gt;alert(3)&lt;/script&gt;", "escaped in the markup")
	// The markdown keeps its harmless parts.
	summary := byID(doc, "output-content")
	require.NotNil(t, summary)
	require.Contains(t, text(summary), "Plain bold text")
	// HTML inside markdown is shown as what it is, so the reviewer sees
	// that the output tried it.
	require.Contains(t, text(summary), "<script>window.pwned=1</script>")
	require.Contains(t, text(summary), `<img src=x onerror="alert(1)">`)
	require.NotEmpty(t, all(summary, "strong"))
	var links []string
	for _, a := range all(summary, "a") {
		links = append(links, attr(a, "href"))
	}
	require.Contains(t, links, "https://example.com/docs")
	// The job title and the odd path are text too.
	require.Contains(t, text(doc), "<script>alert(9)</script> job")
	require.NotNil(t, byID(doc, `file-x" onmouseover="alert(7).txt`), "the path stays inside its id")

	// A failed decision shows the feedback typed, inside its textarea.
	feedback := "</textarea><script>alert(4)</script><textarea>"
	r := b.decide(out.ID, url.Values{"decision": {"maybe"}, "feedback": {feedback}, "lessons": {`"><img src=x onerror=alert(5)>`}})
	require.Equal(t, http.StatusBadRequest, r.status)
	requireInert(t, r.body)
	doc = parseHTML(t, r.body)
	require.Equal(t, feedback, text(byID(doc, "feedback")))
	require.Equal(t, `"><img src=x onerror=alert(5)>`, text(byID(doc, "lessons")))
	require.Contains(t, text(doc), "choose approve or reject")
	require.NotEmpty(t, r.header.Get("Content-Security-Policy"))
	f.requireUndecided(t, out.ID)
}

// TestErrorPagesKeepHeaders: a page served with an error status (a
// decision that failed, a wrong sign-in) has the same Content-Type and
// Cache-Control as a 200: it holds a CSRF token and what was typed.
func TestErrorPagesKeepHeaders(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{review: true})
	out := f.stage(t, "Limiter", "developer", "done", nil)
	b := f.browser(t)
	ok := b.page("/reviews/" + out.ID)
	require.Equal(t, "no-store", ok.header.Get("Cache-Control"))
	r := b.decide(out.ID, url.Values{"decision": {"reject"}})
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, "text/html; charset=utf-8", r.header.Get("Content-Type"))
	require.Equal(t, "no-store", r.header.Get("Cache-Control"), "the error page is cached like no other page")
}

// TestCSRF: a decision or a dead-letter action needs the form's token of
// the visitor's own session and a same-origin request; a GET changes nothing.
func TestCSRF(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{review: true})
	ctx := context.Background()
	out := f.stage(t, "Limiter", "developer", "The limiter.", nil)
	_, err := f.store.DeadLetterInsert(ctx, schemas.DeadLetter{ID: "dl-1", Source: "workers-developer", Subject: "troupe.tasks.developer", Payload: "{}", Reason: "boom", Class: "permanent", CreatedAt: time.Now()})
	require.NoError(t, err)

	b := f.browser(t)
	token := csrfToken(t, b.page("/reviews/"+out.ID).body)
	other := f.browser(t)
	otherToken := csrfToken(t, other.page("/reviews/"+out.ID).body)
	require.NotEqual(t, token, otherToken, "every session has its own token")
	path := "/reviews/" + out.ID

	for name, form := range map[string]url.Values{
		"missing":         {"decision": {"promote"}},
		"empty":           {"decision": {"promote"}, "csrf": {""}},
		"wrong":           {"decision": {"promote"}, "csrf": {"not-the-token"}},
		"another session": {"decision": {"promote"}, "csrf": {otherToken}},
	} {
		r := b.post(path, form)
		require.Equal(t, http.StatusForbidden, r.status, name)
		require.Contains(t, r.body, "CSRF", name)
		f.requireUndecided(t, out.ID)
	}
	// The token without the session cookie it belongs to.
	stranger := f.browser(t)
	r := stranger.post(path, url.Values{"decision": {"promote"}, "csrf": {token}})
	require.Equal(t, http.StatusForbidden, r.status)
	f.requireUndecided(t, out.ID)

	// Dead letters alike.
	r = b.post("/deadletters", url.Values{"action": {"discard"}, "id": {"dl-1"}})
	require.Equal(t, http.StatusForbidden, r.status)
	r = b.post("/deadletters", url.Values{"action": {"discard"}, "id": {"dl-1"}, "csrf": {otherToken}})
	require.Equal(t, http.StatusForbidden, r.status)

	// A GET with the fields of a decision only shows the page.
	b.page(path + "?decision=promote&csrf=" + url.QueryEscape(token))
	b.page("/deadletters?action=discard&id=dl-1&csrf=" + url.QueryEscape(token))
	b.page("/deadletters/dl-1?action=discard&csrf=" + url.QueryEscape(token))
	f.requireUndecided(t, out.ID)
	d, err := f.store.DeadLetterGetByID(ctx, "dl-1")
	require.NoError(t, err)
	require.Equal(t, schemas.DeadLetterOpen, d.Status)

	// Cross-origin, even with the right token: what a browser says of a
	// form another site submits.
	good := url.Values{"decision": {"promote"}, "csrf": {token}}
	for name, h := range map[string]http.Header{
		"sec-fetch-site": {"Sec-Fetch-Site": {"cross-site"}, "Origin": {"http://evil.example"}},
		"same-site":      {"Sec-Fetch-Site": {"same-site"}, "Origin": {"http://sub.example"}},
		"origin only":    {"Origin": {"http://evil.example"}},
	} {
		r := b.do(http.MethodPost, path, good, h)
		require.Equal(t, http.StatusForbidden, r.status, name)
		f.requireUndecided(t, out.ID)
	}
	r = b.do(http.MethodPost, "/deadletters", url.Values{"action": {"discard"}, "id": {"dl-1"}, "csrf": {token}},
		http.Header{"Sec-Fetch-Site": {"cross-site"}, "Origin": {"http://evil.example"}})
	require.Equal(t, http.StatusForbidden, r.status)

	// The right cookie and token, same-origin: the decision goes through.
	r = b.do(http.MethodPost, path, good, http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {f.url}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	require.Equal(t, schemas.OutputPromoted, f.output(t, out.ID).Status)
	rs := f.reviews(t, out.ID)
	require.Len(t, rs, 1)
	require.Equal(t, "human:local", rs[0].Reviewer, "the configured default reviewer")
}

// TestTokenAuth: with a token, pages ask to sign in; the token and a name
// make a session whose name is recorded with each decision; a Bearer header
// works for scripts.
func TestTokenAuth(t *testing.T) {
	t.Parallel()
	const token = "correct-horse"
	f := setup(t, Config{Token: token}, services{review: true})
	out := f.stage(t, "Limiter", "developer", "The limiter.", nil)

	b := f.browser(t)
	r := b.get("/reviews/" + out.ID)
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, "/login?next="+url.QueryEscape("/reviews/"+out.ID), r.location())
	r = b.get("/")
	require.Equal(t, http.StatusSeeOther, r.status)
	require.True(t, strings.HasPrefix(r.location(), "/login"), r.location())
	r = b.get("/events")
	require.Equal(t, http.StatusUnauthorized, r.status, "a stream is not redirected")
	b.page("/static/app.css") // public

	login := b.page("/login?next=/reviews/" + out.ID)
	csrf := csrfToken(t, login.body)

	// A POST without a session is refused, not redirected.
	r = b.post("/reviews/"+out.ID, url.Values{"decision": {"promote"}, "csrf": {csrf}})
	require.Equal(t, http.StatusUnauthorized, r.status)
	f.requireUndecided(t, out.ID)

	r = b.post("/login", url.Values{"csrf": {csrf}, "name": {"Ada"}, "token": {"wrong"}, "next": {"/"}})
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.body, "not the dashboard&#39;s token")
	require.Equal(t, http.StatusSeeOther, b.get("/").status, "still signed out")

	r = b.post("/login", url.Values{"csrf": {csrf}, "name": {""}, "token": {token}, "next": {"/"}})
	require.Equal(t, http.StatusUnauthorized, r.status, "a name is required")
	require.Contains(t, r.body, "say who you are")

	r = b.post("/login", url.Values{"csrf": {csrf}, "name": {"  Ada  "}, "token": {token}, "next": {"/reviews/" + out.ID}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	require.Equal(t, "/reviews/"+out.ID, r.location())

	p := b.page("/")
	require.Equal(t, "Ada", textByID(t, p.body, "viewer"))
	require.Contains(t, text(parseHTML(t, p.body)), "Reviewing as Ada")
	require.NotEqual(t, csrf, csrfToken(t, p.body), "signing in starts a new session")

	r = b.decide(out.ID, url.Values{"decision": {"promote"}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	rs := f.reviews(t, out.ID)
	require.Len(t, rs, 1)
	require.Equal(t, "human:Ada", rs[0].Reviewer)

	// Signing out ends the session.
	p = b.page("/")
	r = b.post("/logout", url.Values{"csrf": {csrfToken(t, p.body)}})
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, http.StatusSeeOther, b.get("/").status)

	// Bearer, for scripts: no session needed.
	script := f.browser(t)
	script.header.Set("Authorization", "Bearer "+token)
	script.page("/")
	script.page("/reviews")
	script.header.Set("Authorization", "Bearer wrong")
	require.Equal(t, http.StatusSeeOther, script.get("/").status)
	require.Equal(t, http.StatusUnauthorized, script.get("/events").status)
}

// TestLoginRedirectStaysOnSite: the next of a sign-in link cannot send the
// person elsewhere, however it is spelled.
func TestLoginRedirectStaysOnSite(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{})
	for _, next := range []string{
		"https://evil.example/", "//evil.example", "/\\evil.example", "/./\\evil.example",
		"/\t/evil.example", "/\n/evil.example", "javascript:alert(1)",
	} {
		b := f.browser(t)
		csrf := csrfToken(t, b.page("/login?next="+url.QueryEscape(next)).body)
		r := b.post("/login", url.Values{"csrf": {csrf}, "name": {"Ada"}, "next": {next}})
		require.Equal(t, http.StatusSeeOther, r.status)
		require.True(t, sameSite(r.location()), "next %q redirected to %q", next, r.location())
	}
}

// sameSite reports whether a browser would stay on this site following
// loc: it ignores tabs and newlines in a URL and reads \ as /.
func sameSite(loc string) bool {
	loc = strings.NewReplacer("\t", "", "\n", "", "\r", "", "\\", "/").Replace(loc)
	u, err := url.Parse(loc)
	return err == nil && u.Scheme == "" && u.Host == "" && strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//")
}

// TestBasicAuthUsers: with users, every request needs basic auth, and a
// decision is recorded under the user, whatever name a form says.
func TestBasicAuthUsers(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{Users: map[string]string{"ada": "pw-ada", "bob": "pw-bob"}}, services{review: true})
	out := f.stage(t, "Limiter", "developer", "The limiter.", nil)

	for name, set := range map[string]func(*http.Request){
		"none":           func(*http.Request) {},
		"wrong password": func(r *http.Request) { r.SetBasicAuth("ada", "pw-bob") },
		"unknown user":   func(r *http.Request) { r.SetBasicAuth("eve", "pw-ada") },
		"token instead":  func(r *http.Request) { r.Header.Set("Authorization", "Bearer pw-ada") },
	} {
		for _, path := range []string{"/", "/reviews/" + out.ID, "/events", "/static/app.js"} {
			req, err := http.NewRequest(http.MethodGet, f.url+path, nil)
			require.NoError(t, err)
			set(req)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			_ = resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s: %s", name, path)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), `Basic realm="troupe"`, name)
		}
	}

	ada := f.browser(t)
	ada.header.Set("Authorization", "Basic "+basic("ada", "pw-ada"))
	p := ada.page("/")
	require.Equal(t, "ada", textByID(t, p.body, "viewer"))

	// A name given at sign-in does not replace the user's.
	login := ada.page("/login")
	r := ada.post("/login", url.Values{"csrf": {csrfToken(t, login.body)}, "name": {"mallory"}, "next": {"/"}})
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, "ada", textByID(t, ada.page("/").body, "viewer"))

	r = ada.decide(out.ID, url.Values{"decision": {"reject"}, "feedback": {"Handle bursts."}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	rs := f.reviews(t, out.ID)
	require.Len(t, rs, 1)
	require.Equal(t, "human:ada", rs[0].Reviewer)
	require.Equal(t, "reject", rs[0].Decision)
}

func basic(user, pw string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pw)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// TestDecide: the review service's rules reach the person as a page, and
// a decision made here lands in the store as one made with the CLI.
func TestDecide(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{Reviewer: "grace"}, services{review: true})
	ctx := context.Background()
	first := f.stage(t, "Limiter", "developer", "The limiter.", []schemas.File{{Path: "limiter.go", Content: "package limiter\n"}})
	second := f.stage(t, "Docs", "writer", "The docs.", []schemas.File{{Path: "README.md", Content: "# Docs\n"}})
	b := f.browser(t)

	t.Run("RejectNeedsFeedback", func(t *testing.T) {
		r := b.decide(first.ID, url.Values{"decision": {"reject"}, "feedback": {"   "}})
		require.Equal(t, http.StatusBadRequest, r.status)
		doc := parseHTML(t, r.body)
		var alerts []string
		walk(doc, func(n *html.Node) {
			if n.Type == html.ElementNode && attr(n, "role") == "alert" {
				alerts = append(alerts, text(n))
			}
		})
		// The API's own words: the schema requires feedback with a reject
		// ("feedback: is required when decision is reject"), as the
		// review service does ("feedback: is required to reject").
		require.Len(t, alerts, 1)
		require.Contains(t, alerts[0], "feedback: is required")
		require.Contains(t, alerts[0], "reject")
		require.NotNil(t, byID(doc, "decide"), "the form is shown again")
		f.requireUndecided(t, first.ID)
		task, err := f.store.TaskGetByID(ctx, first.TaskID)
		require.NoError(t, err)
		require.Equal(t, schemas.TaskAwaitingReview, task.Status)
	})

	t.Run("Reject", func(t *testing.T) {
		r := b.decide(first.ID, url.Values{"decision": {"reject"}, "feedback": {"Handle the 429 case.\n"}})
		require.Equal(t, http.StatusSeeOther, r.status, r.body)
		// The page offered the next output in the queue; the redirect goes there.
		loc, err := url.Parse(r.location())
		require.NoError(t, err)
		require.Equal(t, "/reviews/"+second.ID, loc.Path)
		require.Equal(t, "Rejected "+first.ID[:8], loc.Query().Get("flash"))
		require.Equal(t, "Rejected "+first.ID[:8], flash(t, b.page(r.location()).body), "the next page says what happened")

		require.Equal(t, schemas.OutputRejected, f.output(t, first.ID).Status)
		task, err := f.store.TaskGetByID(ctx, first.TaskID)
		require.NoError(t, err)
		require.Equal(t, schemas.TaskRejected, task.Status)
		require.Equal(t, "Handle the 429 case.", task.Feedback, "the next revision gets the feedback")
		rs := f.reviews(t, first.ID)
		require.Len(t, rs, 1)
		require.Equal(t, "human:grace", rs[0].Reviewer)
		require.Equal(t, "reject", rs[0].Decision)
	})

	t.Run("DecidedAlready", func(t *testing.T) {
		p := b.page("/reviews/" + first.ID)
		doc := parseHTML(t, p.body)
		require.Nil(t, byID(doc, "decide"), "no form for a decided output")
		require.Equal(t, schemas.OutputRejected, textByID(t, p.body, "output-status"))
		// A form left open in another tab: the session's token, a decided output.
		token := csrfToken(t, b.page("/login").body)
		r := b.post("/reviews/"+first.ID, url.Values{"decision": {"promote"}, "csrf": {token}})
		require.Equal(t, http.StatusConflict, r.status)
		require.Contains(t, r.body, "only an output awaiting review can be decided")
		require.Len(t, f.reviews(t, first.ID), 1)
	})

	t.Run("ApproveWithLessons", func(t *testing.T) {
		r := b.decide(second.ID, url.Values{
			"decision": {"promote"}, "scope": {"all"},
			"lessons": {"Link every new page from the README.\r\n\r\n  Keep examples runnable.  \r\n"},
		})
		require.Equal(t, http.StatusSeeOther, r.status, r.body)
		loc, err := url.Parse(r.location())
		require.NoError(t, err)
		require.Equal(t, "/reviews", loc.Path, "the queue is empty")
		require.Equal(t, "Approved "+second.ID[:8]+"; 2 lessons added to MEMORY", loc.Query().Get("flash"))

		require.Equal(t, schemas.OutputPromoted, f.output(t, second.ID).Status)
		lessons, err := f.store.LessonList(ctx, store.LessonListParams{Scope: "all"})
		require.NoError(t, err)
		var texts []string
		for _, l := range lessons {
			require.Equal(t, "all", l.Scope)
			require.Equal(t, second.JobID, l.JobID)
			texts = append(texts, l.Text)
		}
		require.ElementsMatch(t, []string{"Link every new page from the README.", "Keep examples runnable."}, texts)
		rs := f.reviews(t, second.ID)
		require.Len(t, rs, 1)
		require.Equal(t, "promote", rs[0].Decision)
		require.Len(t, rs[0].Lessons, 2)
		arts, err := f.store.ArtifactListByTask(ctx, second.TaskID)
		require.NoError(t, err)
		require.Len(t, arts, 1, "the file is promoted")

		// MEMORY shows them.
		mem := b.page("/memory")
		require.Contains(t, mem.body, "Keep examples runnable.")
	})
}

// TestDecideWithoutReviewService: nothing answers the API; the page says
// which service to start and nothing changes.
func TestDecideWithoutReviewService(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{Timeout: 5 * time.Second}, services{})
	out := f.stage(t, "Limiter", "developer", "The limiter.", nil)
	_, err := f.store.DeadLetterInsert(context.Background(), schemas.DeadLetter{ID: "dl-1", Source: "workers-developer", Subject: "troupe.tasks.developer", Payload: "{}", Reason: "boom", Class: "permanent", CreatedAt: time.Now()})
	require.NoError(t, err)
	b := f.browser(t)
	r := b.decide(out.ID, url.Values{"decision": {"promote"}})
	require.Equal(t, http.StatusBadGateway, r.status)
	require.Contains(t, text(parseHTML(t, r.body)), "nothing answers troupe.api.reviews.decide: is the review service running?")
	f.requireUndecided(t, out.ID)

	p := b.page("/deadletters")
	r = b.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"discard"}, "id": {"dl-1"}})
	require.Equal(t, http.StatusSeeOther, r.status)
	loc, err := url.Parse(r.location())
	require.NoError(t, err)
	require.Contains(t, loc.Query().Get("flash"), "is the orchestrator running?")
}

// TestDeadLetterActions: replay and discard go through the orchestrator,
// recorded as the dashboard's viewer.
func TestDeadLetterActions(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{Reviewer: "grace"}, services{orchestrator: true})
	ctx := context.Background()
	now := time.Now().UTC()
	for i, d := range []schemas.DeadLetter{
		{ID: "dl-timeout", Reason: "model timed out", Class: "exhausted"},
		{ID: "dl-bad-1", Reason: "bad payload: missing task_id", Class: "permanent"},
		{ID: "dl-bad-2", Reason: "bad payload: unknown role", Class: "permanent"},
	} {
		d.Source, d.Subject, d.Payload, d.Attempts = "workers-developer", "troupe.tasks.developer", `{"task_id":"t"}`, 3
		d.CreatedAt = now.Add(time.Duration(i) * time.Second)
		_, err := f.store.DeadLetterInsert(ctx, d)
		require.NoError(t, err)
	}
	status := func(id string) schemas.DeadLetter {
		d, err := f.store.DeadLetterGetByID(ctx, id)
		require.NoError(t, err)
		return d
	}
	b := f.browser(t)

	p := b.page("/deadletters/dl-timeout")
	r := b.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"discard"}, "id": {"dl-timeout"}, "back": {"/deadletters/dl-timeout"}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	loc, err := url.Parse(r.location())
	require.NoError(t, err)
	require.Equal(t, "/deadletters/dl-timeout", loc.Path)
	require.Equal(t, "Discarded 1 dead letter", loc.Query().Get("flash"))
	require.Equal(t, "Discarded 1 dead letter", flash(t, b.page(r.location()).body))
	d := status("dl-timeout")
	require.Equal(t, schemas.DeadLetterDiscarded, d.Status)
	require.Equal(t, "dashboard:grace", d.ResolvedBy)
	require.Nil(t, byID(parseHTML(t, b.page("/deadletters/dl-timeout").body), "discard"), "nothing left to do")

	// Every open one the filter selects.
	p = b.page("/deadletters?q=bad+payload")
	require.Equal(t, 2, strings.Count(p.body, `name="id"`), "two selectable rows")
	r = b.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"replay"}, "all": {"1"}, "q": {"bad payload"}, "back": {"/deadletters?q=bad+payload"}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	loc, err = url.Parse(r.location())
	require.NoError(t, err)
	require.Equal(t, "Replayed 2 dead letters", loc.Query().Get("flash"))
	require.Equal(t, "bad payload", loc.Query().Get("q"), "back to the same filter")
	for _, id := range []string{"dl-bad-1", "dl-bad-2"} {
		require.Equal(t, schemas.DeadLetterReplayed, status(id).Status, id)
		require.Equal(t, "dashboard:grace", status(id).ResolvedBy, id)
	}

	r = b.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"delete"}, "id": {"dl-bad-1"}})
	require.Equal(t, http.StatusBadRequest, r.status)
	r = b.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"replay"}, "back": {"https://evil.example/"}})
	require.Equal(t, http.StatusSeeOther, r.status)
	require.True(t, strings.HasPrefix(r.location(), "/deadletters?flash="), r.location())
	for _, back := range []string{"/deadletters/../\\evil.example", "/deadletters/..//evil.example", "/deadletters\t/evil.example"} {
		r = b.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"replay"}, "back": {back}})
		require.Equal(t, http.StatusSeeOther, r.status)
		require.True(t, sameSite(r.location()), "back %q redirected to %q", back, r.location())
	}
}

// seeded is the data TestPages looks at.
type seeded struct {
	limiter, docs store.Job
	spec, impl    store.Task
	output        store.Output
	deadLetter    string
}

func seed(t *testing.T, f *fixture) seeded {
	t.Helper()
	ctx := context.Background()
	var s seeded
	var err error
	s.limiter, _, err = f.store.JobCreate(ctx, store.JobCreateParams{
		Job: store.Job{Title: "Rate limiter", Brief: "Token bucket, **per client**.", Status: schemas.JobRunning, BudgetTokens: 100000},
		Tasks: []store.Task{
			{Key: "spec", Role: "pm", Instructions: "Write the spec.", Status: schemas.TaskPromoted},
			{Key: "impl", Role: "developer", Instructions: "Implement it.", DependsOn: []string{"spec"}, Status: schemas.TaskAwaitingReview},
		},
	})
	require.NoError(t, err)
	tasks, err := f.store.TaskListByJob(ctx, s.limiter.ID)
	require.NoError(t, err)
	s.spec, s.impl = tasks[0], tasks[1]
	s.docs, _, err = f.store.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "Docs pass", Status: schemas.JobDone},
		Tasks: []store.Task{{Key: "docs", Role: "writer", Instructions: "Write.", Status: schemas.TaskPromoted}},
	})
	require.NoError(t, err)
	s.output, _, err = f.store.OutputStage(ctx, store.Output{
		TaskID: s.impl.ID, JobID: s.limiter.ID, Role: "developer", Status: schemas.OutputAwaitingReview,
		Content: "Implemented the **bucket**.", Files: []schemas.File{{Path: "limiter.go", Content: "package limiter\n"}},
		Model: "test/model", PromptTokens: 700, CompletionTokens: 100, LatencyMS: 1200,
	})
	require.NoError(t, err)
	require.NoError(t, f.store.ModelCallInsert(ctx, []store.ModelCall{
		{JobID: s.limiter.ID, TaskID: s.spec.ID, Role: "pm", Model: "test/model", PromptTokens: 1200, CompletionTokens: 300, Outcome: "ok"},
		{JobID: s.limiter.ID, TaskID: s.impl.ID, Role: "developer", Model: "test/model", PromptTokens: 700, CompletionTokens: 100, Outcome: "ok"},
	}))
	require.NoError(t, f.store.EventInsert(ctx, []store.Event{
		{JobID: s.limiter.ID, Kind: schemas.EventJobSubmitted, Message: "submitted", Time: time.Now()},
		{JobID: s.limiter.ID, TaskID: s.impl.ID, Kind: schemas.EventOutputAwaitingReview, Role: "developer", Time: time.Now()},
	}))
	require.NoError(t, f.store.LessonInsert(ctx, []store.Lesson{
		{Text: "Always send Retry-After with a 429.", Scope: "developer", JobID: s.limiter.ID},
		{Text: "Prefer table tests.", Scope: "all", JobID: s.limiter.ID},
	}))
	s.deadLetter = "dl-open"
	_, err = f.store.DeadLetterInsert(ctx, schemas.DeadLetter{
		ID: s.deadLetter, Source: "workers-developer", Subject: "troupe.tasks.developer",
		Payload: `{"task_id":"` + s.impl.ID + `","role":"developer"}`, Headers: map[string]string{"Troupe-Attempt": "3"},
		Reason: "model returned 500 three times", Class: "exhausted", Attempts: 3, JobID: s.limiter.ID, CreatedAt: time.Now(),
	})
	require.NoError(t, err)
	return s
}

// TestPages: every page answers with the seeded data, filters filter, and
// an unknown id is a 404.
func TestPages(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{Prices: map[string]config.Price{"test/model": {Input: 1, Output: 2}}}, services{})
	s := seed(t, f)
	b := f.browser(t)

	t.Run("Overview", func(t *testing.T) {
		p := b.page("/")
		require.Equal(t, "1", textByID(t, p.body, "pending-reviews"))
		require.Equal(t, "1", textByID(t, p.body, "open-dead-letters"))
		require.NotContains(t, p.body, "unavailable", "every role's consumer answers")
	})

	t.Run("Jobs", func(t *testing.T) {
		jobsIn := func(path string) string { return textByID(t, b.page(path).body, "jobs") }
		list := jobsIn("/jobs")
		require.Contains(t, list, "Rate limiter")
		require.Contains(t, list, "Docs pass")
		list = jobsIn("/jobs?status=done")
		require.NotContains(t, list, "Rate limiter")
		require.Contains(t, list, "Docs pass")
		list = jobsIn("/jobs?role=developer")
		require.Contains(t, list, "Rate limiter")
		require.NotContains(t, list, "Docs pass")
		list = jobsIn("/jobs?q=RATE")
		require.Contains(t, list, "Rate limiter")
		require.NotContains(t, list, "Docs pass")
		require.Contains(t, jobsIn("/jobs?q=nothing-like-it"), "No job matches.")
		require.Equal(t, http.StatusBadRequest, b.get("/jobs?cursor=garbage").status)
	})

	t.Run("JobsCursor", func(t *testing.T) {
		ctx := context.Background()
		base := time.Now().Add(-time.Hour).UTC()
		for i := range pageSize + 5 {
			_, _, err := f.store.JobCreate(ctx, store.JobCreateParams{Job: store.Job{
				Title: fmt.Sprintf("Bulk job %02d", i), Status: schemas.JobDone, CreatedAt: base.Add(time.Duration(i) * time.Second),
			}})
			require.NoError(t, err)
		}
		first := b.page("/jobs?q=bulk")
		rows := all(byID(parseHTML(t, first.body), "jobs"), "tr")
		require.Len(t, rows, pageSize+1, "a full page and the header")
		require.Contains(t, first.body, "Bulk job 54")
		require.NotContains(t, first.body, "Bulk job 04")
		next := ""
		for _, a := range all(parseHTML(t, first.body), "a") {
			if attr(a, "rel") == "next" {
				next = attr(a, "href")
			}
		}
		require.NotEmpty(t, next, "a link to the next page")
		second := b.page(next)
		list := textByID(t, second.body, "jobs")
		for i := range 5 {
			require.Contains(t, list, fmt.Sprintf("Bulk job %02d", i))
		}
		require.NotContains(t, list, "Bulk job 05")
		require.NotContains(t, list, "Rate limiter", "the filter is kept")
		require.NotContains(t, second.body, `rel="next"`, "the last page")
	})

	t.Run("Job", func(t *testing.T) {
		p := b.page("/jobs/" + s.limiter.ID)
		doc := parseHTML(t, p.body)
		var svg *html.Node
		for _, n := range all(doc, "svg") {
			if hasClass(n, "dag") {
				svg = n
			}
		}
		require.NotNil(t, svg, "the task graph")
		var nodes, edges int
		walk(svg, func(n *html.Node) {
			if n.Type == html.ElementNode && n.Data == "g" && hasClass(n, "node") {
				nodes++
			}
			if n.Type == html.ElementNode && n.Data == "path" && hasClass(n, "edge") {
				edges++
			}
		})
		require.Equal(t, 2, nodes)
		require.Equal(t, 1, edges, "impl depends on spec")
		require.Contains(t, text(svg), "spec")
		require.Contains(t, text(svg), "impl")

		spec := textByID(t, p.body, "task-spec")
		require.Contains(t, spec, "1500 tokens")
		require.Contains(t, spec, "$0.0018", "1200 in at $1/M + 300 out at $2/M")
		impl := textByID(t, p.body, "task-impl")
		require.Contains(t, impl, "800 tokens")
		require.Contains(t, impl, "after spec")
		job := textByID(t, p.body, "job")
		require.Contains(t, job, "2 model calls, 2300 tokens")
		require.Contains(t, job, "output_awaiting_review", "the timeline")

		require.Equal(t, http.StatusNotFound, b.get("/jobs/no-such-job").status)
	})

	t.Run("Reviews", func(t *testing.T) {
		p := b.page("/reviews")
		require.Equal(t, "1", textByID(t, p.body, "queue-count"))
		table := byID(parseHTML(t, p.body), "queue-table")
		require.Contains(t, text(table), "impl")
		require.Contains(t, text(table), "Rate limiter")
		require.Equal(t, "0", textByID(t, b.page("/reviews?role=pm").body, "queue-count"))
		require.Equal(t, "1", textByID(t, b.page("/reviews?role=developer").body, "queue-count"))

		p = b.page("/reviews/" + s.output.ID)
		require.Contains(t, textByID(t, p.body, "output-content"), "Implemented the bucket.")
		require.Contains(t, p.body, "limiter.go")
		require.Equal(t, http.StatusNotFound, b.get("/reviews/no-such-output").status)
	})

	t.Run("Memory", func(t *testing.T) {
		list := textByID(t, b.page("/memory").body, "lessons")
		require.Contains(t, list, "Always send Retry-After with a 429.")
		require.Contains(t, list, "Prefer table tests.")
		list = textByID(t, b.page("/memory?q=retry-after").body, "lessons")
		require.Contains(t, list, "Always send Retry-After with a 429.")
		require.NotContains(t, list, "Prefer table tests.")
		list = textByID(t, b.page("/memory?role=all").body, "lessons")
		require.NotContains(t, list, "Retry-After")
		require.Contains(t, list, "Prefer table tests.")

		md := b.page("/memory/MEMORY.md")
		require.Equal(t, "text/markdown; charset=utf-8", md.header.Get("Content-Type"))
		require.Contains(t, md.header.Get("Content-Disposition"), `filename="MEMORY.md"`)
		require.True(t, strings.HasPrefix(md.body, "# MEMORY\n"))
		require.Contains(t, md.body, "Always send Retry-After with a 429.")
		require.Contains(t, md.body, "Prefer table tests.")
	})

	t.Run("DeadLetters", func(t *testing.T) {
		list := textByID(t, b.page("/deadletters").body, "dead-letters")
		require.Contains(t, list, "model returned 500 three times")
		require.Contains(t, textByID(t, b.page("/deadletters?class=exhausted").body, "dead-letters"), "model returned 500")
		require.Contains(t, textByID(t, b.page("/deadletters?class=permanent").body, "dead-letters"), "No dead letter matches.")
		require.Contains(t, textByID(t, b.page("/deadletters?status=discarded").body, "dead-letters"), "No dead letter matches.")

		p := b.page("/deadletters/" + s.deadLetter)
		doc := parseHTML(t, p.body)
		require.Contains(t, text(doc), "model returned 500 three times")
		require.Contains(t, text(doc), "Troupe-Attempt")
		var payload string
		for _, pre := range all(doc, "pre") {
			if hasClass(pre, "payload") {
				payload = text(pre)
			}
		}
		require.Equal(t, "{\n  \"task_id\": \""+s.impl.ID+"\",\n  \"role\": \"developer\"\n}", payload, "the payload, indented")
		require.NotNil(t, byID(doc, "replay"))
		require.Equal(t, http.StatusNotFound, b.get("/deadletters/no-such-dead-letter").status)
	})

	t.Run("Workers", func(t *testing.T) {
		// A worker as the worker package answers the ping.
		sub, err := f.nc.Subscribe(bus.Subjects{Prefix: bus.DefaultPrefix}.WorkersPing(), func(m *nats.Msg) {
			data, _ := json.Marshal(schemas.WorkerInfo{ID: "w-1", Role: "developer", Host: "build-box-7", PID: 4242, Model: "test/model", Concurrency: 2, StartedAt: time.Now()})
			_ = m.Respond(data)
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		require.NoError(t, f.nc.Flush())
		list := textByID(t, b.page("/workers").body, "workers")
		require.Contains(t, list, "1 worker answered.")
		require.Contains(t, list, "build-box-7")
		require.Contains(t, list, "pid 4242")
		require.NotContains(t, list, "consumer unavailable")
	})

	t.Run("Static", func(t *testing.T) {
		for _, path := range []string{"/static/app.js", "/static/app.css", "/static/chroma.css"} {
			p := b.page(path)
			require.NotEmpty(t, p.body, path)
		}
		require.Equal(t, http.StatusNotFound, b.get("/no-such-page").status)
	})
}

// TestLiveEvents: an event published on TROUPE_EVENTS reaches an open
// /events stream; a closed stream lets go of its subscription.
func TestLiveEvents(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/events", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	lines := bufio.NewReader(resp.Body)
	readUntil := func(want string) {
		t.Helper()
		for {
			line, err := lines.ReadString('\n')
			require.NoError(t, err, "waiting for %q", want)
			if strings.TrimRight(line, "\n") == want {
				return
			}
		}
	}
	readUntil(": connected")

	// The stream subscribed before it said so; published on the same
	// connection, the event cannot overtake the subscription.
	ev := schemas.Event{
		ID: "ev-1", JobID: "job-1", TaskID: "task-1", OutputID: "out-1", Kind: schemas.EventOutputAwaitingReview,
		Role: "developer", Revision: 2, Message: "not for browsers", Time: time.Now(),
	}
	data, err := json.Marshal(ev)
	require.NoError(t, err)
	require.NoError(t, f.nc.Publish(bus.Subjects{Prefix: bus.DefaultPrefix}.Event(ev.JobID, ev.Kind), data))
	readUntil("event: job")
	line, err := lines.ReadString('\n')
	require.NoError(t, err)
	payload, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: ")
	require.True(t, ok, line)
	var got liveEvent
	require.NoError(t, json.Unmarshal([]byte(payload), &got))
	require.Equal(t, liveEvent{Kind: ev.Kind, JobID: "job-1", TaskID: "task-1", OutputID: "out-1", Role: "developer", Revision: 2}, got)
	require.NotContains(t, payload, "not for browsers")

	f.dash.live.mu.Lock()
	sub := f.dash.live.sub
	f.dash.live.mu.Unlock()
	require.NotNil(t, sub)
	cancel()
	require.Eventually(t, func() bool {
		f.dash.live.mu.Lock()
		defer f.dash.live.mu.Unlock()
		return len(f.dash.live.clients) == 0 && f.dash.live.sub == nil
	}, 10*time.Second, 10*time.Millisecond, "the last browser gone, the subscription ends")
	require.False(t, sub.IsValid(), "unsubscribed from NATS, not only forgotten")
}

// TestCloseEndsLiveStreams: Close ends open streams at once, so a
// shutdown does not wait on browsers.
func TestCloseEndsLiveStreams(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url+"/events", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	for {
		line, err := lines.ReadString('\n')
		require.NoError(t, err)
		if line == ": connected\n" {
			break
		}
	}
	require.NoError(t, f.dash.Close(ctx))
	_, err = io.ReadAll(lines)
	require.NoError(t, err, "the stream ends cleanly, before the test's deadline")
	require.NoError(t, ctx.Err())
}

// TestRebindingRefused: without credentials the dashboard answers only a
// Host that names this machine, so a page whose name was rebound to
// 127.0.0.1 can neither read it nor post to it; with credentials any Host
// is answered (they protect it).
func TestRebindingRefused(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	open := newAuth(Config{Reviewer: "local"}).middleware(ok)
	for host, want := range map[string]int{
		"127.0.0.1:8080": http.StatusOK, "localhost:8080": http.StatusOK, "[::1]:8080": http.StatusOK, "127.0.0.1": http.StatusOK,
		"evil.example:8080": http.StatusMisdirectedRequest, "evil.example": http.StatusMisdirectedRequest, "10.0.0.5:8080": http.StatusMisdirectedRequest,
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			r := httptest.NewRequest(method, "/", nil)
			r.Host = host
			w := httptest.NewRecorder()
			open.ServeHTTP(w, r)
			if method == http.MethodPost && want == http.StatusOK {
				want = http.StatusForbidden // no CSRF token; but not refused for its Host
			}
			require.Equal(t, want, w.Code, "%s %s", method, host)
		}
	}
	guarded := newAuth(Config{Token: "a-long-dashboard-token", Reviewer: "local"}).middleware(ok)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = "troupe.example.com"
	r.Header.Set("Authorization", "Bearer a-long-dashboard-token")
	w := httptest.NewRecorder()
	guarded.ServeHTTP(w, r)
	require.Equal(t, http.StatusOK, w.Code)
}

// TestSessionKeyIsNotTheToken: the key that signs the cookie every visitor
// gets is random, not derived from the token, so the cookie tells nothing
// about the token; replicas given the same session key accept each
// other's sessions.
func TestSessionKeyIsNotTheToken(t *testing.T) {
	t.Parallel()
	a := newAuth(Config{Token: "a-long-dashboard-token", Reviewer: "local"})
	b := newAuth(Config{Token: "a-long-dashboard-token", Reviewer: "local"})
	require.NotEqual(t, a.key, b.key, "same token, different keys")
	s := a.newSession()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: a.sign(s)})
	_, valid := b.read(r)
	require.False(t, valid)

	shared := []byte("shared-session-key")
	c, d := newAuth(Config{Token: "t", Reviewer: "local", SessionKey: shared}), newAuth(Config{Token: "t", Reviewer: "local", SessionKey: shared})
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: c.sign(s)})
	got, valid := d.read(r)
	require.True(t, valid)
	require.Equal(t, s.Nonce, got.Nonce)
}
