package llm

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/troupe-dev/troupe/schemas"
)

// ErrUnknownRole is returned by the offline model for a request whose role
// is not one of schemas.Roles.
var ErrUnknownRole = errors.New("unknown role")

// offlineName is the offline model's name and the Model of its responses.
const offlineName = "offline"

// Offline is the built-in offline model: it needs no network and no key,
// and answers every request with a deterministic, role-shaped draft built
// from the task's context. The same request always gets a byte-identical
// response, so offline jobs are reproducible and testable.
//
// Each role's main markdown file carries the headings review.RequiredSections
// asks for, so offline drafts pass the rule checks.
type Offline struct{}

// NewOffline returns the offline model.
func NewOffline() *Offline { return &Offline{} }

// Name returns "offline".
func (*Offline) Name() string { return offlineName }

// Generate drafts the files of req.Role's output for req.Task. It returns
// ctx.Err() when ctx is done and an error wrapping ErrUnknownRole for a role
// it does not know.
func (*Offline) Generate(ctx context.Context, req Request) (Response, error) {
	if err := ctx.Err(); err != nil {
		return Response{}, err
	}
	draft, ok := offlineDrafts[req.Role]
	if !ok {
		return Response{}, fmt.Errorf("offline model: %w %q", ErrUnknownRole, req.Role)
	}
	d := newDraftContext(req.Task)
	files := draft(d)

	names := make([]string, len(files))
	completion := 0
	for i, f := range files {
		names[i] = f.Path
		completion += len(f.Content)
	}
	summary := d.summary(req.Role, names)
	completion += len(summary)

	prompt := req.System + req.Prompt
	if prompt == "" {
		// Called with the structured context only: estimate from that.
		prompt = d.promptEstimateText()
	}
	resp := Response{
		Content:          summary,
		Files:            files,
		Model:            offlineName,
		PromptTokens:     tokenEstimate(len(prompt)),
		CompletionTokens: tokenEstimate(completion),
	}
	req.record(Call{Model: offlineName, PromptTokens: resp.PromptTokens, CompletionTokens: resp.CompletionTokens, Outcome: "ok"})
	return resp, nil
}

// tokenEstimate is the usual four-bytes-a-token estimate, at least 1.
func tokenEstimate(n int) int64 {
	return int64(max(n/4, 1))
}

// offlineDrafts maps each role to the function drafting its files; the main
// markdown file comes first.
var offlineDrafts = map[string]func(d draftContext) []schemas.File{
	"pm":        draftPM,
	"architect": draftArchitect,
	"developer": draftDeveloper,
	"tester":    draftTester,
	"writer":    draftWriter,
	"devops":    draftDevops,
}

// draftContext is a task's context, normalized for drafting.
type draftContext struct {
	TaskContext
	title string // the job title on one line, never empty
}

func newDraftContext(t TaskContext) draftContext {
	title := oneLine(t.JobTitle)
	if title == "" {
		title = "Untitled job"
	}
	return draftContext{TaskContext: t, title: title}
}

func (d draftContext) summary(role string, names []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Offline draft by the %s role for %q (task %s, revision %d): %s.",
		role, d.title, orDash(d.Key), d.Revision, strings.Join(names, ", "))
	fmt.Fprintf(&b, " Built by Troupe's built-in offline model, a deterministic template rather than a language model, from the brief, the instructions, %d input(s) and %d lesson(s)",
		len(d.Inputs), len(d.Lessons))
	if strings.TrimSpace(d.Feedback) != "" {
		fmt.Fprintf(&b, ", addressing the reviewer's feedback on revision %d", max(d.Revision-1, 0))
	}
	b.WriteString(".")
	return b.String()
}

// promptEstimateText is the text a prompt for d would roughly hold.
func (d draftContext) promptEstimateText() string {
	var b strings.Builder
	b.WriteString(d.JobTitle)
	b.WriteString(d.Brief)
	b.WriteString(d.Instructions)
	b.WriteString(d.Feedback)
	for _, in := range d.Inputs {
		b.WriteString(in.Path)
		b.WriteString(in.Content)
	}
	for _, l := range d.Lessons {
		b.WriteString(l.Text)
	}
	return b.String()
}

