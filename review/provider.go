package review

import (
	"context"
	"fmt"
	"time"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
)

// complete asks the reviewer model, waiting out the provider's rate limits
// (llm.RateLimitWait) with the review request held, as a worker does with
// its task: a nak would spend one of the request's deliveries, and a long
// rate-limit storm would dead-letter it. The caller keeps the message
// alive meanwhile; Stop, or ctx ending, ends the wait, and the Settler naks
// the request at once.
func (s *Service) complete(ctx context.Context, reviewer llm.Completer, system, user string, record func(llm.Call)) (string, error) {
	for refusal := 0; ; refusal++ {
		answer, err := reviewer.Complete(ctx, system, user, record)
		d, limited := llm.RateLimitWait(err, refusal)
		if !limited || ctx.Err() != nil {
			return answer, err
		}
		s.log.Info().Err(err).Time("until", time.Now().Add(d).UTC()).Int("refusals", refusal+1).
			Msg("the reviewer model is rate limited; holding the review until then")
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for the provider: %w", ctx.Err())
		case <-s.stopping:
			return "", fmt.Errorf("waiting for the provider: %w", bus.ErrHandBack)
		case <-time.After(d):
		}
	}
}
