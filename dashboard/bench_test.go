package dashboard_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/dashboard"
	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/postgres"
	"github.com/troupe-dev/troupe/store/postgres/postgrestest"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// BenchmarkPages answers the requirement "with 10,000 jobs and 1,000
// pending reviews in the store, every page answers fast": it seeds a store
// of that size once per backend (SQLite always, PostgreSQL when
// TROUPE_TEST_DATABASE_URL is set), then times every page through
// Server.Handler with httptest, no network between. Each sub-benchmark
// reports p50-ms and p95-ms; a table of p50, p95 and max per page is
// printed at the end. Seeding is not timed. Run it with
//
//	go test -run '^$' -bench Pages -benchtime 50x ./dashboard/
//
// The workers page waits 300ms for ping replies by design, so its time is
// that wait plus the rest of the page.
func BenchmarkPages(b *testing.B) {
	type backend struct {
		name string
		open func(testing.TB) store.Store
	}
	backends := []backend{{"sqlite", func(tb testing.TB) store.Store { return sqlite.NewTestStore(tb) }}}
	if os.Getenv(postgrestest.TestDatabaseURLEnv) != "" {
		backends = append(backends, backend{"postgres", func(tb testing.TB) store.Store { return postgrestest.NewTestStore(tb) }})
	} else {
		fmt.Printf("PostgreSQL skipped: set %s=postgres://... to time it too\n", postgrestest.TestDatabaseURLEnv)
	}
	var rows []benchRow
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			env := newBenchEnv(b, be.open(b))
			for _, p := range env.pages {
				b.Run(p.name, func(b *testing.B) {
					rows = append(rows, env.measure(b, be.name, p))
				})
			}
		})
	}
	// Printed rather than logged: benchmark logs show only with -v.
	if len(rows) > 0 {
		fmt.Print(benchTable(rows))
	}
}

// benchPage is one page to time, and a string its body must hold.
type benchPage struct {
	name, path, want string
}

// benchRow is what one page measured.
type benchRow struct {
	backend, page, path string
	n                   int
	p50, p95, max       time.Duration
}

// benchEnv is a dashboard over a seeded store.
type benchEnv struct {
	handler http.Handler
	cookie  *http.Cookie
	pages   []benchPage
}

func newBenchEnv(b *testing.B, st store.Store) *benchEnv {
	b.Helper()
	ctx := context.Background()

	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Dir: b.TempDir(), Port: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	nc, js, err := bus.Connect(srv.ClientURL(), "dashboard-bench", zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	if err := (bus.Topology{Roles: schemas.Roles}).Ensure(ctx, js); err != nil {
		b.Fatal(err)
	}
	// A worker per role answers the ping, so the workers page has rows.
	for i, role := range schemas.Roles {
		info, _ := json.Marshal(schemas.WorkerInfo{
			ID: fmt.Sprintf("%s-%d", role, i), Role: role, Host: "bench", PID: 1000 + i,
			Model: benchModels[i%len(benchModels)], Concurrency: 4, StartedAt: time.Now().Add(-time.Hour),
		})
		sub, err := nc.Subscribe(bus.Subjects{Prefix: bus.DefaultPrefix}.WorkersPing(), func(m *nats.Msg) { _ = m.Respond(info) })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = sub.Unsubscribe() })
	}

	start := time.Now()
	seed := seedBench(b, st)
	fmt.Printf("seeded %s in %s: %d jobs, %d tasks, %d outputs (%d awaiting review), %d reviews, %d model calls, %d events, %d lessons, %d dead letters, %.0f MB of output text\n",
		b.Name(), time.Since(start).Round(time.Millisecond), seed.jobs, seed.tasks, seed.outputs, seed.awaiting, seed.reviews,
		seed.calls, seed.events, seed.lessons, seed.deadLetters, float64(seed.bytes)/1e6)

	prices := map[string]config.Price{}
	for i, m := range benchModels {
		prices[m] = config.Price{Input: float64(1 + i), Output: float64(5 + 5*i)}
	}
	d, err := dashboard.New(dashboard.Config{Logger: zerolog.Nop(), Prices: prices}, st, nc, js)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close(context.Background()) })
	env := &benchEnv{handler: d.Handler()}

	// A browser keeps its session cookie; so do the timed requests.
	first := env.get("/")
	if first.Code != http.StatusOK {
		b.Fatalf("GET /: %d", first.Code)
	}
	for _, c := range first.Result().Cookies() {
		env.cookie = c
	}

	// The second page of jobs is the link the first page offers.
	jobs := env.get("/jobs").Body.String()
	next := regexp.MustCompile(`<a rel="next" href="([^"]+)"`).FindStringSubmatch(jobs)
	if next == nil {
		b.Fatal("GET /jobs: no link to the next page")
	}
	env.pages = []benchPage{
		{"overview", "/", "Overview"},
		{"jobs", "/jobs", "older »"},
		{"jobs_done_developer", "/jobs?status=done&role=developer", "older »"},
		{"jobs_search", "/jobs?q=webhook", "webhook"},
		{"jobs_page2", html.UnescapeString(next[1]), "older »"},
		{"job", "/jobs/" + seed.jobID, seed.jobTitle},
		{"reviews", "/reviews", "more »"},
		{"reviews_developer", "/reviews?role=developer", "more »"},
		{"review_diff", "/reviews/" + seed.reviewID, `class="diff"`},
		{"memory", "/memory", "older »"},
		{"memory_search", "/memory?q=retry", "retry"},
		{"memory_file", "/memory/MEMORY.md", "# MEMORY"},
		{"deadletters", "/deadletters", "older »"},
		{"deadletter", "/deadletters/" + seed.deadLetterID, seed.deadLetterReplay},
		{"workers", "/workers", "bench"},
	}
	return env
}

