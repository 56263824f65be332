package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
)

// client talks to Troupe over its NATS API only, so it works the same
// against troupe dev and a cluster.
type client struct {
	nc      *nats.Conn
	url     string
	subj    bus.Subjects
	timeout time.Duration
}

// clientFlags are the flags of every client command.
type clientFlags struct {
	common
	json    bool
	timeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	c.common.register(fs)
	fs.BoolVar(&c.json, "json", false, "print JSON instead of text")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for each reply")
}

func (c *clientFlags) connect() (*client, error) {
	cfg, _, err := c.load()
	if err != nil {
		return nil, err
	}
	opts, err := bus.ConnectOptions(cfg.NATS)
	if err != nil {
		return nil, err
	}
	// Permissions violations end a request at once, with the subject.
	opts = append(opts, nats.Name("troupe-cli"), nats.Timeout(5*time.Second), nats.ErrorHandler(bus.AsyncErrors(zerolog.Nop())))
	nc, err := nats.Connect(cfg.NATS.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w (is troupe dev running? set --nats-url or TROUPE_NATS_URL)", config.RedactDSN(cfg.NATS.URL), err)
	}
	return &client{nc: nc, url: config.RedactDSN(cfg.NATS.URL), subj: bus.Subjects{Prefix: cfg.NATS.Prefix}, timeout: c.timeout}, nil
}

// call sends req to the endpoint and decodes the reply into out.
func (c *client) call(ctx context.Context, endpoint string, req any, out any) error {
	return c.callWithin(ctx, c.timeout, endpoint, req, out)
}

// claimed is the name a flag gives for who acts: what it says where the
// connection has no NATS user; with one, only when it was given (the
// service records the NATS user, and refuses another name).
func claimed(fs *flag.FlagSet, c *client, name, value string) string {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	if bus.UserOf(c.nc) != "" && !given {
		return ""
	}
	return value
}

