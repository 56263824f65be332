package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// filterFlags registers the dead-letter filter flags.
func filterFlags(fs *flag.FlagSet, f *schemas.DeadLetterFilter) {
	fs.StringVar(&f.Status, "status", "", "open, replayed or discarded")
	fs.StringVar(&f.Source, "source", "", "the consumer that gave up, e.g. workers-developer, review, orchestrator")
	fs.StringVar(&f.Class, "class", "", "permanent, transient or exhausted")
	fs.StringVar(&f.Query, "query", "", "text in the reason, e.g. 429")
	fs.StringVar(&f.JobID, "job", "", "dead letters of this job")
	fs.StringVar(&f.TaskID, "task", "", "dead letters of this task")
}

func runDLQ(ctx context.Context, e *env, args []string) error {
	act := func(name, endpoint, verb string) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, "dlq "+name, "dlq "+name+" ID | dlq "+name+" --all [filter flags]")
			var cf clientFlags
			cf.register(fs)
			var f schemas.DeadLetterFilter
			filterFlags(fs, &f)
			all := fs.Bool("all", false, "every open dead letter the filter flags select (up to 1000 a call)")
			by := fs.String("by", getenv("USER", "cli"), "who acts, recorded with the dead letter where NATS has no authorization (else the NATS user is)")
			pos, err := parse(fs, args)
			if err != nil {
				return err
			}
			var req schemas.DeadLetterAction
			switch {
			case len(pos) == 1 && !*all:
				req.ID = pos[0]
			case len(pos) == 0 && *all:
				req.Filter = &f
			default:
				fmt.Fprintf(e.stderr, "troupe dlq %s: give one dead letter ID, or --all with filter flags\n", name)
				return errUsage
			}
			c, err := cf.connect()
			if err != nil {
				return err
			}
			defer c.nc.Close()
			req.By = claimed(fs, c, "by", *by)
			var reply schemas.DeadLetterActionReply
			if err := c.call(ctx, endpoint, req, &reply); err != nil {
				return err
			}
			if cf.json {
				return printJSON(e.stdout, reply)
			}
			for _, d := range reply.DeadLetters {
				fmt.Fprintf(e.stdout, "%s %s (%s)\n", verb, d.ID, term(d.Subject))
			}
			fmt.Fprintf(e.stdout, "%d dead letter(s) %s\n", reply.Count, verb)
			return nil
		}
	}
	return sub(ctx, e, "dlq", args, map[string]func(context.Context, *env, []string) error{
		"ls": func(ctx context.Context, e *env, args []string) error {
			var req schemas.DeadLetterListRequest
			return clientCommand(e, "dlq ls", "dlq ls [filter flags]", args, func(fs *flag.FlagSet) {
				filterFlags(fs, &req.DeadLetterFilter)
				fs.IntVar(&req.Limit, "limit", 50, "dead letters per page")
				fs.StringVar(&req.Cursor, "cursor", "", "the next page's cursor")
			}, func(c *client, cf clientFlags, _ []string) error {
				var list schemas.DeadLetterList
				if err := c.call(ctx, "dlq.list", req, &list); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, list)
				}
				if len(list.DeadLetters) == 0 {
					fmt.Fprintln(e.stdout, "no dead letters")
					return nil
				}
				tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATUS\tCLASS\tSOURCE\tWHEN\tREASON")
				for _, d := range list.DeadLetters {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", term(d.ID), d.Status, d.Class, term(d.Source),
						d.CreatedAt.Local().Format(time.DateTime), short(d.Reason, 80))
				}
				tw.Flush()
				if list.NextCursor != "" {
					fmt.Fprintf(e.stdout, "more: --cursor %s\n", list.NextCursor)
				}
				return nil
			})
		},
		"show": func(ctx context.Context, e *env, args []string) error {
			return withID(ctx, e, "dlq show", args, func(c *client, cf clientFlags, id string) error {
				var d schemas.DeadLetter
				if err := c.call(ctx, "dlq.get", schemas.IDRequest{ID: id}, &d); err != nil {
					return err
				}
				if cf.json {
					return printJSON(e.stdout, d)
				}
				var lineage schemas.DeadLetterList
				if err := c.call(ctx, "dlq.list", schemas.DeadLetterListRequest{DeadLetterFilter: schemas.DeadLetterFilter{TaskID: d.TaskID}, Limit: 100}, &lineage); err != nil {
					return err
				}
				printDeadLetter(e.stdout, d, lineage.DeadLetters)
				return nil
			})
		},
		"replay":  act("replay", "dlq.replay", "replayed"),
		"discard": act("discard", "dlq.discard", "discarded"),
	})
}

func printDeadLetter(w io.Writer, d schemas.DeadLetter, related []schemas.DeadLetter) {
	fmt.Fprintf(w, "Dead letter %s  %s\n", term(d.ID), d.Status)
	fmt.Fprintf(w, "  subject:   %s (stream %s, sequence %d)\n", term(d.Subject), term(d.Stream), d.StreamSeq)
	fmt.Fprintf(w, "  source:    %s\n  class:     %s\n  attempts:  %d\n  when:      %s\n", term(d.Source), d.Class, d.Attempts, d.CreatedAt.Local().Format(time.DateTime))
	fmt.Fprintf(w, "  reason:    %s\n", term(d.Reason))
	if d.JobID != "" {
		fmt.Fprintf(w, "  job:       %s\n  task:      %s\n", term(d.JobID), term(d.TaskID))
	}
	if d.ReplayOf != "" {
		fmt.Fprintf(w, "  replay of: %s\n", d.ReplayOf)
	}
	if d.Status != schemas.DeadLetterOpen {
		fmt.Fprintf(w, "  %s by %s at %s\n", d.Status, term(d.ResolvedBy), d.ResolvedAt.Local().Format(time.DateTime))
	}
	if d.TaskID != "" && len(related) > 1 {
		fmt.Fprintln(w, "  lineage (the task's dead letters, newest first):")
		for _, r := range related {
			line := fmt.Sprintf("    %s %-9s %s", r.CreatedAt.Local().Format(time.TimeOnly), r.Status, r.ID)
			if r.ReplayOf != "" {
				line += " (replay of " + r.ReplayOf + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
	if d.Headers[bus.HeaderPayloadEncoding] == "base64" {
		fmt.Fprintln(w, "  payload:   base64 below (the message was not UTF-8 text, or held NUL bytes); a replay sends its bytes")
	}
	if d.PayloadBytes > 0 {
		fmt.Fprintf(w, "  payload:   the first %d of %d bytes (a reply holds no more; the store keeps it whole, and a replay sends it whole)\n", len(d.Payload), d.PayloadBytes)
	}
	fmt.Fprintf(w, "\n%s\n", termText(d.Payload))
}
