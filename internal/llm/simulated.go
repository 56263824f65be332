package llm

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// Simulated wraps a model to behave like a slow or faulty one: for
// demonstrations, benchmarks and fault-injection tests.
type Simulated struct {
	Model
	// Latency is added to every call, plus up to Jitter more.
	Latency, Jitter time.Duration
	// PanicOn, when set, makes a call panic if the task's instructions
	// contain it: a poison task that fails every delivery.
	PanicOn string
	// ExitOn, when set, makes the whole process exit (code 3) if the
	// task's instructions contain it: a task that kills its worker on
	// every delivery, so the message is never settled.
	ExitOn string
}

// Generate waits, panics on poison, then asks the wrapped model.
func (s *Simulated) Generate(ctx context.Context, req Request) (Response, error) {
	if s.ExitOn != "" && strings.Contains(req.Task.Instructions, s.ExitOn) {
		fmt.Fprintf(os.Stderr, "simulated crash: task %s kills its worker (%q)\n", req.Task.Key, s.ExitOn)
		os.Exit(3)
	}
	if s.PanicOn != "" && strings.Contains(req.Task.Instructions, s.PanicOn) {
		panic(fmt.Sprintf("simulated crash: task %s is poison (%q)", req.Task.Key, s.PanicOn))
	}
	d := s.Latency
	if s.Jitter > 0 {
		d += rand.N(s.Jitter)
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return Response{}, ctx.Err()
		}
	}
	return s.Model.Generate(ctx, req)
}