func (e *benchEnv) request(path string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if e.cookie != nil {
		req.AddCookie(e.cookie)
	}
	return req
}

func (e *benchEnv) get(path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, e.request(path))
	return rec
}

// measure times GET p.path b.N times, after one untimed request that
// checks the page is the one meant.
func (e *benchEnv) measure(b *testing.B, backend string, p benchPage) benchRow {
	rec := e.get(p.path)
	if rec.Code != http.StatusOK {
		b.Fatalf("GET %s: %d %s", p.path, rec.Code, rec.Body.String())
	}
	if !strings.Contains(rec.Body.String(), p.want) {
		b.Fatalf("GET %s: the page does not hold %q", p.path, p.want)
	}
	var lat []time.Duration
	for b.Loop() {
		req := e.request(p.path)
		rec := httptest.NewRecorder()
		start := time.Now()
		e.handler.ServeHTTP(rec, req)
		lat = append(lat, time.Since(start))
		if rec.Code != http.StatusOK {
			b.Fatalf("GET %s: %d", p.path, rec.Code)
		}
	}
	slices.Sort(lat)
	row := benchRow{backend: backend, page: p.name, path: p.path, n: len(lat),
		p50: percentile(lat, 50), p95: percentile(lat, 95), max: lat[len(lat)-1]}
	b.ReportMetric(ms(row.p50), "p50-ms")
	b.ReportMetric(ms(row.p95), "p95-ms")
	return row
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func benchTable(rows []benchRow) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-8s  %-20s  %5s  %9s  %9s  %9s  %s\n", "backend", "page", "n", "p50", "p95", "max", "path")
	for _, r := range rows {
		path := r.path
		if len(path) > 60 {
			path = path[:57] + "..."
		}
		note := ""
		if r.page == "workers" {
			note = " (includes the 300ms wait for ping replies)"
		}
		fmt.Fprintf(&sb, "%-8s  %-20s  %5d  %7.2fms  %7.2fms  %7.2fms  %s%s\n",
			r.backend, r.page, r.n, ms(r.p50), ms(r.p95), ms(r.max), path, note)
	}
	return sb.String()
}

// The seeded store. Its shape: jobs spread over 30 days, each planned as
// pm → architect → developer → (tester, writer); the newest 1,500 hold the
// running ones, 1,000 of them with an output awaiting review, the others
// mostly done. A third of the tasks had an output rejected before one was
// promoted, so revision 1 outputs have a revision 0 to be compared with.
const (
	benchJobs        = 10_000
	benchRecent      = 1_500 // the newest jobs, where the running ones are
	benchAwaiting    = 1_000 // running jobs with an output awaiting review
	benchRunning     = 100   // running jobs with a task at work
	benchPlanning    = 50
	benchFailed      = 400
	benchCancelled   = 300
	benchBudget      = 150
	benchLessons     = 500
	benchDeadLetters = 200
	benchReplays     = 20  // dead letters that are replays of another
	benchBatch       = 100 // jobs per transaction
)

type jobKind int

const (
	kindDone jobKind = iota
	kindAwaiting
	kindRunning
	kindPlanning
	kindFailed
	kindCancelled
	kindBudget
)

// benchKinds returns the kind of each job, oldest first.
func benchKinds() []jobKind {
	r := rand.New(rand.NewPCG(1, 2))
	var older, recent []jobKind
	add := func(s *[]jobKind, k jobKind, n int) {
		for range n {
			*s = append(*s, k)
		}
	}
	add(&recent, kindAwaiting, benchAwaiting)
	add(&recent, kindRunning, benchRunning)
	add(&recent, kindPlanning, benchPlanning)
	add(&recent, kindDone, benchRecent-len(recent))
	add(&older, kindFailed, benchFailed)
	add(&older, kindCancelled, benchCancelled)
	add(&older, kindBudget, benchBudget)
	add(&older, kindDone, benchJobs-benchRecent-len(older))
	r.Shuffle(len(recent), func(i, j int) { recent[i], recent[j] = recent[j], recent[i] })
	r.Shuffle(len(older), func(i, j int) { older[i], older[j] = older[j], older[i] })
	return append(older, recent...)
}

var benchPipeline = []struct {
	key, role string
	deps      []string
}{
	{"prd", "pm", nil},
	{"design", "architect", []string{"prd"}},
	{"implement", "developer", []string{"design"}},
	{"test", "tester", []string{"implement"}},
	{"docs", "writer", []string{"implement"}},
}

var benchModels = []string{"anthropic/claude-sonnet-4-5", "openai/gpt-4.1", "ollama/qwen2.5-coder:32b"}

var benchReviewers = []string{"alice", "bob", "carol", "dmitri"}

var benchVerbs = []string{
	"Add rate limiting to", "Build a CSV export for", "Fix flaky retries in", "Document",
	"Harden authentication in", "Add audit events to", "Speed up", "Split the monolith part of",
	"Add feature flags to", "Migrate to Postgres 16:",
}

