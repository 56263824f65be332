package llm

import (
	"errors"
	"math/rand/v2"
	"time"
)

// A provider's rate limit is waited out by whoever holds the message that
// made the call (the worker, the review service), rather than nacked: a
// nak spends one of the message's deliveries, and a long rate-limit storm
// would dead-letter everything it caught.
const (
	// MaxRateLimitWait bounds one wait, whatever Retry-After says: the
	// call is made again then, and waits again if still refused.
	MaxRateLimitWait = 5 * time.Minute
	// rateLimitBase is the first wait of a 429 without Retry-After; it
	// doubles with every refusal in a row up to rateLimitGuessMax.
	rateLimitBase     = time.Second
	rateLimitGuessMax = time.Minute
)

// RateLimitWait reports whether err is a provider's rate limit and, if so,
// how long to wait after the refusal-th one in a row (0 the first): what
// its Retry-After asked, or a delay that doubles, bounded by
// MaxRateLimitWait, plus up to a fifth more, so the calls a storm held do
// not all come back at once.
func RateLimitWait(err error, refusal int) (time.Duration, bool) {
	var retry *RetryError
	if !errors.As(err, &retry) || !retry.RateLimited {
		return 0, false
	}
	d := retry.RetryAfter
	if d <= 0 {
		d = min(rateLimitBase<<min(refusal, 6), rateLimitGuessMax)
	}
	d = min(d, MaxRateLimitWait)
	return d + rand.N(d/5+1), true
}
