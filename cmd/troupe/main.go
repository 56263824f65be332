// Command troupe is Troupe's one binary: the services (dev, orchestrator,
// worker, review) and the client commands (submit, jobs, reviews, memory,
// workspace, config), all chosen by the first argument.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