var benchObjects = []struct{ name, pkg, typ string }{
	{"the billing API", "billing", "Limiter"},
	{"the webhook dispatcher", "webhooks", "Dispatcher"},
	{"user onboarding", "onboarding", "Flow"},
	{"the search index", "search", "Indexer"},
	{"the admin console", "admin", "Console"},
	{"invoice PDFs", "invoices", "Renderer"},
	{"the mobile sync service", "mobilesync", "Syncer"},
	{"notification emails", "notify", "Mailer"},
	{"the reporting pipeline", "reports", "Pipeline"},
	{"team permissions", "perms", "Checker"},
}

var benchSentences = []string{
	"The service keeps one counter per API key and resets it at the start of every window.",
	"Requests over the limit get a 429 with a Retry-After header that says when the window ends.",
	"We keep the state in memory first and move it to Redis only if one replica is not enough.",
	"Every decision is logged with the key's hash, never the key itself, so logs stay safe to share.",
	"The migration runs in batches of a thousand rows so that it never holds a lock for long.",
	"A retry backs off exponentially with jitter, starting at 200ms and stopping after five attempts.",
	"Operators can change the limits at runtime through the admin console without a deploy.",
	"The export streams rows as they are read, so memory stays flat however large the account is.",
	"Tests cover the boundaries: the last allowed request, the first refused one and the reset.",
	"The dispatcher signs each webhook with HMAC-SHA256 and the receiver checks the signature.",
	"Failed deliveries go to a dead-letter table after the last retry, with the response body kept.",
	"The index is rebuilt in the background and swapped in atomically when it is complete.",
	"We measured p95 latency before and after: the change costs less than a millisecond per call.",
	"The feature flag defaults to off, and the rollout goes 1%, 10%, 50% and then everyone.",
	"Nothing here changes the public API; clients see the new behaviour only through the headers.",
	"The runbook gains a section on raising a customer's limit during an incident.",
	"Configuration is read once at start; a SIGHUP reloads it without dropping connections.",
	"The new table has an index on (account_id, created_at) to serve the dashboard's query.",
	"Users see a progress bar while the export runs and get an email with a link when it is done.",
	"We chose a fixed window over a sliding log because it needs one counter per key, not a list.",
	"Clock skew between replicas is bounded by NTP; a window may be a few milliseconds long.",
	"The permission check runs before any row is read, so a denied request costs almost nothing.",
	"Error messages name the field that failed validation and what a valid value looks like.",
	"The PDF renderer runs in a sandbox with no network and a thirty-second time limit.",
	"Metrics: requests allowed, requests refused, and the number of keys currently tracked.",
	"A retry storm after an outage is damped by the jitter and by the per-key limit itself.",
	"The design keeps the old endpoint for one release and logs every caller that still uses it.",
	"Sync conflicts are resolved last-writer-wins per field, with the losing value kept in history.",
	"Emails are queued and sent by a worker, so a slow mail server never blocks a request.",
	"The reporting job is idempotent: running it twice for one day gives the same rows.",
}

var benchLessonTexts = []string{
	"Always say which HTTP status a refused request gets, and test the header that explains it.",
	"Name the retry policy explicitly: attempts, backoff, jitter and what happens after the last retry.",
	"Acceptance criteria must be measurable; \"fast\" is not a criterion, \"p95 under 100ms\" is.",
	"Do not log secrets or API keys, not even truncated; log a hash when a key must be identified.",
	"A migration that rewrites a large table must run in batches and say how long each lock is held.",
	"Every new table needs the index its first query uses, named in the design.",
	"Tests must cover the boundary values, not only the happy path.",
	"README usage examples must run as written; copy them from a real terminal session.",
	"Prefer a feature flag with a staged rollout over a big-bang switch.",
	"When a retry is added, add a test where every attempt fails and check the final error.",
	"Say what the rollback is before saying how to deploy.",
	"Keep the PRD's user stories apart from the requirements they lead to.",
}

// benchPlanned is one job with every row it leads to, in the order they
// are written.
type benchPlanned struct {
	idx      int
	kind     jobKind
	job      store.Job
	tasks    []store.Task
	outputs  []store.Output
	reviews  []store.Review
	calls    []store.ModelCall
	events   []store.Event
	dead     []store.Task // dead-lettered tasks, for the dead letters
	bytes    int
	awaiting int
}

func (p *benchPlanned) write(ctx context.Context, q store.Querier) error {
	if _, _, err := q.JobCreate(ctx, store.JobCreateParams{Job: p.job, Tasks: p.tasks}); err != nil {
		return err
	}
	for _, o := range p.outputs {
		if _, _, err := q.OutputStage(ctx, o); err != nil {
			return err
		}
	}
	for _, r := range p.reviews {
		if err := q.ReviewInsert(ctx, r); err != nil {
			return err
		}
	}
	if err := q.ModelCallInsert(ctx, p.calls); err != nil {
		return err
	}
	return q.EventInsert(ctx, p.events)
}

// shift moves every time of the job by d.
func (p *benchPlanned) shift(d time.Duration) {
	p.job.CreatedAt, p.job.UpdatedAt = p.job.CreatedAt.Add(d), p.job.UpdatedAt.Add(d)
	for i := range p.tasks {
		p.tasks[i].CreatedAt, p.tasks[i].UpdatedAt = p.tasks[i].CreatedAt.Add(d), p.tasks[i].UpdatedAt.Add(d)
	}
	for i := range p.outputs {
		p.outputs[i].CreatedAt = p.outputs[i].CreatedAt.Add(d)
	}
	for i := range p.reviews {
		p.reviews[i].CreatedAt = p.reviews[i].CreatedAt.Add(d)
	}
	for i := range p.calls {
		p.calls[i].CreatedAt = p.calls[i].CreatedAt.Add(d)
	}
	for i := range p.events {
		p.events[i].Time = p.events[i].Time.Add(d)
	}
}