// callWithin is call with its own timeout.
func (c *client) callWithin(ctx context.Context, timeout time.Duration, endpoint string, req any, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// An acting endpoint goes on <endpoint>.<user>, which records who acts.
	err := bus.Request(ctx, c.nc, c.subj.APIAs(endpoint, bus.UserOf(c.nc)), req, out)
	var apiErr *bus.APIError
	switch {
	case err == nil || errors.As(err, &apiErr):
		return err
	case bus.IsNoResponders(err):
		return fmt.Errorf("nothing answers %s on %s: is Troupe running on this NATS server? (set --nats-url or TROUPE_NATS_URL to the URL troupe dev printed)", c.subj.API(endpoint), c.url)
	case bus.IsDenied(err):
		return fmt.Errorf("%s: %w: this NATS user may not use it; use credentials that may (troupe nats-config: client reads and submits, reviewer also decides reviews and acts on dead letters)", endpoint, err)
	default:
		return fmt.Errorf("%s: %w", endpoint, err)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// taskFlag collects --task key:role[:instructions[:dep,dep]].
type taskFlag []schemas.PlanTask

func (t *taskFlag) String() string { return "" }
func (t *taskFlag) Set(v string) error {
	parts := strings.SplitN(v, ":", 3)
	if len(parts) < 2 {
		return fmt.Errorf("%q: want key:role[:instructions[:dep,dep]]", v)
	}
	pt := schemas.PlanTask{Key: parts[0], Role: parts[1]}
	if len(parts) == 3 {
		// Instructions may hold colons; a last segment that is a list of
		// keys is the dependencies.
		pt.Instructions = parts[2]
		if i := strings.LastIndex(parts[2], ":"); i >= 0 && depList.MatchString(parts[2][i+1:]) {
			pt.Instructions, pt.DependsOn = parts[2][:i], strings.Split(parts[2][i+1:], ",")
		}
	}
	*t = append(*t, pt)
	return nil
}

var depList = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*(,[a-z0-9][a-z0-9_-]*)*$`)

func runSubmit(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "submit", "submit [FILE.json | -] [--title T] [--brief B] [--task key:role[:instructions[:deps]]]... [--wait]")
	var cf clientFlags
	cf.register(fs)
	title := fs.String("title", "", "the job's title (overrides the file's)")
	brief := fs.String("brief", "", "the job's goal (overrides the file's)")
	idem := fs.String("idempotency-key", "", "submitting again with the same key returns the same job")
	budget := fs.Int64("max-tokens", 0, "the job's token budget")
	var tasks taskFlag
	fs.Var(&tasks, "task", "a task of an explicit plan, key:role[:instructions[:dep,dep]] (repeatable); none means the default plan")
	wait := fs.Bool("wait", false, "follow the job until it ends; exit 1 when it fails or is cancelled")
	batch := fs.String("batch", "", "submit every job of a JSON Lines file (- for standard input), one submission per line")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *batch != "" {
		if len(pos) > 0 || *title != "" || *brief != "" || *idem != "" || *budget > 0 || len(tasks) > 0 || *wait {
			return errors.New("--batch takes the jobs from its file: no FILE, --title, --brief, --idempotency-key, --max-tokens, --task or --wait beside it")
		}
		return submitBatch(ctx, e, cf, *batch)
	}
	var body []byte
	if len(pos) > 0 {
		if pos[0] == "-" {
			body, err = io.ReadAll(e.stdin)
		} else {
			body, err = os.ReadFile(pos[0])
		}
		if err != nil {
			return fmt.Errorf("reading the submission: %w", err)
		}
	}
	if *title != "" || *brief != "" || *idem != "" || *budget > 0 || len(tasks) > 0 || body == nil {
		// Merge flags into the document, keeping whatever else it has.
		doc := map[string]any{}
		if body != nil {
			if err := json.Unmarshal(body, &doc); err != nil {
				return fmt.Errorf("%s: invalid JSON: %w", pos[0], err)
			}
		}
		if *title != "" {
			doc["title"] = *title
		}
		if *brief != "" {
			doc["brief"] = *brief
		}
		if *idem != "" {
			doc["idempotency_key"] = *idem
		}
		if *budget > 0 {
			doc["budget"] = map[string]any{"max_tokens": *budget}
		}
		if len(tasks) > 0 {
			doc["tasks"] = tasks
		}
		if body, err = json.Marshal(doc); err != nil {
			return err
		}
	}
	c, err := cf.connect()
	if err != nil {
		return err
	}
	defer c.nc.Close()
	// Subscribe before submitting, so --wait sees the job's first events.
	var events chan *nats.Msg
	if *wait {
		events = make(chan *nats.Msg, 4096)
		sub, err := c.nc.ChanSubscribe(c.subj.Event("*", "*"), events)
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
	}
	var job schemas.Job
	if err := c.call(ctx, "jobs.submit", body, &job); err != nil {
		return err
	}
	if !*wait {
		if cf.json {
			return printJSON(e.stdout, job)
		}
		fmt.Fprintf(e.stdout, "job %s %s (%d tasks)\n", job.ID, job.Status, len(job.Tasks))
		return nil
	}
	if !cf.json {
		fmt.Fprintf(e.stdout, "job %s submitted: %s\n", job.ID, term(job.Title))
	}
	final, err := follow(ctx, e, c, job, events, cf.json)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(e.stderr, "stopped following; job %s keeps running (troupe jobs show %s)\n", job.ID, job.ID)
		return exitError{code: 130}
	}
	if err != nil {
		return err
	}
	if cf.json {
		if err := printJSON(e.stdout, final); err != nil {
			return err
		}
	}
	if final.Status != schemas.JobDone {
		return exitError{code: 1}
	}
	return nil
}

// follow prints the job's progress from its events until it ends, and
// returns the job as it ended.
func follow(ctx context.Context, e *env, c *client, job schemas.Job, events <-chan *nats.Msg, quiet bool) (schemas.Job, error) {
	keys := map[string]string{}
	for _, t := range job.Tasks {
		keys[t.ID] = t.Key
	}
	// Poll the job as well: an event can be lost to a reconnect.
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return job, ctx.Err()
		case m := <-events:
			var ev schemas.Event
			if json.Unmarshal(m.Data, &ev) != nil || ev.JobID != job.ID {
				continue
			}
			if !quiet {
				printEvent(e.stdout, ev, keys)
			}
			switch ev.Kind {
			case schemas.EventJobDone, schemas.EventJobFailed, schemas.EventJobCancelled, schemas.EventJobBudgetExceeded:
			default:
				continue
			}
		case <-tick.C:
		}
		var cur schemas.Job
		if err := c.call(ctx, "jobs.get", schemas.IDRequest{ID: job.ID}, &cur); err != nil {
			return job, err
		}
		job = cur
		switch job.Status {
		case schemas.JobDone, schemas.JobFailed, schemas.JobCancelled, schemas.JobBudgetExceeded:
			if !quiet {
				fmt.Fprintf(e.stdout, "job %s %s", job.ID, job.Status)
				if job.Reason != "" {
					fmt.Fprintf(e.stdout, ": %s", term(job.Reason))
				}
				fmt.Fprintln(e.stdout)
			}
			return job, nil
		}
	}
}

func printEvent(w io.Writer, ev schemas.Event, keys map[string]string) {
	what := ev.Kind
	if k := keys[ev.TaskID]; k != "" {
		what = fmt.Sprintf("%-15s %-10s rev %d  %s", term(k), term(ev.Role), ev.Revision, ev.Kind)
	}
	fmt.Fprintf(w, "%s  %s  %s\n", ev.Time.Local().Format("15:04:05"), term(what), short(ev.Message, 100))
}

func runJobs(ctx context.Context, e *env, args []string) error {
	return sub(ctx, e, "jobs", args, map[string]func(context.Context, *env, []string) error{
		"ls": func(ctx context.Context, e *env, args []string) error {
			var req schemas.ListRequest
			return clientCommand(e, "jobs ls", "jobs ls [--status S] [--query Q] [--limit N] [--cursor C]", args, func(fs *flag.FlagSet) {
				fs.StringVar(&req.Status, "status", "", "only jobs with this status")
				fs.StringVar(&req.Query, "query", "", "only jobs whose title contains this")
				fs.IntVar(&req.Limit, "limit", 20, "jobs per page")
				fs.StringVar(&req.Cursor, "cursor", "", "the next page's cursor")
			}, func(c *client, cf clientFlags, _ []string) error {
				var list schemas.JobList
				if err := c.call(ctx, "jobs.list", req, &list); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, list)
				}
				printJobList(e.stdout, list)
				return nil
			})
		},
		"show": func(ctx context.Context, e *env, args []string) error {
			return withID(ctx, e, "jobs show", args, func(c *client, cf clientFlags, id string) error {
				var job schemas.Job
				if err := c.call(ctx, "jobs.get", schemas.IDRequest{ID: id}, &job); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, job)
				}
				printJob(e.stdout, job)
				return nil
			})
		},
		"cancel": func(ctx context.Context, e *env, args []string) error {
			return withID(ctx, e, "jobs cancel", args, func(c *client, cf clientFlags, id string) error {
				var job schemas.Job
				if err := c.call(ctx, "jobs.cancel", schemas.IDRequest{ID: id}, &job); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, job)
				}
				fmt.Fprintf(e.stdout, "job %s %s\n", job.ID, job.Status)
				return nil
			})
		},
	})
}

// clientCommand parses a client command's flags (the common ones and
// those flags adds), connects, and hands over: the one place where client
// commands start.
func clientCommand(e *env, name, synopsis string, args []string, flags func(fs *flag.FlagSet), run func(c *client, cf clientFlags, pos []string) error) error {
	fs := newFlags(e, name, synopsis)
	var cf clientFlags
	cf.register(fs)
	if flags != nil {
		flags(fs)
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	c, err := cf.connect()
	if err != nil {
		return err
	}
	defer c.nc.Close()
	return run(c, cf, pos)
}

// withID runs a client command that takes one id.
func withID(_ context.Context, e *env, name string, args []string, fn func(c *client, cf clientFlags, id string) error) error {
	return clientCommand(e, name, name+" ID", args, nil, func(c *client, cf clientFlags, pos []string) error {
		if len(pos) != 1 {
			fmt.Fprintf(e.stderr, "troupe %s: want exactly one ID\n", name)
			return errUsage
		}
		return fn(c, cf, pos[0])
	})
}

func printJobList(w io.Writer, list schemas.JobList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tCREATED\tTITLE")
	for _, j := range list.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", term(j.ID), j.Status, j.CreatedAt.Local().Format(time.DateTime), term(j.Title))
	}
	tw.Flush()
	if list.NextCursor != "" {
		fmt.Fprintf(w, "more: --cursor %s\n", term(list.NextCursor))
	}
}

func printJob(w io.Writer, j schemas.Job) {
	fmt.Fprintf(w, "Job %s  %s\n  title:   %s\n", term(j.ID), j.Status, term(j.Title))
	if j.Brief != "" {
		fmt.Fprintf(w, "  brief:   %s\n", short(j.Brief, 200))
	}
	if j.Reason != "" {
		fmt.Fprintf(w, "  reason:  %s\n", term(j.Reason))
	}
	if t := j.Totals; t != nil {
		fmt.Fprintf(w, "  tasks:   %d/%d promoted\n  tokens:  %d prompt + %d completion in %d model call(s)",
			t.Promoted, t.Tasks, t.PromptTokens, t.CompletionTokens, t.Calls)
		if t.BudgetTokens > 0 {
			fmt.Fprintf(w, " (budget %d)", t.BudgetTokens)
		}
		if t.Cost != nil {
			fmt.Fprintf(w, ", cost %.4f", *t.Cost)
		}
		fmt.Fprintln(w)
		for _, m := range t.ByModel {
			line := fmt.Sprintf("    %-10s %-28s %3d call(s)", term(m.Role), term(m.Model), m.Calls)
			if m.Failed > 0 {
				line += fmt.Sprintf(" (%d failed)", m.Failed)
			}
			line += fmt.Sprintf("  %d+%d tokens  %s", m.PromptTokens, m.CompletionTokens, time.Duration(m.LatencyMS)*time.Millisecond)
			if m.Cost != nil {
				line += fmt.Sprintf("  cost %.4f", *m.Cost)
			}
			fmt.Fprintln(w, line)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nKEY\tROLE\tSTATUS\tREV\tDEPENDS ON\tOUTPUTS")
	for _, t := range j.Tasks {
		var outs []string
		for _, o := range t.Outputs {
			outs = append(outs, fmt.Sprintf("r%d %s (%s)", o.Revision, o.Status, term(o.ID)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", term(t.Key), term(t.Role), t.Status, t.Revision, term(strings.Join(t.DependsOn, ",")), strings.Join(outs, "; "))
	}
	tw.Flush()
	if n := countReviews(j); n > 0 {
		fmt.Fprintf(w, "\nReviews (%d):\n", n)
	}
	for _, t := range j.Tasks {
		for _, r := range t.Reviews {
			line := fmt.Sprintf("  %s r? %s by %s", term(t.Key), term(r.Decision), term(r.Reviewer))
			for _, o := range t.Outputs {
				if o.ID == r.OutputID {
					line = fmt.Sprintf("  %s r%d %s by %s", term(t.Key), o.Revision, term(r.Decision), term(r.Reviewer))
				}
			}
			if r.Feedback != "" {
				line += ": " + term(strings.ReplaceAll(r.Feedback, "\n", " "))
			}
			fmt.Fprintln(w, line)
		}
		if t.Reason != "" {
			fmt.Fprintf(w, "  %s: %s\n", term(t.Key), term(t.Reason))
		}
	}
	keys := map[string]string{}
	for _, t := range j.Tasks {
		keys[t.ID] = t.Key
	}
	for _, ev := range j.Events {
		switch ev.Kind {
		case schemas.EventJobPlanned, schemas.EventTaskDeadLettered, schemas.EventDeadLetterReplayed, schemas.EventTaskRedispatched:
			fmt.Fprintf(w, "  %s %s %s: %s\n", ev.Time.Local().Format(time.TimeOnly), term(keys[ev.TaskID]), term(ev.Kind), term(ev.Message))
		}
	}
}

func countReviews(j schemas.Job) int {
	n := 0
	for _, t := range j.Tasks {
		n += len(t.Reviews)
	}
	return n
}

func runReviews(ctx context.Context, e *env, args []string) error {
	decide := func(decision string) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			name := "reviews approve"
			if decision == "reject" {
				name = "reviews reject"
			}
			synopsis := name + " OUTPUT_ID [--lesson TEXT]... [--scope role|all]"
			if decision == "reject" {
				synopsis = name + " OUTPUT_ID --feedback TEXT [--lesson TEXT]... [--scope role|all]"
			}
			fs := newFlags(e, name, synopsis)
			var cf clientFlags
			cf.register(fs)
			feedback := new(string)
			if decision == "reject" {
				fs.StringVar(feedback, "feedback", "", "what the next revision must change (required)")
			} else {
				fs.StringVar(feedback, "feedback", "", "a comment recorded with the approval")
			}
			var lessons stringsFlag
			fs.Var(&lessons, "lesson", "a lesson for MEMORY (repeatable)")
			scope := fs.String("scope", "", "the lessons' scope: a role or all (default the output's role)")
			reviewer := fs.String("reviewer", getenv("USER", "cli"), "who decides, recorded with the decision where NATS has no authorization (else the NATS user is)")
			pos, err := parse(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				fmt.Fprintf(e.stderr, "troupe %s: want exactly one OUTPUT_ID (see troupe reviews ls)\n", name)
				return errUsage
			}
			if decision == "reject" && strings.TrimSpace(*feedback) == "" {
				return errors.New("--feedback is required to reject: say what the next revision must change")
			}
			c, err := cf.connect()
			if err != nil {
				return err
			}
			defer c.nc.Close()
			d := schemas.ReviewDecision{OutputID: pos[0], Decision: decision, Reviewer: "human:" + claimed(fs, c, "reviewer", *reviewer), Feedback: *feedback}
			for _, l := range lessons {
				d.Lessons = append(d.Lessons, schemas.Lesson{Text: l, Scope: *scope})
			}
			var r schemas.Review
			if err := c.call(ctx, "reviews.decide", d, &r); err != nil {
				return err
			}
			if cf.json {
				return printJSON(e.stdout, r)
			}
			verb := map[string]string{"promote": "promoted", "reject": "rejected"}[decision]
			fmt.Fprintf(e.stdout, "output %s %s by %s", term(r.OutputID), verb, term(r.Reviewer))
			if len(r.Lessons) > 0 {
				fmt.Fprintf(e.stdout, "; %d lesson(s) added to MEMORY", len(r.Lessons))
			}
			fmt.Fprintln(e.stdout)
			return nil
		}
	}
	return sub(ctx, e, "reviews", args, map[string]func(context.Context, *env, []string) error{
		"ls": func(ctx context.Context, e *env, args []string) error {
			var req schemas.ListRequest
			return clientCommand(e, "reviews ls", "reviews ls [--role R] [--job ID] [--limit N] [--cursor C]", args, func(fs *flag.FlagSet) {
				fs.StringVar(&req.Role, "role", "", "only outputs of this role")
				fs.StringVar(&req.JobID, "job", "", "only outputs of this job")
				fs.IntVar(&req.Limit, "limit", 50, "outputs per page")
				fs.StringVar(&req.Cursor, "cursor", "", "the next page's cursor")
			}, func(c *client, cf clientFlags, _ []string) error {
				var list schemas.ReviewList
				if err := c.call(ctx, "reviews.list", req, &list); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, list)
				}
				if len(list.Items) == 0 {
					fmt.Fprintln(e.stdout, "no output waits for review")
					return nil
				}
				printReviewList(e.stdout, list)
				return nil
			})
		},
		"show": func(ctx context.Context, e *env, args []string) error {
			return withID(ctx, e, "reviews show", args, func(c *client, cf clientFlags, id string) error {
				var it schemas.ReviewItem
				if err := c.call(ctx, "reviews.get", schemas.IDRequest{ID: id}, &it); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, it)
				}
				o := it.Output
				fmt.Fprintf(e.stdout, "Output %s  %s\n  job:    %s\n  task:   %s (%s), revision %d\n  model:  %s, %d+%d tokens\n",
					term(o.ID), o.Status, term(it.JobTitle), term(it.Task.Key), term(o.Role), o.Revision, term(o.Model), o.PromptTokens, o.CompletionTokens)
				for _, ch := range it.Checks {
					mark := "ok  "
					if !ch.Passed {
						mark = "FAIL"
					}
					fmt.Fprintf(e.stdout, "  check %s %s %s\n", mark, term(ch.Name), term(ch.Detail))
				}
				fmt.Fprintf(e.stdout, "\n%s\n", termText(o.Content))
				for _, f := range o.Files {
					fmt.Fprintf(e.stdout, "\n=== %s ===\n%s\n", term(f.Path), termText(f.Content))
				}
				return nil
			})
		},
		"approve": decide("promote"),
		"reject":  decide("reject"),
	})
}

func printReviewList(w io.Writer, list schemas.ReviewList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OUTPUT\tROLE\tTASK\tREV\tWAITING\tJOB")
	for _, it := range list.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", term(it.Output.ID), term(it.Output.Role), term(it.Task.Key), it.Output.Revision,
			time.Since(it.Output.CreatedAt).Round(time.Second), term(it.JobTitle))
	}
	tw.Flush()
	if list.NextCursor != "" {
		fmt.Fprintf(w, "more: --cursor %s\n", term(list.NextCursor))
	}
}

type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// lessons reads every page of MEMORY.
func (c *client) lessons(ctx context.Context, req schemas.ListRequest) ([]schemas.Lesson, error) {
	var all []schemas.Lesson
	req.Limit = 500
	for {
		var page schemas.LessonList
		if err := c.call(ctx, "memory.list", req, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Lessons...)
		if page.NextCursor == "" {
			return all, nil
		}
		req.Cursor = page.NextCursor
	}
}

func runMemory(ctx context.Context, e *env, args []string) error {
	return sub(ctx, e, "memory", args, map[string]func(context.Context, *env, []string) error{
		"ls": func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "memory ls", "memory ls [--role R] [--query Q]")
			var cf clientFlags
			cf.register(fs)
			var req schemas.ListRequest
			fs.StringVar(&req.Role, "role", "", "lessons for this role (its own and those for all roles)")
			fs.StringVar(&req.Query, "query", "", "lessons that contain this text")
			if _, err := parse(fs, args); err != nil {
				return err
			}
			c, err := cf.connect()
			if err != nil {
				return err
			}
			defer c.nc.Close()
			lessons, err := c.lessons(ctx, req)
			if err != nil {
				return err
			}
			if cf.json {
				if lessons == nil {
					lessons = []schemas.Lesson{}
				}
				return printJSON(e.stdout, schemas.LessonList{Lessons: lessons})
			}
			if len(lessons) == 0 {
				fmt.Fprintln(e.stdout, "MEMORY holds no lesson yet")
			}
			for _, l := range lessons {
				fmt.Fprintf(e.stdout, "%s  %-9s  %s\n", l.CreatedAt.Local().Format(time.DateOnly), term(l.Scope), term(l.Text))
			}
			return nil
		},
		"export": func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "memory export", "memory export DIR")
			var cf clientFlags
			cf.register(fs)
			pos, err := parse(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				fmt.Fprintln(e.stderr, "troupe memory export: want the directory to write MEMORY.md and memory/ into")
				return errUsage
			}
			c, err := cf.connect()
			if err != nil {
				return err
			}
			defer c.nc.Close()
			n, err := exportMemory(ctx, c, pos[0])
			if err != nil {
				return err
			}
			if cf.json {
				return printJSON(e.stdout, map[string]any{"dir": pos[0], "memory": "MEMORY.md", "daily_files": n})
			}
			fmt.Fprintf(e.stdout, "wrote MEMORY.md and %d daily file(s) to %s\n", n, pos[0])
			return nil
		},
	})
}

func exportMemory(ctx context.Context, c *client, dir string) (int, error) {
	lessons, err := c.lessons(ctx, schemas.ListRequest{})
	if err != nil {
		return 0, err
	}
	if err := writeFile(dir, "MEMORY.md", review.RenderMemory(lessons)); err != nil {
		return 0, err
	}
	daily := review.RenderDaily(lessons)
	for name, data := range daily {
		if err := writeFile(dir, name, data); err != nil {
			return 0, err
		}
	}
	return len(daily), nil
}

// writeFile writes data to dir/rel, refusing a rel that escapes dir.
func writeFile(dir, rel string, data []byte) error {
	clean := filepath.Clean(filepath.FromSlash(rel))
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return fmt.Errorf("refusing to write %q outside %s", rel, dir)
	}
	full := filepath.Join(dir, clean)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	return os.WriteFile(full, data, 0o644)
}

func runWorkspace(ctx context.Context, e *env, args []string) error {
	return sub(ctx, e, "workspace", args, map[string]func(context.Context, *env, []string) error{
		"export": func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "workspace export", "workspace export DIR [--prefix P] [--history]")
			var cf clientFlags
			cf.register(fs)
			prefix := fs.String("prefix", "", "only artifacts whose path starts with this, e.g. projects/<job id>/")
			history := fs.Bool("history", false, "also write every version of each path, as "+historyDir+"/PATH@vN")
			pos, err := parse(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				fmt.Fprintln(e.stderr, "troupe workspace export: want the directory to write into")
				return errUsage
			}
			c, err := cf.connect()
			if err != nil {
				return err
			}
			defer c.nc.Close()
			dir := pos[0]
			x, err := exportArtifacts(ctx, c, dir, *prefix, *history)
			if err != nil {
				return err
			}
			days, err := exportMemory(ctx, c, dir)
			if err != nil {
				return err
			}
			for _, d := range []string{"docs", "skills", "projects", "memory"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
					return err
				}
			}
			if cf.json {
				return printJSON(e.stdout, map[string]any{"dir": dir, "files": x.files, "memory": "MEMORY.md", "daily_files": days,
					"older_versions": x.older, "history_files": x.versions})
			}
			if *history {
				fmt.Fprintf(e.stdout, "exported %d file(s) (each path's newest version), every version of them (%d file(s)) under %s, MEMORY.md and %d daily memory file(s) to %s\n",
					x.files, x.versions, filepath.Join(dir, historyDir), days, dir)
				return nil
			}
			fmt.Fprintf(e.stdout, "exported %d file(s), MEMORY.md and %d daily memory file(s) to %s\n", x.files, days, dir)
			if x.older > 0 {
				fmt.Fprintf(e.stdout, "each file is its path's newest version: %d older version(s) of %d path(s) were not written; --history writes every version under %s/\n",
					x.older, x.olderPaths, historyDir)
			}
			return nil
		},
	})
}

// historyDir is where workspace export --history writes every version of
// each path, as PATH@vN: out of the way of the newest versions' tree (and,
// a dot directory, of go test ./... run over the export).
const historyDir = ".history"

// artifactExport counts what exportArtifacts wrote.
type artifactExport struct {
	files      int // paths, written at their newest version
	older      int // their older versions
	olderPaths int // paths with older versions
	versions   int // files written under historyDir
}

// exportArtifacts writes the newest version of every artifact under prefix
// to dir/PATH and, with history, every version to dir/.history/PATH@vN.
func exportArtifacts(ctx context.Context, c *client, dir, prefix string, history bool) (artifactExport, error) {
	var x artifactExport
	req := schemas.ArtifactListRequest{Prefix: prefix, Limit: 500}
	for {
		var page schemas.ArtifactList
		if err := c.call(ctx, "artifacts.list", req, &page); err != nil {
			return x, err
		}
		for _, a := range page.Artifacts {
			if history && (a.Path == historyDir || strings.HasPrefix(a.Path, historyDir+"/")) {
				return x, fmt.Errorf("artifact %s is under %s/, where --history writes versions: export without --history, or with --prefix excluding it", term(a.Path), historyDir)
			}
			first := a.Version
			if history {
				first = 1
			}
			for v := first; v <= a.Version; v++ {
				var full schemas.Artifact
				if err := c.call(ctx, "artifacts.get", schemas.ArtifactGetRequest{Path: a.Path, Version: v}, &full); err != nil {
					return x, err
				}
				if history {
					if err := writeFile(dir, fmt.Sprintf("%s/%s@v%d", historyDir, full.Path, v), []byte(full.Content)); err != nil {
						return x, err
					}
					x.versions++
				}
				if v == a.Version {
					if err := writeFile(dir, full.Path, []byte(full.Content)); err != nil {
						return x, err
					}
				}
			}
			x.files++
			if a.Version > 1 {
				x.older += a.Version - 1
				x.olderPaths++
			}
		}
		if page.NextCursor == "" {
			return x, nil
		}
		req.Cursor = page.NextCursor
	}
}
