package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// chromium finds a Chromium or Chrome to drive, or skips the test saying
// how to get one (.ci/run installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("TROUPE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium on PATH; .ci/run installs it with apt-get install -y chromium")
	}
	t.Skip("no Chromium on PATH: apt-get install -y chromium (or set TROUPE_CHROMIUM) to run the browser tests")
	return ""
}

// browser starts a headless Chromium and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1360, 900),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelTab)
	ctx, cancelTime := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTime)
	// Any alert, confirm or prompt is a script that ran: fail, and dismiss it.
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			t.Errorf("a dialog opened: %q (a script from model output ran)", d.Message)
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}()
		}
	}), "starting Chromium")
	return ctx
}

// css is a CSS selector.
type css = chromedp.CSS

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

// goTo navigates to url, then runs then. A navigation started while the
// page shown is still navigating (a form's redirect, say) is cut short:
// Chromium reports net::ERR_ABORTED, or the page's context goes away under
// a script. So goTo waits for the page shown to finish loading and tries
// again, a few times, when either happens.
func goTo(t *testing.T, ctx context.Context, url string, then ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	var err error
	for range 5 {
		_, err = chromedp.Run(ctx, chromedp.Poll[bool](`document.readyState === "complete"`))
		if err == nil {
			err = chromedp.Do(ctx, chromedp.Navigate(url))
		}
		if err == nil || !navigatedAway(err) {
			break
		}
		t.Logf("navigating to %s: %v; again", url, err)
		time.Sleep(300 * time.Millisecond)
	}
	require.NoError(t, err, "navigating to %s", url)
	do(t, ctx, then...)
}