// fate is what became of a task.
type fate int

const (
	fatePending fate = iota
	fateQueued
	fateRunning
	fatePromoted
	fateAwaiting
	fateFailed
	fateDeadLettered
	fateCancelled
)

// benchFates picks each task's fate for a job of kind k.
func benchFates(r *rand.Rand, k jobKind) []fate {
	n := len(benchPipeline)
	f := make([]fate, n)
	upTo := func(s int, at, after fate) {
		for i := range f {
			switch {
			case i < s:
				f[i] = fatePromoted
			case i == s:
				f[i] = at
			default:
				f[i] = after
			}
		}
	}
	switch k {
	case kindDone:
		upTo(n, fatePromoted, fatePromoted)
	case kindAwaiting:
		s := r.IntN(n)
		upTo(s, fateAwaiting, fatePending)
		if s == 3 { // tester and writer run side by side
			f[4] = fateRunning
		}
	case kindRunning:
		upTo(r.IntN(n), []fate{fateQueued, fateRunning}[r.IntN(2)], fatePending)
	case kindFailed:
		// Most failures are dead letters: a worker that gave up.
		upTo(1+r.IntN(n-1), []fate{fateFailed, fateFailed, fateDeadLettered, fateDeadLettered, fateDeadLettered}[r.IntN(5)], fateCancelled)
	case kindCancelled, kindBudget:
		upTo(r.IntN(n), fateCancelled, fateCancelled)
	case kindPlanning:
		return nil
	}
	return f
}

// benchPassing are the checks of an output that passed every rule, by role.
var benchPassing = sync.OnceValue(func() map[string][]schemas.Check {
	out := map[string][]schemas.Check{}
	for _, st := range benchPipeline {
		doc, files := benchFiles(rand.New(rand.NewPCG(0, 0)), st.role, benchObjects[0], "x", 0)
		out[st.role] = review.CheckRules(st.role, doc, files, review.Limits{})
	}
	return out
})

