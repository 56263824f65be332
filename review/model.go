package review

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/secretscan"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// PolicyModel reviews with a model after the rules: a checklist answered
// as JSON.
const PolicyModel = "model"

//go:embed reviewer.md
var reviewerPrompt string

// maxReviewInput bounds what of an output the reviewer reads.
const maxReviewInput = 200 << 10

// modelReview asks the reviewer model for its checklist and decision, with
// one repair request when the answer is not valid; then promotes or
// rejects. An answer that stays invalid parks the output for a person: a
// reviewer that malfunctions never rejects work.
func (s *Service) modelReview(ctx context.Context, msg jetstream.Msg, out store.Output, checks []schemas.Check) error {
	reviewer := s.reviewerNow()
	if reviewer == nil {
		return s.park(ctx, out)
	}
	task, err := s.store.TaskGetByID(ctx, out.TaskID)
	if err != nil {
		return err
	}
	job, err := s.store.JobGetByID(ctx, out.JobID)
	if err != nil {
		return err
	}
	var calls []llm.Call
	record := func(c llm.Call) {
		calls = append(calls, c)
		s.cfg.Metrics.ModelCall(c.Model, c.Outcome, c.Latency, c.PromptTokens, c.CompletionTokens)
	}
	user := reviewRequestText(job, task, out, checks)

	stop := heartbeat(msg, 5*time.Second)
	answer, err := s.complete(ctx, reviewer, reviewerPrompt, user, record)
	var mr schemas.ModelReview
	var perr error
	if err == nil {
		mr, perr = parseModelReview(answer)
		if perr != nil {
			answer, err = s.complete(ctx, reviewer, reviewerPrompt, user+"\n\nYour previous answer could not be used: "+perr.Error()+
				"\nAnswer again with one JSON object exactly as described, and nothing else.", record)
			if err == nil {
				mr, perr = parseModelReview(answer)
			}
		}
	}
	stop()
	if rerr := s.store.ModelCallInsert(context.WithoutCancel(ctx), reviewCalls(calls, task)); rerr != nil {
		s.log.Warn().Err(rerr).Msg("recording the reviewer's model calls")
	}
	if err != nil {
		var retry *llm.RetryError
		switch {
		case errors.As(err, &retry):
			return bus.RetryAfter(err, retry.RetryAfter)
		case errors.Is(err, llm.ErrRejected):
			// The reviewer refuses (a rotated key, too long an input): a
			// person decides instead; the work is not failed for it.
			s.log.Warn().Err(err).Str("output_id", out.ID).Msg("the reviewer model refused; the output waits for a person")
			return s.park(ctx, out)
		}
		return err
	}
	if perr != nil {
		s.log.Warn().Err(perr).Str("output_id", out.ID).Msg("the reviewer's answer is not usable; the output waits for a person")
		return s.park(ctx, out)
	}
	by := "model:" + reviewer.Name()
	// What the reviewer proposes for MEMORY and skills/ passes the rules
	// too. A reviewer that proposes a secret or an instruction to the
	// model may have been steered by the output it read: its promotion is
	// not trusted, and a person decides; a rejection stands.
	limits := s.limits()
	if dropped := screenModelReview(secretscan.New(limits.Secrets...), &mr, limits); dropped != "" {
		s.log.Warn().Str("output_id", out.ID).Str("reviewer", by).Str("dropped", dropped).Msg("the reviewer's lessons or skill break the rules; dropped")
		if mr.Decision == "promote" {
			return s.park(ctx, out, "the reviewer's proposals were dropped, so a person decides: "+dropped)
		}
		checks = append(checks, schemas.Check{Name: CheckMemoryRules, Passed: false, Detail: bus.Clip("dropped "+dropped, 2000)})
	}
	checklist := append(checks, schemas.Check{Name: "model_quality", Passed: mr.Decision == "promote", Detail: bus.Clip(mr.Quality, 2000)})
	for _, e := range mr.Errors {
		checklist = append(checklist, schemas.Check{Name: "model_error", Passed: false, Detail: bus.Clip(e, 2000)})
	}
	for _, n := range mr.Impact {
		checklist = append(checklist, schemas.Check{Name: "impact_" + n.Role, Passed: true, Detail: bus.Clip(n.Note, 2000)})
	}
	d := schemas.ReviewDecision{OutputID: out.ID, Decision: mr.Decision, Reviewer: by, Feedback: mr.Feedback, Lessons: mr.Lessons}
	_, err = s.decideWith(ctx, out, staged, d, checklist, mr.Skill)
	return ignoreDecided(err)
}

// reviewRequestText is what the reviewer reads: the job, the task, the
// rule checks and the output, bounded.
func reviewRequestText(job store.Job, task store.Task, out store.Output, checks []schemas.Check) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Job: %s\n\n%s\n\n## Task %s for the %s (revision %d)\n%s\n\n", job.Title, job.Brief, task.Key, task.Role, out.Revision, task.Instructions)
	if task.Feedback != "" && out.Revision > 0 {
		fmt.Fprintf(&b, "## Feedback the revision had to address\n%s\n\n", task.Feedback)
	}
	b.WriteString("## Rule checks (all passed)\n")
	for _, c := range checks {
		fmt.Fprintf(&b, "- %s: %s\n", c.Name, c.Detail)
	}
	fmt.Fprintf(&b, "\n## The output\n%s\n", out.Content)
	budget := maxReviewInput
	for _, f := range out.Files {
		content := f.Content
		if len(content) > budget {
			content = bus.Clip(content, max(budget, 0)) + fmt.Sprintf("\n[... the rest of %s, %d bytes, left out]\n", f.Path, len(f.Content)-budget)
		}
		budget -= len(content)
		fmt.Fprintf(&b, "\n=== FILE: %s ===\n%s\n=== END FILE ===\n", f.Path, content)
	}
	return b.String()
}

// parseModelReview reads the reviewer's JSON, tolerating a code fence or
// words around it, and validates it against its schema.
func parseModelReview(answer string) (schemas.ModelReview, error) {
	start, end := strings.Index(answer, "{"), strings.LastIndex(answer, "}")
	if start < 0 || end < start {
		return schemas.ModelReview{}, errors.New("no JSON object in the answer")
	}
	return schemas.Decode[schemas.ModelReview](schemas.SchemaModelReview, []byte(answer[start:end+1]))
}

func reviewCalls(calls []llm.Call, t store.Task) []store.ModelCall {
	out := make([]store.ModelCall, len(calls))
	for i, c := range calls {
		out[i] = store.ModelCall{
			ID: uuid.NewString(), JobID: t.JobID, TaskID: t.ID, Role: "reviewer", Revision: t.Revision, Model: c.Model,
			PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens, LatencyMS: c.Latency.Milliseconds(),
			Outcome: c.Outcome, Error: bus.Clip(c.Err, 2000),
		}
	}
	return out
}

// heartbeat tells JetStream the message is alive every interval until stop.
func heartbeat(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}