// header writes the title line, the offline label and the task section that
// every main markdown file starts with.
func (d draftContext) header(b *strings.Builder, heading string) {
	fmt.Fprintf(b, "# %s\n\n", heading)
	b.WriteString("_Draft by Troupe's built-in offline model: a deterministic template, not a language model._\n\n")
	b.WriteString("## Task\n\n")
	fmt.Fprintf(b, "- Job: %s\n", d.title)
	fmt.Fprintf(b, "- Task: %s, revision %d\n\n", orDash(d.Key), d.Revision)
	b.WriteString("Instructions:\n\n")
	quote(b, d.Instructions, "No instructions were given beyond the job brief.")
	if strings.TrimSpace(d.Brief) != "" {
		b.WriteString("Brief:\n\n")
		quote(b, d.Brief, "")
	}
}

// footer writes the sections every main markdown file ends with: inputs,
// lessons applied and, on a revision with feedback, the feedback addressed.
func (d draftContext) footer(b *strings.Builder) {
	b.WriteString("## Inputs\n\n")
	if len(d.Inputs) == 0 && len(d.Attachments) == 0 {
		b.WriteString("None: this task has no upstream inputs.\n\n")
	} else {
		for _, in := range d.Inputs {
			fmt.Fprintf(b, "- `%s`", oneLine(in.Path))
			if in.Role != "" || in.TaskKey != "" {
				fmt.Fprintf(b, " (%s, task %s)", orDash(in.Role), orDash(in.TaskKey))
			}
			b.WriteString("\n")
		}
		for _, a := range d.Attachments {
			fmt.Fprintf(b, "- attachment `%s` (%s)\n", oneLine(a.Name), oneLine(a.MediaType))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Lessons applied\n\n")
	n := 0
	for _, l := range d.Lessons {
		if t := oneLine(l.Text); t != "" {
			fmt.Fprintf(b, "- %s\n", t)
			n++
		}
	}
	if n == 0 {
		b.WriteString("None: no lessons from MEMORY apply to this task.\n")
	}
	b.WriteString("\n")

	if strings.TrimSpace(d.Feedback) != "" {
		b.WriteString("## Reviewer feedback addressed\n\n")
		fmt.Fprintf(b, "Revision %d addresses this feedback on revision %d:\n\n", d.Revision, max(d.Revision-1, 0))
		quote(b, d.Feedback, "")
		b.WriteString("Every section above was regenerated with this feedback in view.\n\n")
	}
}

// sentences splits the brief and the instructions into sentences, in order,
// without duplicates.
func (d draftContext) sentences() []string {
	var out []string
	seen := make(map[string]bool)
	for _, text := range []string{d.Brief, d.Instructions} {
		for _, s := range splitSentences(text) {
			key := strings.ToLower(s)
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, s)
		}
	}
	return out
}

func draftPM(d draftContext) []schemas.File {
	var b strings.Builder
	d.header(&b, "PRD: "+d.title)
	sentences := d.sentences()

	b.WriteString("## Goals\n\n")
	fmt.Fprintf(&b, "- Deliver %s as the brief describes it.\n", d.title)
	if len(sentences) > 0 {
		fmt.Fprintf(&b, "- Meet the stated goal: %s\n", sentences[0])
	}
	b.WriteString("- Leave each downstream role (architect, developer, tester, writer, devops) a clear, testable target.\n\n")

	b.WriteString("## Users\n\n")
	fmt.Fprintf(&b, "- The team that asked for %s and will operate it.\n", d.title)
	b.WriteString("- End users who rely on the behaviour the requirements below describe.\n")
	b.WriteString("- Reviewers who check each delivered output against this PRD.\n\n")

	b.WriteString("## Requirements\n\n")
	if len(sentences) == 0 {
		fmt.Fprintf(&b, "1. %s works as its title says.\n", d.title)
	}
	for i, s := range sentences {
		fmt.Fprintf(&b, "%d. %s\n", i+1, s)
	}
	b.WriteString("\n")

	b.WriteString("## Out of scope\n\n")
	b.WriteString("- Anything the brief and the instructions do not ask for.\n")
	b.WriteString("- Migrating existing data or users, unless a requirement says so.\n\n")

	d.footer(&b)
	return []schemas.File{{Path: "PRD.md", Content: b.String()}}
}

func draftArchitect(d draftContext) []schemas.File {
	var b strings.Builder
	d.header(&b, "Architecture: "+d.title)

	b.WriteString("## Components\n\n")
	b.WriteString("- **Interface**: accepts requests, validates them and returns clear errors.\n")
	fmt.Fprintf(&b, "- **Core**: the logic of %s, free of I/O so it can be tested alone.\n", d.title)
	b.WriteString("- **Store**: keeps state durable behind a small interface.\n\n")

	b.WriteString("## Data flow\n\n")
	b.WriteString("1. A request arrives at the interface and is validated.\n")
	b.WriteString("2. The core decides what to do and reads or writes the store.\n")
	b.WriteString("3. The interface returns the result, or an error naming the field at fault.\n\n")

	b.WriteString("## Decisions\n\n")
	b.WriteString("- Keep the core pure; only the interface and the store do I/O.\n")
	b.WriteString("- Validate every input at the boundary, never deeper inside.\n")
	if len(d.Inputs) > 0 {
		b.WriteString("- Follow the upstream inputs listed below as the source of requirements.\n")
	}
	b.WriteString("\n")

	b.WriteString("## Risks\n\n")
	b.WriteString("- Requirements that change after the design is agreed.\n")
	b.WriteString("- Load beyond what one instance handles; the store must allow scaling out.\n\n")

	d.footer(&b)
	return []schemas.File{{Path: "ARCHITECTURE.md", Content: b.String()}}
}

func draftDeveloper(d draftContext) []schemas.File {
	var b strings.Builder
	d.header(&b, "Implementation notes: "+d.title)

	b.WriteString("## Implementation\n\n")
	fmt.Fprintf(&b, "`main.go` is a small, runnable Go program for %s: `main` calls `run` with the command-line arguments and exits non-zero on error, so the logic stays testable.\n\n", d.title)
	b.WriteString("Build and run it with `go run .`.\n\n")

	d.footer(&b)

	code := fmt.Sprintf(`// Command main is the offline draft of the job %s.
//
// Task %s, revision %d.
package main

import (
	"fmt"
	"os"
)

// title is the job this program belongs to.
const title = %s

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run does the program's work; main only reports its error.
func run(args []string) error {
	fmt.Printf("%%s: %%d argument(s)\n", title, len(args))
	return nil
}
`, strconv.Quote(d.title), goComment(orDash(d.Key)), d.Revision, strconv.Quote(d.title))

	return []schemas.File{
		{Path: "NOTES.md", Content: b.String()},
		{Path: "main.go", Content: code},
	}
}

func draftTester(d draftContext) []schemas.File {
	var b strings.Builder
	d.header(&b, "Test plan: "+d.title)

	b.WriteString("## Scope\n\n")
	fmt.Fprintf(&b, "- The behaviour of %s that the requirements describe.\n", d.title)
	b.WriteString("- The program's entry point (`run`), exercised by `main_test.go`.\n\n")

	b.WriteString("## Cases\n\n")
	b.WriteString("1. Run with no arguments: succeeds.\n")
	b.WriteString("2. Run with arguments: succeeds and reports how many it got.\n")
	n := 3
	for _, s := range d.sentences() {
		fmt.Fprintf(&b, "%d. Verify: %s\n", n, s)
		n++
	}
	b.WriteString("\n")

	b.WriteString("## Risks\n\n")
	b.WriteString("- Cases not covered here because the requirements do not state them.\n")
	b.WriteString("- Behaviour that depends on the environment (time, network) and needs fakes.\n\n")

	d.footer(&b)

	code := fmt.Sprintf(`package main

import "testing"

// Tests for the job %s.

func TestRun(t *testing.T) {
	for _, args := range [][]string{nil, {"a"}, {"a", "b"}} {
		if err := run(args); err != nil {
			t.Fatalf("run(%%q): %%v", args, err)
		}
	}
}
`, strconv.Quote(d.title))

	return []schemas.File{
		{Path: "TEST_PLAN.md", Content: b.String()},
		{Path: "main_test.go", Content: code},
	}
}

func draftWriter(d draftContext) []schemas.File {
	var b strings.Builder
	d.header(&b, d.title)

	b.WriteString("## Overview\n\n")
	fmt.Fprintf(&b, "%s: ", d.title)
	if s := d.sentences(); len(s) > 0 {
		fmt.Fprintf(&b, "%s\n\n", s[0])
	} else {
		b.WriteString("what it does and who it is for.\n\n")
	}

	b.WriteString("## Usage\n\n")
	b.WriteString("Build and run:\n\n")
	b.WriteString("```sh\ngo run .\n```\n\n")
	b.WriteString("Run the tests:\n\n")
	b.WriteString("```sh\ngo test ./...\n```\n\n")

	b.WriteString("## Troubleshooting\n\n")
	b.WriteString("- **It exits with an error**: the message names what went wrong; fix the input it names and run again.\n")
	b.WriteString("- **The build fails**: check that your Go toolchain is recent enough (`go version`).\n\n")

	d.footer(&b)
	return []schemas.File{{Path: "README.md", Content: b.String()}}
}

func draftDevops(d draftContext) []schemas.File {
	name := slug(d.title)
	var b strings.Builder
	d.header(&b, "Runbook: "+d.title)

	b.WriteString("## Deploy\n\n")
	fmt.Fprintf(&b, "1. Build the image: `docker build -t %s:latest .`\n", name)
	b.WriteString("2. Push it to the registry the cluster pulls from.\n")
	b.WriteString("3. Apply the manifest: `kubectl apply -f deploy.yaml`\n")
	fmt.Fprintf(&b, "4. Wait for the rollout: `kubectl rollout status deployment/%s`\n\n", name)

	b.WriteString("## Rollback\n\n")
	fmt.Fprintf(&b, "1. Roll back: `kubectl rollout undo deployment/%s`\n", name)
	fmt.Fprintf(&b, "2. Confirm: `kubectl rollout status deployment/%s`\n", name)
	b.WriteString("3. Record what failed before deploying again.\n\n")

	b.WriteString("## Monitoring\n\n")
	fmt.Fprintf(&b, "- Pods ready: `kubectl get pods -l app=%s`\n", name)
	fmt.Fprintf(&b, "- Logs: `kubectl logs -l app=%s --tail=100`\n", name)
	b.WriteString("- Alert when a pod restarts more than three times in ten minutes.\n\n")

	d.footer(&b)

	dockerfile := fmt.Sprintf(`# Image for the job %s.
FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN CGO_ENABLED=0 go build -o /out/app .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
USER nonroot:nonroot
ENTRYPOINT ["/app"]
`, strconv.Quote(d.title))

	manifest := fmt.Sprintf(`# Deployment for the job %s.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
  labels:
    app: %s
spec:
  replicas: 2
  selector:
    matchLabels:
      app: %s
  template:
    metadata:
      labels:
        app: %s
    spec:
      containers:
        - name: %s
          image: %s:latest
          resources:
            requests:
              cpu: 100m
              memory: 64Mi
            limits:
              memory: 128Mi
`, strconv.Quote(d.title), name, name, name, name, name, name)

	return []schemas.File{
		{Path: "RUNBOOK.md", Content: b.String()},
		{Path: "Dockerfile", Content: dockerfile},
		{Path: "deploy.yaml", Content: manifest},
	}
}

// quote writes text as a markdown block quote followed by a blank line, or
// the fallback as a plain paragraph when text is blank. Quoting keeps lines
// of the text from reading as headings of the draft.
func quote(b *strings.Builder, text, fallback string) {
	text = strings.TrimSpace(text)
	if text == "" {
		if fallback != "" {
			fmt.Fprintf(b, "%s\n\n", fallback)
		}
		return
	}
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, " \t\r\n")
		if line == "" {
			b.WriteString(">\n")
			continue
		}
		fmt.Fprintf(b, "> %s\n", line)
	}
	b.WriteString("\n")
}

// splitSentences splits text into trimmed sentences at line breaks and at
// '.', '!' or '?' followed by a space. Markdown list markers are dropped.
func splitSentences(text string) []string {
	var out []string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		line = strings.TrimLeft(line, "-*#> \t")
		start := 0
		for i := 0; i < len(line); i++ {
			c := line[i]
			if (c == '.' || c == '!' || c == '?') && (i+1 == len(line) || line[i+1] == ' ') {
				if s := strings.TrimSpace(line[start : i+1]); s != "" {
					out = append(out, s)
				}
				start = i + 1
			}
		}
		if s := strings.TrimSpace(line[start:]); s != "" {
			out = append(out, s+".")
		}
	}
	return out
}

// slug turns a title into a DNS-label-like name for images and manifests.
func slug(title string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(title) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case b.Len() > 0 && !dash:
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= 40 {
			break
		}
	}
	s := strings.Trim(b.String(), "-")
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		s = "app-" + s
		s = strings.TrimRight(s, "-")
	}
	return s
}

// oneLine folds s onto one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// goComment makes s safe inside a // comment.
func goComment(s string) string { return oneLine(s) }

func orDash(s string) string {
	if s = oneLine(s); s == "" {
		return "-"
	}
	return s
}