// planJob builds job i of kind k, created at created; times after now are
// moved back so the job's last step happened a minute ago.
func planJob(i int, k jobKind, created, now time.Time) *benchPlanned {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	obj := benchObjects[r.IntN(len(benchObjects))]
	title := fmt.Sprintf("%s %s (#%d)", benchVerbs[r.IntN(len(benchVerbs))], obj.name, i)
	status := map[jobKind]string{
		kindDone: schemas.JobDone, kindAwaiting: schemas.JobRunning, kindRunning: schemas.JobRunning,
		kindPlanning: schemas.JobPlanning, kindFailed: schemas.JobFailed, kindCancelled: schemas.JobCancelled,
		kindBudget: schemas.JobBudgetExceeded,
	}[k]
	p := &benchPlanned{idx: i, kind: k, job: store.Job{
		ID: uuid.NewString(), Title: title, Brief: benchBrief(r, title), Status: status,
		BudgetTokens: int64(200_000 + 50_000*r.IntN(8)), CreatedAt: created,
	}}
	last := created
	at := func(t time.Time) time.Time {
		if t.After(last) {
			last = t
		}
		return t
	}
	event := func(t time.Time, kind string, task *store.Task, outputID string, rev int, msg string) {
		e := store.Event{ID: uuid.NewString(), JobID: p.job.ID, OutputID: outputID, Kind: kind, Revision: rev, Message: msg, Time: at(t)}
		if task != nil {
			e.TaskID, e.Role = task.ID, task.Role
		}
		p.events = append(p.events, e)
	}
	event(created, schemas.EventJobSubmitted, nil, "", 0, "submitted by the CLI")
	fates := benchFates(r, k)
	if fates != nil {
		event(created.Add(40*time.Second), schemas.EventJobPlanned, nil, "", 0, fmt.Sprintf("%d tasks", len(fates)))
	}

	ends := map[string]time.Time{}
	for n, f := range fates {
		st := benchPipeline[n]
		start := created.Add(45 * time.Second)
		for _, d := range st.deps {
			if ends[d].After(start) {
				start = ends[d]
			}
		}
		t := store.Task{
			ID: uuid.NewString(), Key: st.key, Role: st.role, DependsOn: st.deps,
			Instructions: benchInstructions(r, st.role, title), CreatedAt: created,
		}
		revs := 0
		switch f {
		case fatePromoted:
			revs = []int{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2}[r.IntN(12)]
		case fateAwaiting:
			revs = []int{0, 0, 1}[r.IntN(3)]
		case fateFailed:
			revs = 2
		}
		if (f != fatePending && f != fateCancelled) || (f == fateCancelled && r.IntN(3) == 0) {
			event(start, schemas.EventTaskQueued, &t, "", 0, "")
		}
		tm := start
		model := benchModels[r.IntN(len(benchModels))]
		producing := f == fatePromoted || f == fateAwaiting || f == fateFailed
		for rev := 0; producing && rev <= revs; rev++ {
			latency := time.Duration(8+r.IntN(150)) * time.Second
			content, files := benchFiles(rand.New(rand.NewPCG(uint64(i), uint64(n))), st.role, obj, title, rev)
			prompt := benchPrompt(st.role, t.Instructions, p.job.Brief, rev, t.Feedback)
			o := store.Output{
				ID: uuid.NewString(), TaskID: t.ID, JobID: p.job.ID, Role: st.role, Revision: rev,
				Content: content, Files: files, Model: model,
				PromptTokens: int64(len(prompt)/4 + r.IntN(4000)), CompletionTokens: int64((len(content) + len(files[0].Content)) / 4),
				LatencyMS: latency.Milliseconds(), Prompt: prompt, CreatedAt: at(tm.Add(latency)),
			}
			p.bytes += len(content) + len(prompt)
			for _, file := range files {
				p.bytes += len(file.Content)
			}
			if r.IntN(20) == 0 {
				p.calls = append(p.calls, store.ModelCall{
					ID: uuid.NewString(), JobID: p.job.ID, TaskID: t.ID, Role: st.role, Revision: rev, Model: model,
					PromptTokens: o.PromptTokens, LatencyMS: 2100, Outcome: "retry",
					Error: "429 Too Many Requests: rate limited, retrying in 2s", CreatedAt: at(tm.Add(2 * time.Second)),
				})
			}
			p.calls = append(p.calls, store.ModelCall{
				ID: uuid.NewString(), JobID: p.job.ID, TaskID: t.ID, Role: st.role, Revision: rev, Model: model,
				PromptTokens: o.PromptTokens, CompletionTokens: o.CompletionTokens, LatencyMS: o.LatencyMS,
				Outcome: "ok", CreatedAt: o.CreatedAt,
			})
			t.Attempts++
			event(o.CreatedAt, schemas.EventOutputStaged, &t, o.ID, rev, fmt.Sprintf("%d files", len(files)))

			final := rev == revs
			if final && f == fateAwaiting {
				o.Status = schemas.OutputAwaitingReview
				o.Checks = review.CheckRules(st.role, content, files, review.Limits{})
				event(o.CreatedAt.Add(time.Second), schemas.EventOutputAwaitingReview, &t, o.ID, rev, "waiting for a person")
				p.outputs = append(p.outputs, o)
				p.awaiting++
				tm = o.CreatedAt.Add(time.Second)
				break
			}
			rv := store.Review{
				ID: uuid.NewString(), OutputID: o.ID, TaskID: t.ID, JobID: p.job.ID,
				Reviewer: "auto", Checks: benchPassing()[st.role], CreatedAt: o.CreatedAt.Add(2 * time.Second),
			}
			if final && f == fatePromoted {
				o.Status, rv.Decision = schemas.OutputPromoted, "promote"
				if r.IntN(2) == 0 {
					rv.Reviewer = benchReviewers[r.IntN(len(benchReviewers))]
					rv.CreatedAt = o.CreatedAt.Add(time.Duration(60+r.IntN(600)) * time.Second)
				}
				event(at(rv.CreatedAt), schemas.EventOutputPromoted, &t, o.ID, rev, "promoted by "+rv.Reviewer)
			} else {
				o.Status, rv.Decision = schemas.OutputRejected, "reject"
				rv.Reviewer = benchReviewers[r.IntN(len(benchReviewers))]
				rv.CreatedAt = o.CreatedAt.Add(time.Duration(60+r.IntN(600)) * time.Second)
				rv.Feedback = benchSentences[r.IntN(len(benchSentences))] + " Please address this and keep the rest."
				if r.IntN(3) == 0 {
					rv.Lessons = []schemas.Lesson{{Text: benchLessonTexts[r.IntN(len(benchLessonTexts))], Scope: st.role}}
				}
				t.Feedback = rv.Feedback
				event(at(rv.CreatedAt), schemas.EventOutputRejected, &t, o.ID, rev, "rejected by "+rv.Reviewer)
			}
			p.outputs = append(p.outputs, o)
			p.reviews = append(p.reviews, rv)
			tm = rv.CreatedAt
		}
		t.Revision = revs
		t.UpdatedAt = tm
		switch f {
		case fatePending:
			t.Status, t.UpdatedAt = schemas.TaskPending, created
		case fateQueued:
			t.Status = schemas.TaskQueued
		case fateRunning:
			t.Status, t.Attempts = schemas.TaskRunning, 1
			t.UpdatedAt = at(start.Add(5 * time.Second))
		case fatePromoted:
			t.Status = schemas.TaskPromoted
		case fateAwaiting:
			t.Status = schemas.TaskAwaitingReview
		case fateFailed:
			t.Status, t.Reason = schemas.TaskFailed, "rejected 3 times: giving up"
			event(tm, schemas.EventTaskFailed, &t, "", revs, t.Reason)
		case fateDeadLettered:
			t.Status, t.Attempts, t.Reason = schemas.TaskDeadLettered, 10, "max deliveries reached: upstream model timed out"
			for a := range 3 {
				p.calls = append(p.calls, store.ModelCall{
					ID: uuid.NewString(), JobID: p.job.ID, TaskID: t.ID, Role: st.role, Model: model,
					PromptTokens: 3000, LatencyMS: 60_000, Outcome: "error",
					Error: "context deadline exceeded after 60s", CreatedAt: at(start.Add(time.Duration(a+1) * time.Minute)),
				})
			}
			t.UpdatedAt = at(start.Add(4 * time.Minute))
			event(t.UpdatedAt, schemas.EventTaskDeadLettered, &t, "", 0, t.Reason)
			p.dead = append(p.dead, t)
		case fateCancelled:
			t.Status = schemas.TaskCancelled
		}
		ends[st.key] = t.UpdatedAt
		p.tasks = append(p.tasks, t)
	}
	switch k {
	case kindDone:
		event(last.Add(time.Second), schemas.EventJobDone, nil, "", 0, "every task promoted")
	case kindFailed:
		for _, t := range p.tasks {
			if t.Status == schemas.TaskFailed || t.Status == schemas.TaskDeadLettered {
				p.job.Reason = "task " + t.Key + " failed: " + t.Reason
			}
		}
		event(last.Add(time.Second), schemas.EventJobFailed, nil, "", 0, p.job.Reason)
	case kindCancelled:
		p.job.Reason = "cancelled by " + benchReviewers[r.IntN(len(benchReviewers))]
		event(last.Add(time.Minute), schemas.EventJobCancelled, nil, "", 0, p.job.Reason)
	case kindBudget:
		p.job.Reason = fmt.Sprintf("budget of %d tokens exceeded", p.job.BudgetTokens)
		event(last.Add(time.Second), schemas.EventJobBudgetExceeded, nil, "", 0, p.job.Reason)
	}
	p.job.UpdatedAt = last
	if limit := now.Add(-time.Minute); last.After(limit) {
		p.shift(limit.Sub(last))
	}
	return p
}

