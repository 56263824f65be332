package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/troupe-dev/troupe/internal/redact"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

// env is what every command gets: its streams.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// errUsage is returned after a usage message was printed.
var errUsage = errors.New("usage")

// exitError carries an exit code without a message of its own (the command
// printed what it had to say).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func commands() []command {
	return []command{
		{"dev", "run everything in one process: embedded NATS, SQLite, every service", runDev},
		{"orchestrator", "run the orchestrator service", runOrchestrator},
		{"worker", "run a role worker (--role R)", runWorker},
		{"review", "run the review service", runReview},
		{"submit", "submit a job from a JSON file or flags", runSubmit},
		{"jobs", "list, show and cancel jobs (ls|show|cancel)", runJobs},
		{"reviews", "review staged outputs (ls|show|approve|reject)", runReviews},
		{"dlq", "dead letters: inspect, replay, discard (ls|show|replay|discard)", runDLQ},
		{"memory", "read MEMORY (ls|export)", runMemory},
		{"workspace", "copy the shared area and MEMORY to files (export DIR)", runWorkspace},
		{"config", "check the configuration (check)", runConfig},
		{"migrate", "apply the store's migrations (--database-url)", runMigrate},
		{"nats-config", "print a nats-server authorization block with one least-privilege user per service (--env-dir)", runNATSConfig},
		{"bench", "measure throughput and latency under load (--jobs N, --model-latency D)", runBench},
		{"healthcheck", "probe a service's ops endpoint, for container healthchecks (--url)", runHealthcheck},
	}
}

// Run runs the troupe command line and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		var ee exitError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		case errors.As(err, &ee):
			return ee.code
		default:
			// The one place the CLI prints an error: masked, as logs are, and
			// with control characters escaped.
			fmt.Fprintf(stderr, "troupe %s: %s\n", c.name, termText(redact.String(err.Error())))
			return 1
		}
	}
	fmt.Fprintf(stderr, "troupe: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Troupe: a message-broker-backed multi-agent job system.")
	fmt.Fprintln(w, "\nUsage: troupe <command> [flags] [args]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'troupe <command> --help' for a command's flags.")
}

// newFlags returns a flag set whose usage names the command.
func newFlags(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: troupe %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before, between or after positional
// arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// sub dispatches a command with subcommands such as "jobs ls".
func sub(ctx context.Context, e *env, group string, args []string, subs map[string]func(context.Context, *env, []string) error) error {
	names := make([]string, 0, len(subs))
	for n := range subs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(e.stderr, "Usage: troupe %s <%s> [flags]\n", group, strings.Join(names, "|"))
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	fn, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "troupe %s: unknown subcommand %q; use one of %s\n", group, args[0], strings.Join(names, ", "))
		return errUsage
	}
	return fn(ctx, e, args[1:])
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
