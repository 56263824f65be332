package dashboard

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

const pageSize = 50

// pageCursor reads a page's ?cursor (zero values for the first page); on
// a cursor this dashboard did not make it answers 400 and reports false.
func pageCursor(w http.ResponseWriter, q url.Values) (time.Time, string, bool) {
	c := q.Get("cursor")
	if c == "" {
		return time.Time{}, "", true
	}
	t, id, err := bus.DecodeCursor(c)
	if err != nil {
		http.Error(w, "cursor: "+err.Error(), http.StatusBadRequest)
		return time.Time{}, "", false
	}
	return t, id, true
}

// queue is one role's JetStream consumer as the workers see it.
type queue struct {
	Role        string
	Pending     uint64 // waiting to be delivered
	InFlight    int    // delivered, not yet acknowledged
	Redelivered int
	Waiting     int // pull requests of idle workers
	Err         string
}

func (s *Server) queues(ctx context.Context) []queue {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := make([]queue, 0, len(s.cfg.Roles))
	for _, role := range s.cfg.Roles {
		q := queue{Role: role}
		info, err := s.consumerInfo(ctx, role)
		if err != nil {
			q.Err = err.Error()
		} else {
			q.Pending, q.InFlight, q.Redelivered, q.Waiting = info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting
		}
		out = append(out, q)
	}
	return out
}

