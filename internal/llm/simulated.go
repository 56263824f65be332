package llm

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	// contain it: a poison task that crashes its worker on every delivery.
	PanicOn string
}

// Generate waits, panics on poison, then asks the wrapped model.
func (s *Simulated) Generate(ctx context.Context, req Request) (Response, error) {
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