// navigatedAway reports whether err is Chromium's way of saying the page
// (or a navigation to it) was replaced by another navigation.
func navigatedAway(err error) bool {
	for _, s := range []string{"ERR_ABORTED", "Cannot find context", "Inspected target navigated"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// waitFor waits until expr is true in the page shown, across the
// navigations that replace the page (and its context) meanwhile.
func waitFor(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	var err error
	for range 20 {
		if _, err = chromedp.Run(ctx, chromedp.Poll[bool](expr)); err == nil || !navigatedAway(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err, "waiting for %s", expr)
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
	require.NoError(t, err, "text of %s", sel)
	return s
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, "evaluating %s", expr)
	return v
}

// shots saves full-page screenshots, for the README.
type shots struct {
	t   *testing.T
	dir string
}

func (s shots) take(ctx context.Context, name string) {
	s.t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(s.t, err, "screenshot %s", name)
	require.NoError(s.t, os.WriteFile(filepath.Join(s.dir, name+".png"), png, 0o644))
}

// TestDashboardReview drives the dashboard in headless Chromium through a
// whole review: open the queue, read an output (whose hostile markup stays
// inert), reject it with feedback, watch the revision arrive without a
// reload, approve it with a lesson by keyboard, find the lesson in Memory,
// and replay a dead letter. It saves a screenshot of every page into
// $TROUPE_SCREENSHOTS (docs/screenshots in CI).
func TestDashboardReview(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, `{"roles": {"developer": {"review": "human"}, "devops": {"maxDeliver": 2, "backoff": ["50ms"]}}}`)
	// The offline model takes a second per call, so the revision arrives
	// after the page that waits for it has loaded.
	d := startDevIn(t, t.TempDir(), []string{"TROUPE_FAULT_PANIC_ON=POISON"}, "--config", cfg, "--offline-latency", "1s")
	require.NotEmpty(t, d.Web, "troupe dev prints the dashboard address:\n%s", d.banner)
	events := d.events("*.*")
	ctx := browser(t)
	// .ci/run sets TROUPE_SCREENSHOTS to docs/screenshots, whose pictures
	// the README shows; elsewhere they go to a temporary directory, so a
	// test run does not change tracked files.
	shot := shots{t: t, dir: os.Getenv("TROUPE_SCREENSHOTS")}
	if shot.dir == "" {
		shot.dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(shot.dir, 0o755))

	hostile := "Build the limiter. <script>window.pwned=1</script> <img src=x onerror=\"window.pwned=2\"> " +
		"<a href=\"javascript:window.pwned=3\">click</a> [more](javascript:window.pwned=4)"
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{
		Title: "Token bucket limiter", Brief: "Per-key limits with clear 429 responses.",
		Tasks: []schemas.PlanTask{
			{Key: "prd", Role: "pm", Instructions: "Write the PRD."},
			{Key: "impl", Role: "developer", Instructions: hostile, DependsOn: []string{"prd"}},
			{Key: "docs", Role: "writer", DependsOn: []string{"impl"}},
		},
	})
	poison := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Deploy script", Tasks: []schemas.PlanTask{
		{Key: "deploy", Role: "devops", Instructions: "This task is POISON."},
	}})
	parked := waitEvent(t, events, func(ev schemas.Event) bool {
		return ev.JobID == job.ID && ev.Kind == schemas.EventOutputAwaitingReview
	})
	item := call[schemas.ReviewItem](d, "reviews.get", schemas.IDRequest{ID: parked.OutputID})
	require.Contains(t, allText(item.Output), "<script>window.pwned=1</script>", "the output carries the hostile markup")

	// Say who reviews: the name is recorded with each decision. The
	// sign-in page shows a viewer too (the machine's user, on loopback):
	// wait for the page that names ada, or a navigation next would cut the
	// sign-in short and review as someone else.
	do(t, ctx,
		chromedp.Navigate(d.Web+"/login"),
		chromedp.SendKeys(css(`input[name="name"]`), "ada"),
		chromedp.Submit(css(`input[name="name"]`)),
	)
	waitFor(t, ctx, `document.querySelector("#viewer")?.textContent === "ada" && document.readyState === "complete"`)

	// The queue, oldest first, and the output.
	row := css(`tr[data-output="` + parked.OutputID + `"]`)
	goTo(t, ctx, d.Web+"/reviews", chromedp.WaitVisible(row))
	queueText := text(t, ctx, `#queue`)
	require.Contains(t, queueText, "Token bucket limiter")
	require.Contains(t, queueText, "impl")
	shot.take(ctx, "review-queue")

	do(t, ctx,
		chromedp.Click(css(`tr[data-output="`+parked.OutputID+`"] a[href^="/reviews/"]`)),
		chromedp.WaitVisible(css(`#decide`)),
	)
	content := text(t, ctx, `#output`)
	require.Equal(t, 0, eval[int](t, ctx, `window.pwned === undefined ? 0 : 1`), "no script from the output ran")
	require.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll("main script, main iframe").length`), "no script or iframe element in the rendered output")
	require.Equal(t, 0, eval[int](t, ctx, `[...document.querySelectorAll("main *")].filter(e => [...e.attributes].some(a => a.name.startsWith("on"))).length`), "no event-handler attribute in the rendered output")
	require.Equal(t, 0, eval[int](t, ctx, `[...document.querySelectorAll("main [href], main [src]")].filter(e => /^\s*javascript:/i.test(e.getAttribute("href") || e.getAttribute("src") || "")).length`), "no javascript: link in the rendered output")
	require.Contains(t, content, "Build the limiter.")
	require.Contains(t, content, "main.go", "the code file is shown")
	shot.take(ctx, "review")

	// Rejecting without feedback is stopped in the page; with it, the
	// decision goes through and the queue shows.
	feedback := "Explain the refill rate and handle bursts."
	do(t, ctx,
		chromedp.Click(css(`#reject`)),
		chromedp.Sleep(300*time.Millisecond),
		chromedp.WaitVisible(css(`#decide`)), // still here: feedback is required
		chromedp.SendKeys(css(`#feedback`), feedback),
		chromedp.Click(css(`#reject`)),
		chromedp.WaitVisible(css(`#queue`)),
	)
	require.Contains(t, text(t, ctx, `.flash`), "Rejected")

	// The revision arrives on the open queue page, without a reload.
	do(t, ctx, chromedp.WaitVisible(css(`body[data-live="on"]`)))
	require.Equal(t, 42, eval[int](t, ctx, `window.troupeMarker = 42`))
	do(t, ctx, chromedp.WaitVisible(css(`tr[data-revision="1"]`)))
	require.Equal(t, 42, eval[int](t, ctx, `window.troupeMarker || 0`), "the page was updated in place, not reloaded")

	// The revision shows its diff; approve it with a lesson, by keyboard.
	lesson := "Document every limiter's burst and refill parameters."
	do(t, ctx,
		chromedp.Click(css(`tr[data-revision="1"] a[href^="/reviews/"]`)),
		chromedp.WaitVisible(css(`#decide`)),
		chromedp.SendKeys(css(`#lessons`), lesson),
		chromedp.SetValue(css(`#scope`), "all"),
	)
	require.Contains(t, text(t, ctx, `main`), "Diff against revision 0")
	shot.take(ctx, "review-revision")
	eval[bool](t, ctx, `document.activeElement.blur(), true`)
	do(t, ctx, chromedp.KeyEvent("a"), chromedp.WaitVisible(css(`.flash`)))
	flash := text(t, ctx, `.flash`)
	require.Contains(t, flash, "Approved")
	require.Contains(t, flash, "1 lesson added to MEMORY")

	done := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobDone, done.Status, done.Reason)
	for _, task := range done.Tasks {
		if task.Key == "impl" {
			require.Len(t, task.Reviews, 2)
			require.Equal(t, "human:ada", task.Reviews[0].Reviewer, "the reviewer's name is recorded")
			require.Equal(t, feedback, task.Reviews[0].Feedback)
			require.Equal(t, "human:ada", task.Reviews[1].Reviewer)
		}
	}

	// The lesson is in Memory.
	goTo(t, ctx, d.Web+"/memory?q=refill", chromedp.WaitVisible(css(`.lesson-row`)))
	memory := text(t, ctx, `#lessons`)
	require.Contains(t, memory, lesson)
	require.Contains(t, memory, "all")
	shot.take(ctx, "memory")

	// The poisoned task is a dead letter; replay it from its page.
	failed := d.waitJobEnd(events, poison.ID)
	require.Equal(t, schemas.JobFailed, failed.Status)
	list := call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{DeadLetterFilter: schemas.DeadLetterFilter{JobID: poison.ID}})
	require.Len(t, list.DeadLetters, 1)
	dl := list.DeadLetters[0]
	link := css(`a[href="/deadletters/` + dl.ID + `"]`)
	goTo(t, ctx, d.Web+"/deadletters", chromedp.WaitVisible(link))
	shot.take(ctx, "dead-letters")
	do(t, ctx, chromedp.Click(link), chromedp.WaitVisible(css(`#replay`)))
	shot.take(ctx, "dead-letter")
	do(t, ctx, chromedp.Click(css(`#replay`)), chromedp.WaitVisible(css(`.flash`)))
	require.Contains(t, text(t, ctx, `.flash`), "Replayed 1 dead letter")
	replayed := call[schemas.DeadLetter](d, "dlq.get", schemas.IDRequest{ID: dl.ID})
	require.Equal(t, schemas.DeadLetterReplayed, replayed.Status)
	require.Equal(t, "dashboard:ada", replayed.ResolvedBy)

	// The other pages, for the README.
	for _, p := range []struct{ path, wait, name string }{
		{"/", `#overview`, "overview"},
		{"/jobs", `#jobs`, "jobs"},
		{"/jobs/" + job.ID, `svg.dag`, "job"},
		{"/workers", `#workers`, "workers"},
	} {
		goTo(t, ctx, d.Web+p.path, chromedp.WaitVisible(css(p.wait)))
		if p.name == "workers" {
			require.Contains(t, text(t, ctx, `#workers`), "6 workers answered", "every role's worker answers the ping")
		}
		shot.take(ctx, p.name)
	}
	goTo(t, ctx, d.Web+"/jobs/"+job.ID, chromedp.WaitVisible(css(`svg.dag`)))
	require.Equal(t, 3, eval[int](t, ctx, `document.querySelectorAll("svg.dag .node.status-promoted").length`), "the DAG colours every promoted task")
}