func benchPick(r *rand.Rand, n int) string {
	var sb strings.Builder
	for i := range n {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(benchSentences[r.IntN(len(benchSentences))])
	}
	return sb.String()
}

func benchBrief(r *rand.Rand, title string) string {
	return "# " + title + "\n\n" + benchPick(r, 3) + "\n\n## Constraints\n\n- " + benchPick(r, 1) +
		"\n- " + benchPick(r, 1) + "\n- " + benchPick(r, 1) + "\n\n" + benchPick(r, 2) + "\n"
}

func benchInstructions(r *rand.Rand, role, title string) string {
	file, headings := review.RequiredSections(role)
	return fmt.Sprintf("Write %s for \"%s\" with the sections %s.\n\n%s\n", file, title, strings.Join(headings, ", "), benchPick(r, 2))
}

func benchPrompt(role, instructions, brief string, rev int, feedback string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "You are the %s of a software team. Answer with files only.\n\n## Brief\n\n%s\n## Task\n\n%s\n## MEMORY\n\n", role, brief, instructions)
	for i := range 4 {
		sb.WriteString("- " + benchLessonTexts[(len(role)+i)%len(benchLessonTexts)] + "\n")
	}
	if rev > 0 {
		fmt.Fprintf(&sb, "\n## Feedback on revision %d\n\n%s\n", rev-1, feedback)
	}
	return sb.String()
}

// benchFiles returns an output's summary and files. r is seeded by job and
// task alone, so the revisions of a task differ in a few lines only.
func benchFiles(r *rand.Rand, role string, obj struct{ name, pkg, typ string }, title string, rev int) (string, []schemas.File) {
	pick := func() string {
		v := r.IntN(1 << 20)
		i := v % len(benchSentences)
		if rev > 0 && v%4 == 0 {
			i = (i + 7*rev) % len(benchSentences)
		}
		return benchSentences[i]
	}
	para := func(sb *strings.Builder, n int) {
		for i := range n {
			if i > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(pick())
		}
		sb.WriteString("\n\n")
	}
	bullets := func(sb *strings.Builder, n int) {
		for range n {
			sb.WriteString("- " + pick() + "\n")
		}
		sb.WriteString("\n")
	}

	var summary strings.Builder
	fmt.Fprintf(&summary, "## Summary\n\n")
	para(&summary, 3)
	bullets(&summary, 4)
	if rev > 0 {
		fmt.Fprintf(&summary, "Revision %d addresses the reviewer's feedback.\n", rev)
	}

	name, headings := review.RequiredSections(role)
	var doc strings.Builder
	fmt.Fprintf(&doc, "# %s\n\n", title)
	para(&doc, 2)
	for _, h := range append(headings, "## Risks", "## Open questions") {
		doc.WriteString(h + "\n\n")
		para(&doc, 3)
		bullets(&doc, 4)
	}
	if rev > 0 {
		fmt.Fprintf(&doc, "## Changes in revision %d\n\n", rev)
		bullets(&doc, 2)
	}
	files := []schemas.File{{Path: name, Content: doc.String()}}
	repl := strings.NewReplacer("PKG", obj.pkg, "TYPE", obj.typ, "LIMIT", fmt.Sprint(100+50*rev),
		"WINDOW", []string{"time.Minute", "30 * time.Second", "10 * time.Second"}[min(rev, 2)],
		"EXTRA", []string{"", "\n\t// Sweep is called by a ticker; it must not hold the lock for long.", "\n\t// Revision 2: sweep at most 1000 windows per call."}[min(rev, 2)])
	switch role {
	case "developer":
		files = append(files, schemas.File{Path: "internal/" + obj.pkg + "/" + obj.pkg + ".go", Content: repl.Replace(benchGoFile)})
	case "tester":
		files = append(files, schemas.File{Path: "internal/" + obj.pkg + "/" + obj.pkg + "_test.go", Content: repl.Replace(benchGoTest)})
	}
	return summary.String(), files
}

