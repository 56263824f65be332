package llm

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRateLimitWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		refusal  int
		limited  bool
		min, max time.Duration
	}{
		{"not a rate limit", &RetryError{Err: errors.New("503"), RetryAfter: time.Second}, 0, false, 0, 0},
		{"another error", errors.New("boom"), 0, false, 0, 0},
		{"retry-after", &RetryError{Err: errors.New("429"), RetryAfter: 5 * time.Second, RateLimited: true}, 3, true, 5 * time.Second, 6 * time.Second},
		{"retry-after bounded", &RetryError{Err: errors.New("429"), RetryAfter: time.Hour, RateLimited: true}, 0, true, MaxRateLimitWait, MaxRateLimitWait * 6 / 5},
		{"none said: first", &RetryError{Err: errors.New("429"), RateLimited: true}, 0, true, time.Second, 1200 * time.Millisecond},
		{"none said: doubling", &RetryError{Err: errors.New("429"), RateLimited: true}, 3, true, 8 * time.Second, 9600 * time.Millisecond},
		{"none said: bounded", &RetryError{Err: errors.New("429"), RateLimited: true}, 30, true, time.Minute, 72 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, limited := RateLimitWait(tt.err, tt.refusal)
			require.Equal(t, tt.limited, limited)
			require.GreaterOrEqual(t, d, tt.min)
			require.LessOrEqual(t, d, tt.max)
		})
	}
}
