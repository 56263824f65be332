package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// A provider's rate limit (429) is waited out with the task held, not
// nacked (llm.RateLimitWait says how long). The worker keeps its slot
// meanwhile, which bounds the calls a storm gets to the worker's
// concurrency. Other transient failures (5xx, timeouts) are still nacked:
// they may be the request's fault, and MaxDeliver bounds them.

// errTaskLeft stops waiting for the provider: the task is no longer
// running (cancelled, failed, dead-lettered meanwhile).
var errTaskLeft = errors.New("the task is no longer running")

// generate calls the model, telling JetStream the task is alive while it
// works, and the store every tenth heartbeat, so the reconciler never takes
// a long call for a lost task. A rate limit is waited out (see above),
// shown on the task as "waiting for the provider until …", and the call
// made again; the worker stopping, or ctx ending, ends the wait, and the
// Settler naks the message at once for another worker.
func (w *Worker) generate(ctx context.Context, log zerolog.Logger, msg jetstream.Msg, task store.Task, req llm.Request) (llm.Response, error) {
	ctx, left := context.WithCancelCause(ctx)
	defer left(nil)
	stop := w.keepAlive(ctx, msg, task, left)
	defer stop()
	for refusal := 0; ; refusal++ {
		resp, err := w.taskModel(ctx).Generate(ctx, req)
		if err != nil && errors.Is(context.Cause(ctx), errTaskLeft) {
			return resp, errTaskLeft
		}
		d, limited := llm.RateLimitWait(err, refusal)
		if !limited || ctx.Err() != nil {
			return resp, err
		}
		until := time.Now().Add(d).UTC()
		reason, rev := fmt.Sprintf("waiting for the provider until %s: %s", until.Format(time.RFC3339), bus.Clip(err.Error(), 1000)), task.Revision
		running, uerr := w.store.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, From: []string{schemas.TaskRunning}, Revision: &rev, Reason: &reason})
		switch {
		case uerr == nil && !running:
			return llm.Response{}, errTaskLeft
		case uerr != nil:
			log.Warn().Err(uerr).Msg("recording the wait for the provider on the task")
		}
		log.Info().Err(err).Time("until", until).Int("refusals", refusal+1).Msg("rate limited by the provider; holding the task until then")
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), errTaskLeft) {
				return llm.Response{}, errTaskLeft
			}
			return llm.Response{}, fmt.Errorf("waiting for the provider: %w", ctx.Err())
		case <-w.stopping:
			// Nothing to finish within the grace period: another worker
			// may take the task now.
			return llm.Response{}, fmt.Errorf("waiting for the provider: %w", bus.ErrHandBack)
		case <-time.After(d):
		}
	}
}

// keepAlive sends InProgress every heartbeat, and touches the task in the
// store every tenth, until stop. When the store says the task is no longer
// running (its job was cancelled, or failed by a dead letter), it calls
// left with errTaskLeft, which stops the model call.
func (w *Worker) keepAlive(ctx context.Context, msg jetstream.Msg, task store.Task, left context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(w.cfg.Heartbeat)
		defer t.Stop()
		for beats := 1; ; beats++ {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
				if beats%10 == 0 {
					rev := task.Revision
					if moved, err := w.store.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, From: []string{schemas.TaskRunning}, Revision: &rev}); err == nil && !moved {
						left(errTaskLeft)
						return
					}
				}
			}
		}
	}()
	return func() { close(done) }
}