func (s *Server) consumerInfo(ctx context.Context, role string) (*jetstream.ConsumerInfo, error) {
	c, err := s.js.Consumer(ctx, bus.StreamTasks, bus.WorkerConsumer(role))
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// roleRow is one role on the overview.
type roleRow struct {
	Role                                  string
	Queued, Running, Awaiting, Done, Fail int
	Stat                                  store.RoleStat
	Queue                                 queue
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	jobs, err := s.store.JobCountByStatus(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	counts, err := s.store.TaskCountByRoleStatus(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pending, err := s.store.OutputCount(ctx, schemas.OutputAwaitingReview, "")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	dead, err := s.store.DeadLetterCount(ctx, schemas.DeadLetterOpen)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	stats, err := s.stats.get(ctx, s.store)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	buckets, err := s.store.JobsFinished(ctx, time.Now().Add(-time.Hour), 5*time.Minute)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	queues := s.queues(ctx)
	rows := make([]roleRow, 0, len(s.cfg.Roles))
	for i, role := range s.cfg.Roles {
		row := roleRow{Role: role, Queue: queues[i]}
		for _, c := range counts {
			if c.Role != role {
				continue
			}
			switch c.Status {
			case schemas.TaskQueued:
				row.Queued += c.Count
			case schemas.TaskRunning, schemas.TaskStaged:
				row.Running += c.Count
			case schemas.TaskAwaitingReview:
				row.Awaiting += c.Count
			case schemas.TaskPromoted:
				row.Done += c.Count
			case schemas.TaskFailed, schemas.TaskDeadLettered:
				row.Fail += c.Count
			}
		}
		for _, st := range stats {
			if st.Role == role {
				row.Stat = st
			}
		}
		rows = append(rows, row)
	}
	total := 0
	for _, n := range jobs {
		total += n
	}
	s.render(w, r, "overview", "Overview", map[string]any{
		"Jobs": jobs, "JobTotal": total, "JobStatuses": schemas.JobStatuses,
		"Roles": rows, "PendingReviews": pending, "DeadLetters": dead,
		"Throughput": newBarChart(buckets),
	})
}

// roleStatsTTL is how long the overview reuses the role statistics. They
// aggregate every task and output ever written (tens of milliseconds on
// SQLite at 10,000 jobs, growing with the history) and move slowly, while
// every open overview fetches itself again on each event. The counts
// beside them are read fresh on every request.
const roleStatsTTL = 10 * time.Second

// roleStatsCache holds the latest role statistics.
type roleStatsCache struct {
	mu    sync.Mutex
	at    time.Time
	stats []store.RoleStat
}

// get returns role statistics at most roleStatsTTL old, reading them from
// st when they are older. The read runs outside the lock, so a slow one
// holds up no other request; callers must not change the slice.
func (c *roleStatsCache) get(ctx context.Context, st store.Querier) ([]store.RoleStat, error) {
	c.mu.Lock()
	stats, at := c.stats, c.at
	c.mu.Unlock()
	if stats != nil && time.Since(at) < roleStatsTTL {
		return stats, nil
	}
	now := time.Now()
	stats, err := st.RoleStats(ctx, now.Add(-7*24*time.Hour))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if now.After(c.at) {
		c.stats, c.at = stats, now
	}
	c.mu.Unlock()
	return stats, nil
}

func (s *Server) jobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := store.JobListParams{Status: q.Get("status"), Role: q.Get("role"), Query: strings.TrimSpace(q.Get("q")), Limit: pageSize}
	var ok bool
	if p.Before, p.BeforeID, ok = pageCursor(w, q); !ok {
		return
	}
	jobs, err := s.store.JobList(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	next := ""
	if len(jobs) == p.Limit {
		next = bus.EncodeCursor(jobs[len(jobs)-1].CreatedAt, jobs[len(jobs)-1].ID)
	}
	s.render(w, r, "jobs", "Jobs", map[string]any{
		"Jobs": jobs, "Status": p.Status, "Role": p.Role, "Query": p.Query, "Next": next,
		"Statuses": schemas.JobStatuses, "Roles": s.cfg.Roles, "First": q.Get("cursor") == "",
	})
}

// taskView is one task on a job's page, with everything that happened to it.
type taskView struct {
	store.Task
	Outputs []store.Output
	Reviews []store.Review
	Calls   []store.ModelCall
	Tokens  int64
	Cost    float64
	Priced  bool
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	job, err := s.store.JobGetByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		notFound(w, "job", id)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	tasks, err := s.store.TaskListByJob(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	outputs, err := s.store.OutputListByJob(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	reviews, err := s.store.ReviewListByJob(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	calls, err := s.store.ModelCallListByJob(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	events, err := s.store.EventListByJob(ctx, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	views := make([]taskView, len(tasks))
	byID := map[string]*taskView{}
	for i, t := range tasks {
		views[i] = taskView{Task: t}
		byID[t.ID] = &views[i]
	}
	for _, o := range outputs {
		if v := byID[o.TaskID]; v != nil {
			o.Files = review.MaskPaths(o.Files, s.cfg.Limits)
			v.Outputs = append(v.Outputs, o)
		}
	}
	for _, rv := range reviews {
		if v := byID[rv.TaskID]; v != nil {
			v.Reviews = append(v.Reviews, rv)
		}
	}
	var tokens int64
	var cost float64
	priced := false
	for _, c := range calls {
		tokens += c.PromptTokens + c.CompletionTokens
		v := byID[c.TaskID]
		if v != nil {
			v.Calls = append(v.Calls, c)
			v.Tokens += c.PromptTokens + c.CompletionTokens
		}
		if p, ok := s.cfg.Prices[c.Model]; ok {
			x := p.Cost(c.PromptTokens, c.CompletionTokens)
			cost, priced = cost+x, true
			if v != nil {
				v.Cost, v.Priced = v.Cost+x, true
			}
		}
	}
	s.renderPage(w, r, "job", page{Title: job.Title, Nav: "jobs", Data: map[string]any{
		"Job": job, "Tasks": views, "DAG": layoutDAG(tasks), "Events": events,
		"Tokens": tokens, "Cost": cost, "Priced": priced, "Calls": len(calls),
	}})
}

// reviewRow is one output in the review queue.
type reviewRow struct {
	store.Output
	JobTitle string
	TaskKey  string
}

func (s *Server) reviews(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	p := store.OutputListParams{Status: schemas.OutputAwaitingReview, Role: q.Get("role"), Limit: pageSize}
	var ok bool
	if p.After, p.AfterID, ok = pageCursor(w, q); !ok {
		return
	}
	outs, err := s.store.OutputList(ctx, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	total, err := s.store.OutputCount(ctx, schemas.OutputAwaitingReview, p.Role)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rows := make([]reviewRow, len(outs))
	titles := map[string]string{}
	for i, o := range outs {
		rows[i] = reviewRow{Output: o}
		title, ok := titles[o.JobID]
		if !ok {
			if j, err := s.store.JobGetByID(ctx, o.JobID); err == nil {
				title = j.Title
			}
			titles[o.JobID] = title
		}
		rows[i].JobTitle = title
		if t, err := s.store.TaskGetByID(ctx, o.TaskID); err == nil {
			rows[i].TaskKey = t.Key
		}
	}
	next := ""
	if len(outs) == p.Limit {
		next = bus.EncodeCursor(outs[len(outs)-1].CreatedAt, outs[len(outs)-1].ID)
	}
	s.render(w, r, "reviews", "Review queue", map[string]any{
		"Rows": rows, "Total": total, "Role": p.Role, "Roles": s.cfg.Roles, "Next": next,
	})
}

// fileView is one file of an output, with its diff against the previous revision.
type fileView struct {
	schemas.File
	Status  string // new | changed | unchanged | removed
	Diff    []diffLine
	Changed bool
}

func (s *Server) review(w http.ResponseWriter, r *http.Request) {
	s.showReview(w, r, "", http.StatusOK)
}

// showReview renders one output for a decision, with errMsg above the form
// when a decision failed.
func (s *Server) showReview(w http.ResponseWriter, r *http.Request, errMsg string, status int) {
	ctx := r.Context()
	id := r.PathValue("id")
	out, err := s.store.OutputGetByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		notFound(w, "output", id)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	task, err := s.store.TaskGetByID(ctx, out.TaskID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	job, err := s.store.JobGetByID(ctx, out.JobID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	history, err := s.store.ReviewListByJob(ctx, out.JobID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	history = slices.DeleteFunc(history, func(rv store.Review) bool { return rv.TaskID != out.TaskID })
	var prev *store.Output
	if out.Revision > 0 {
		p, err := s.store.OutputGetByTaskRevision(ctx, out.TaskID, out.Revision-1)
		if err == nil {
			prev = &p
		} else if !errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, err)
			return
		}
	}
	// The checks see the output as it is; the page shows it, and the
	// revision it replaces, with every secret masked.
	checks := review.Checks(out, s.cfg.Limits)
	out = review.MaskSecrets(out, s.cfg.Limits)
	if prev != nil {
		masked := review.MaskSecrets(*prev, s.cfg.Limits)
		prev = &masked
	}
	files, contentDiff := compare(out, prev)
	next, err := s.store.OutputList(ctx, store.OutputListParams{Status: schemas.OutputAwaitingReview, After: out.CreatedAt, AfterID: out.ID, Limit: 1})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	nextID := ""
	if len(next) > 0 {
		nextID = next[0].ID
	}
	s.renderPage(w, r, "review", page{Title: "Review " + task.Key, Nav: "reviews", Error: errMsg, Status: status, Data: map[string]any{
		"Output": out, "Task": task, "Job": job, "Previous": prev, "Files": files, "ContentDiff": contentDiff,
		"History": history, "Checks": checks, "Next": nextID,
		"Waiting": out.Status == schemas.OutputAwaitingReview,
		"Form":    r.PostForm,
	}})
}

// compare sets each file of out beside the same path in prev.
func compare(out store.Output, prev *store.Output) ([]fileView, []diffLine) {
	files := make([]fileView, 0, len(out.Files))
	if prev == nil {
		for _, f := range out.Files {
			files = append(files, fileView{File: f, Status: "new"})
		}
		return files, nil
	}
	before := map[string]string{}
	for _, f := range prev.Files {
		before[f.Path] = f.Content
	}
	for _, f := range out.Files {
		old, had := before[f.Path]
		delete(before, f.Path)
		if !had {
			files = append(files, fileView{File: f, Status: "new"})
			continue
		}
		d, changed := lineDiff(old, f.Content)
		st := "unchanged"
		if changed {
			st = "changed"
		}
		files = append(files, fileView{File: f, Status: st, Diff: d, Changed: changed})
	}
	for _, f := range prev.Files {
		if _, gone := before[f.Path]; gone {
			files = append(files, fileView{File: f, Status: "removed"})
		}
	}
	cd, changed := lineDiff(prev.Content, out.Content)
	if !changed {
		cd = nil
	}
	return files, cd
}

// decide records a person's decision through the review service.
func (s *Server) decide(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v := viewerOf(r)
	d := schemas.ReviewDecision{
		OutputID: id, Decision: r.PostFormValue("decision"),
		Reviewer: v.Name, Feedback: strings.TrimSpace(r.PostFormValue("feedback")),
	}
	scope := r.PostFormValue("scope")
	for line := range strings.Lines(r.PostFormValue("lessons")) {
		if text := strings.TrimSpace(line); text != "" {
			d.Lessons = append(d.Lessons, schemas.Lesson{Text: text, Scope: scope})
		}
	}
	if d.Decision != "promote" && d.Decision != "reject" {
		s.showReview(w, r, "choose approve or reject", http.StatusBadRequest)
		return
	}
	var rev schemas.Review
	if err := s.call(r.Context(), "reviews.decide", d, &rev); err != nil {
		var apiErr *bus.APIError
		status := http.StatusBadGateway
		if errors.As(err, &apiErr) {
			status = http.StatusBadRequest
			if apiErr.Code == "conflict" {
				status = http.StatusConflict
			}
		}
		s.showReview(w, r, err.Error(), status)
		return
	}
	s.log.Info().Str("output_id", id).Str("decision", d.Decision).Str("reviewer", rev.Reviewer).Msg("decision from the dashboard")
	verb := map[string]string{"promote": "Approved", "reject": "Rejected"}[d.Decision]
	flash := verb + " " + shortID(id)
	if len(d.Lessons) > 0 {
		flash += "; " + plural(len(d.Lessons), "lesson") + " added to MEMORY"
	}
	target := "/reviews"
	if next := r.PostFormValue("next"); next != "" && next != id {
		target = "/reviews/" + url.PathEscape(next)
	}
	s.redirectFlash(w, r, target, flash)
}

func (s *Server) memory(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := store.LessonListParams{Scope: q.Get("role"), Query: strings.TrimSpace(q.Get("q")), Limit: 100}
	var ok bool
	if p.Before, p.BeforeID, ok = pageCursor(w, q); !ok {
		return
	}
	lessons, err := s.store.LessonList(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	next := ""
	if len(lessons) == p.Limit {
		next = bus.EncodeCursor(lessons[len(lessons)-1].CreatedAt, lessons[len(lessons)-1].ID)
	}
	s.render(w, r, "memory", "Memory", map[string]any{
		"Lessons": lessons, "Role": p.Scope, "Query": p.Query, "Roles": append([]string{"all"}, s.cfg.Roles...), "Next": next,
	})
}

// memoryFile downloads MEMORY.md as troupe memory export writes it.
func (s *Server) memoryFile(w http.ResponseWriter, r *http.Request) {
	var all []schemas.Lesson
	p := store.LessonListParams{Limit: 500}
	for {
		rows, err := s.store.LessonList(r.Context(), p)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, l := range rows {
			all = append(all, l.Schema())
		}
		if len(rows) < p.Limit {
			break
		}
		last := rows[len(rows)-1]
		p.Before, p.BeforeID = last.CreatedAt, last.ID
	}
	w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="MEMORY.md"`)
	_, _ = w.Write(review.RenderMemory(all))
}

func dlqFilter(q url.Values) schemas.DeadLetterFilter {
	return schemas.DeadLetterFilter{
		Status: q.Get("status"), Source: q.Get("source"), Class: q.Get("class"),
		Query: strings.TrimSpace(q.Get("q")), JobID: q.Get("job_id"),
	}
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := dlqFilter(q)
	if !q.Has("status") {
		f.Status = schemas.DeadLetterOpen
	}
	p := store.DeadLetterListParams{Status: f.Status, Source: f.Source, Class: f.Class, Query: f.Query, JobID: f.JobID, Limit: pageSize}
	var ok bool
	if p.Before, p.BeforeID, ok = pageCursor(w, q); !ok {
		return
	}
	dls, err := s.store.DeadLetterList(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	next := ""
	if len(dls) == p.Limit {
		next = bus.EncodeCursor(dls[len(dls)-1].CreatedAt, dls[len(dls)-1].ID)
	}
	s.render(w, r, "deadletters", "Dead letters", map[string]any{
		"DeadLetters": dls, "Filter": f, "Next": next,
		"Statuses": []string{schemas.DeadLetterOpen, schemas.DeadLetterReplayed, schemas.DeadLetterDiscarded},
		"Classes":  []string{"permanent", "transient", "exhausted"},
	})
}

func (s *Server) deadLetter(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := s.store.DeadLetterGetByID(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		notFound(w, "dead letter", id)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	replays, err := s.store.DeadLetterList(r.Context(), store.DeadLetterListParams{ReplayOf: id, Limit: 20})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.renderPage(w, r, "deadletter", page{Title: "Dead letter " + shortID(id), Nav: "deadletters", Data: map[string]any{
		"D": d, "Replays": replays,
	}})
}

// actOnDeadLetters replays or discards the chosen dead letters, or every
// open one the filter selects, through the orchestrator.
func (s *Server) actOnDeadLetters(w http.ResponseWriter, r *http.Request) {
	action := r.PostFormValue("action")
	if action != "replay" && action != "discard" {
		http.Error(w, "action: want replay or discard", http.StatusBadRequest)
		return
	}
	by := "dashboard:" + viewerOf(r).Name
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, "/deadletters") || safeNext(back) != back {
		back = "/deadletters"
	}
	var reqs []schemas.DeadLetterAction
	if r.PostFormValue("all") == "1" {
		f := dlqFilter(r.PostForm)
		f.Status = ""
		reqs = append(reqs, schemas.DeadLetterAction{Filter: &f, By: by})
	} else {
		for _, id := range r.PostForm["id"] {
			reqs = append(reqs, schemas.DeadLetterAction{ID: id, By: by})
		}
	}
	if len(reqs) == 0 {
		s.redirectFlash(w, r, back, "choose at least one dead letter")
		return
	}
	n := 0
	for _, req := range reqs {
		var reply schemas.DeadLetterActionReply
		if err := s.call(r.Context(), "dlq."+action, req, &reply); err != nil {
			s.redirectFlash(w, r, back, action+" failed after "+strconv.Itoa(n)+": "+err.Error())
			return
		}
		n += reply.Count
	}
	verb := map[string]string{"replay": "Replayed", "discard": "Discarded"}[action]
	s.redirectFlash(w, r, back, verb+" "+plural(n, "dead letter"))
}

// redirectFlash redirects to target with a flash message for the next
// page, signed for the session (auth.flashQuery).
func (s *Server) redirectFlash(w http.ResponseWriter, r *http.Request, target, flash string) {
	sep := "?"
	if strings.Contains(target, "?") {
		sep = "&"
	}
	http.Redirect(w, r, target+sep+s.auth.flashQuery(viewerOf(r).session, flash), http.StatusSeeOther)
}

// roleWorkers is one role on the workers page.
type roleWorkers struct {
	Queue   queue
	Workers []schemas.WorkerInfo
}

func (s *Server) workers(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	found, err := bus.PingWorkers(ctx, s.nc, s.subj, 300*time.Millisecond)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	queues := s.queues(ctx)
	rows := make([]roleWorkers, len(queues))
	for i, q := range queues {
		rows[i].Queue = q
		for _, wi := range found {
			if wi.Role == q.Role {
				rows[i].Workers = append(rows[i].Workers, wi)
			}
		}
	}
	s.render(w, r, "workers", "Workers", map[string]any{"Roles": rows, "Total": len(found)})
}
