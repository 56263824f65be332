package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// batchLimit is the most jobs one submit_batch request carries; the
// server takes up to 1000, and a request must also fit the server's max
// payload.
const batchLimit = 1000

// batchLine is one job of a JSON Lines file, with its line number.
type batchLine struct {
	n   int
	raw json.RawMessage
}

// submitBatch submits every job of a JSON Lines file. Each request is all
// or nothing; a file larger than one request goes in several, and a
// failure says which lines were submitted before it.
func submitBatch(ctx context.Context, e *env, cf clientFlags, path string) error {
	var r io.Reader = e.stdin
	name := "standard input"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("--batch: %w", err)
		}
		defer f.Close()
		r, name = f, path
	}
	lines, err := readJSONLines(r, name)
	if err != nil {
		return err
	}
	if len(lines) == 0 {
		return fmt.Errorf("%s: no job in it (want one JSON submission per line)", name)
	}
	c, err := cf.connect()
	if err != nil {
		return err
	}
	defer c.nc.Close()
	maxBytes := int(c.nc.MaxPayload()) - 1024
	var all schemas.SubmissionBatchReply
	for start := 0; start < len(lines); {
		end, size := start, len(`{"jobs":[]}`)
		for end < len(lines) && end-start < batchLimit && (end == start || size+len(lines[end].raw)+1 <= maxBytes) {
			size += len(lines[end].raw) + 1
			end++
		}
		chunk := lines[start:end]
		req := schemas.SubmissionBatch{Jobs: make([]json.RawMessage, len(chunk))}
		for i, l := range chunk {
			req.Jobs[i] = l.raw
		}
		var reply schemas.SubmissionBatchReply
		if err := c.callWithin(ctx, max(c.timeout, batchTimeout), "jobs.submit_batch", req, &reply); err != nil {
			return batchError(err, name, chunk, start, lines)
		}
		all.Jobs = append(all.Jobs, reply.Jobs...)
		all.Created += reply.Created
		start = end
	}
	if cf.json {
		return printJSON(e.stdout, all)
	}
	for _, j := range all.Jobs {
		note := ""
		if !j.Created {
			note = " (existing: same idempotency key)"
		}
		fmt.Fprintf(e.stdout, "job %s %s: %s%s\n", term(j.ID), j.Status, term(j.Title), note)
	}
	fmt.Fprintf(e.stdout, "%d job(s) submitted, %d created\n", len(all.Jobs), all.Created)
	return nil
}

// readJSONLines reads one JSON object per non-blank line; every line that
// is not one is named, not only the first.
func readJSONLines(r io.Reader, name string) ([]batchLine, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 8<<20)
	var out []batchLine
	var bad []string
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) || line[0] != '{' {
			bad = append(bad, fmt.Sprintf("\n  %s:%d: not a JSON object (want one submission per line)", name, n))
			continue
		}
		out = append(out, batchLine{n: n, raw: json.RawMessage(bytes.Clone(line))})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%d line(s) of %s are not JSON objects, so nothing was submitted:%s", len(bad), name, strings.Join(bad, ""))
	}
	return out, nil
}

// batchTimeout is how long a batch may take: the server gives it four
// times an ordinary request's 10s.
const batchTimeout = 45 * time.Second

// batchError names the lines of the jobs a batch refused, and what was
// submitted before it. Any other failure (a timeout) may have come after
// the server committed the batch: it says so.
func batchError(err error, name string, chunk []batchLine, start int, lines []batchLine) error {
	var b bytes.Buffer
	var apiErr *bus.APIError
	if errors.As(err, &apiErr) && len(apiErr.Jobs) > 0 {
		fmt.Fprintf(&b, "%d of the %d jobs on lines %d-%d are invalid, so none of them was submitted:", len(apiErr.Jobs), len(chunk), chunk[0].n, chunk[len(chunk)-1].n)
		for _, je := range apiErr.Jobs {
			if je.Index >= 0 && je.Index < len(chunk) {
				fmt.Fprintf(&b, "\n  %s:%d: %s", name, chunk[je.Index].n, je.Error)
			}
		}
	} else if apiErr != nil {
		fmt.Fprintf(&b, "the jobs on lines %d-%d were not submitted: %v", chunk[0].n, chunk[len(chunk)-1].n, err)
	} else {
		fmt.Fprintf(&b, "the jobs on lines %d-%d may or may not have been submitted: %v (submitting the file again creates the ones without an idempotency_key twice; give each line one to make a retry safe)", chunk[0].n, chunk[len(chunk)-1].n, err)
	}
	if start > 0 {
		fmt.Fprintf(&b, "\nthe jobs on lines %d-%d were submitted before", lines[0].n, lines[start-1].n)
	}
	return errors.New(b.String())
}