const benchGoFile = `// Package PKG counts requests per key in fixed windows.
package PKG

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrLimit is returned when a key goes over its limit.
var ErrLimit = errors.New("PKG: limit reached")

// Config configures a TYPE.
type Config struct {
	// Limit is how many requests a key may make per window. Defaults to LIMIT.
	Limit int
	// Window is the length of a window. Defaults to WINDOW.
	Window time.Duration
}

// TYPE counts requests per key in fixed windows.
type TYPE struct {
	cfg     Config
	mu      sync.Mutex
	windows map[string]*window
}

type window struct {
	start time.Time
	count int
}

// NewTYPE returns a TYPE with cfg's defaults filled in.
func NewTYPE(cfg Config) *TYPE {
	if cfg.Limit <= 0 {
		cfg.Limit = LIMIT
	}
	if cfg.Window <= 0 {
		cfg.Window = WINDOW
	}
	return &TYPE{cfg: cfg, windows: map[string]*window{}}
}

// Allow reports whether key may make one more request now.
func (x *TYPE) Allow(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("allow %s: %w", key, err)
	}
	now := time.Now()
	x.mu.Lock()
	defer x.mu.Unlock()
	w, ok := x.windows[key]
	if !ok || now.Sub(w.start) >= x.cfg.Window {
		w = &window{start: now}
		x.windows[key] = w
	}
	if w.count >= x.cfg.Limit {
		return fmt.Errorf("allow %s: %w", key, ErrLimit)
	}
	w.count++
	return nil
}

// Sweep forgets the windows that ended before now and returns how many.
func (x *TYPE) Sweep(now time.Time) int {EXTRA
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for key, w := range x.windows {
		if now.Sub(w.start) >= x.cfg.Window {
			delete(x.windows, key)
			n++
		}
	}
	return n
}
`

const benchGoTest = `package PKG

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestAllowUpToTheLimit(t *testing.T) {
	x := NewTYPE(Config{Limit: LIMIT, Window: WINDOW})
	ctx := context.Background()
	for i := 0; i < LIMIT; i++ {
		if err := x.Allow(ctx, "k"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if err := x.Allow(ctx, "k"); !errors.Is(err, ErrLimit) {
		t.Fatalf("request over the limit: got %v, want ErrLimit", err)
	}
}

func TestKeysAreApart(t *testing.T) {
	x := NewTYPE(Config{Limit: 1})
	ctx := context.Background()
	if err := x.Allow(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := x.Allow(ctx, "b"); err != nil {
		t.Fatalf("another key: %v", err)
	}
}

func TestSweep(t *testing.T) {EXTRA
	x := NewTYPE(Config{Limit: 1, Window: time.Millisecond})
	_ = x.Allow(context.Background(), "a")
	if n := x.Sweep(time.Now().Add(time.Second)); n != 1 {
		t.Fatalf("swept %d windows, want 1", n)
	}
}

func TestCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewTYPE(Config{}).Allow(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}
`

// benchSeeded is what seeding wrote, and the rows the pages show.
type benchSeeded struct {
	jobs, tasks, outputs, awaiting, reviews, calls, events, lessons, deadLetters, bytes int

	jobID, jobTitle  string // a done job whose tasks had revisions
	jobIdx           int
	reviewID         string // an output of revision 1 awaiting review, early in the queue
	reviewAt         time.Time
	deadLetterID     string // a dead letter that was replayed
	deadLetterReplay string // the id of its replay
	rejects          []store.Review
	dead             []benchDead
}

type benchDead struct {
	idx  int
	task store.Task
}

func (s *benchSeeded) add(p *benchPlanned) {
	s.jobs++
	s.tasks += len(p.tasks)
	s.outputs += len(p.outputs)
	s.awaiting += p.awaiting
	s.reviews += len(p.reviews)
	s.calls += len(p.calls)
	s.events += len(p.events)
	s.bytes += p.bytes
	revised := false
	for _, o := range p.outputs {
		revised = revised || o.Revision > 0
		if o.Status == schemas.OutputAwaitingReview && o.Revision == 1 && (s.reviewID == "" || o.CreatedAt.Before(s.reviewAt)) {
			s.reviewID, s.reviewAt = o.ID, o.CreatedAt
		}
	}
	if p.kind == kindDone && revised && p.idx > s.jobIdx {
		s.jobID, s.jobTitle, s.jobIdx = p.job.ID, p.job.Title, p.idx
	}
	for _, rv := range p.reviews {
		if rv.Decision == "reject" {
			s.rejects = append(s.rejects, rv)
		}
	}
	for _, t := range p.dead {
		s.dead = append(s.dead, benchDead{p.idx, t})
	}
}

// seedBench fills st, batch by batch in transactions, from a few
// goroutines: building a batch overlaps writing another.
func seedBench(tb testing.TB, st store.Store) *benchSeeded {
	tb.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	kinds := benchKinds()
	oldest := now.Add(-30 * 24 * time.Hour)
	step := (30*24*time.Hour - 10*time.Minute) / benchJobs

	// SQLite's default page cache (2 MB) makes a bulk load read the
	// indexes it writes from the file again and again: a big one while
	// seeding. Then the store is as a long-running one would be: the
	// default cache, and the WAL checkpointed into the database.
	if lite, ok := st.(*sqlite.Store); ok {
		if _, err := lite.DB().ExecContext(ctx, `PRAGMA cache_size = -262144`); err != nil {
			tb.Fatal(err)
		}
		defer func() {
			for _, pragma := range []string{`PRAGMA cache_size = -2000`, `PRAGMA wal_checkpoint(TRUNCATE)`} {
				if _, err := lite.DB().ExecContext(ctx, pragma); err != nil {
					tb.Fatal(err)
				}
			}
		}()
	}

	var (
		mu       sync.Mutex
		seed     = &benchSeeded{}
		firstErr error
		wg       sync.WaitGroup
	)
	batches := make(chan int)
	for range runtime.GOMAXPROCS(0) + 2 {
		wg.Go(func() {
			for from := range batches {
				plans := make([]*benchPlanned, 0, benchBatch)
				for i := from; i < min(from+benchBatch, benchJobs); i++ {
					created := oldest.Add(time.Duration(i)*step + time.Duration(i%977)*time.Millisecond)
					plans = append(plans, planJob(i, kinds[i], created, now))
				}
				err := st.InTx(ctx, func(q store.Querier) error {
					for _, p := range plans {
						if err := p.write(ctx, q); err != nil {
							return fmt.Errorf("job %d: %w", p.idx, err)
						}
					}
					return nil
				})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				for _, p := range plans {
					seed.add(p)
				}
				mu.Unlock()
			}
		})
	}
	for from := 0; from < benchJobs; from += benchBatch {
		batches <- from
	}
	close(batches)
	wg.Wait()
	if firstErr != nil {
		tb.Fatalf("seeding: %v", firstErr)
	}

	// Lessons come from rejections, spread over the last two weeks.
	r := rand.New(rand.NewPCG(3, 4))
	slices.SortFunc(seed.rejects, func(a, b store.Review) int { return a.CreatedAt.Compare(b.CreatedAt) })
	lessons := make([]store.Lesson, 0, benchLessons)
	for i := range benchLessons {
		rv := seed.rejects[len(seed.rejects)-1-i*len(seed.rejects)/(4*benchLessons)]
		scope := benchPipeline[r.IntN(len(benchPipeline))].role
		if r.IntN(4) == 0 {
			scope = "all"
		}
		lessons = append(lessons, store.Lesson{
			ID: uuid.NewString(), Text: benchLessonTexts[r.IntN(len(benchLessonTexts))] + " " + benchPick(r, 1),
			Scope: scope, ReviewID: rv.ID, JobID: rv.JobID,
			CreatedAt: now.Add(-time.Duration(r.Int64N(int64(14 * 24 * time.Hour)))),
		})
	}
	if err := st.LessonInsert(ctx, lessons); err != nil {
		tb.Fatalf("seeding lessons: %v", err)
	}
	seed.lessons = len(lessons)

	// Dead letters: the dead-lettered tasks, some replayed (and one replay
	// dead-lettered again), some discarded, the rest open.
	slices.SortFunc(seed.dead, func(a, b benchDead) int { return cmp.Compare(a.idx, b.idx) })
	if len(seed.dead) < benchDeadLetters-benchReplays {
		tb.Fatalf("seeding: %d dead-lettered tasks, want %d", len(seed.dead), benchDeadLetters-benchReplays)
	}
	dls := make([]store.DeadLetter, 0, benchDeadLetters)
	for i, d := range seed.dead[:benchDeadLetters-benchReplays] {
		payload, _ := json.MarshalIndent(map[string]any{
			"task_id": d.task.ID, "job_id": d.task.JobID, "key": d.task.Key, "role": d.task.Role,
			"revision": d.task.Revision, "instructions": d.task.Instructions, "depends_on": d.task.DependsOn,
		}, "", "  ")
		dl := store.DeadLetter{
			ID: uuid.NewString(), Source: bus.WorkerConsumer(d.task.Role), Subject: "troupe.tasks." + d.task.Role,
			Payload: string(payload), Headers: map[string]string{"Nats-Msg-Id": d.task.ID + ":0", "Troupe-Attempt": "10"},
			Reason: d.task.Reason, Class: []string{"exhausted", "transient", "permanent"}[i%3], Attempts: 10,
			StreamSeq: uint64(1000 + i), CreatedAt: d.task.UpdatedAt, Status: schemas.DeadLetterOpen,
			TaskID: d.task.ID, JobID: d.task.JobID, Stream: bus.StreamTasks,
		}
		switch {
		case i < benchReplays:
			dl.Status, dl.ResolvedBy, dl.ResolvedAt = schemas.DeadLetterReplayed, "dashboard:alice", dl.CreatedAt.Add(time.Hour)
			replay := dl
			replay.ID, replay.ReplayOf, replay.Status, replay.ResolvedBy, replay.ResolvedAt = uuid.NewString(), dl.ID, schemas.DeadLetterOpen, "", time.Time{}
			replay.CreatedAt = dl.CreatedAt.Add(2 * time.Hour)
			dls = append(dls, replay)
			if seed.deadLetterID == "" {
				seed.deadLetterID, seed.deadLetterReplay = dl.ID, replay.ID
			}
		case i%10 == 9:
			dl.Status, dl.ResolvedBy, dl.ResolvedAt = schemas.DeadLetterDiscarded, "cli:bob", dl.CreatedAt.Add(time.Hour)
		}
		dls = append(dls, dl)
	}
	err := st.InTx(ctx, func(q store.Querier) error {
		for _, d := range dls {
			if _, err := q.DeadLetterInsert(ctx, d); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("seeding dead letters: %v", err)
	}
	seed.deadLetters = len(dls)

	// A live PostgreSQL has statistics: autovacuum analyses tables after
	// bulk writes. Without them the planner guesses, so do what it would.
	if pg, ok := st.(*postgres.Store); ok {
		if _, err := pg.DB().ExecContext(ctx, `VACUUM ANALYZE jobs, tasks, outputs, reviews, lessons, events, dead_letters, model_calls`); err != nil {
			tb.Fatalf("analysing: %v", err)
		}
	}
	if seed.jobID == "" || seed.reviewID == "" || seed.deadLetterID == "" {
		tb.Fatal("seeding: no job, output or dead letter to show")
	}
	return seed
}
