package bus

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

func TestFitMsg(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		limit   int64
		cut     bool
	}{
		{"fits", "short", 1024, false},
		{"no limit", strings.Repeat("x", 5000), 0, false},
		{"too large", strings.Repeat("x", 5000), 1024, true},
		{"cut inside a rune", strings.Repeat("é", 2500), 1025, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := NewMsg("troupe.dlq.x", "dlq.1", []byte(tt.payload), map[string]string{HeaderReason: "bad"})
			require.Equal(t, tt.cut, FitMsg(msg, tt.limit))
			if !tt.cut {
				require.Equal(t, tt.payload, string(msg.Data))
				require.Empty(t, msg.Header.Get(HeaderTruncated))
				return
			}
			require.LessOrEqual(t, msgBytes(msg), tt.limit-fitMargin)
			require.True(t, strings.HasPrefix(tt.payload, string(msg.Data)))
			require.True(t, strings.ToValidUTF8(string(msg.Data), "?") == string(msg.Data), "no rune split")
			require.Equal(t, "true", msg.Header.Get(HeaderTruncated))
			require.Equal(t, strconv.Itoa(len(tt.payload)), msg.Header.Get(HeaderOriginalSize))
		})
	}
}

// TestDeadLetterFitsTheStreamLimit: a dead-letter stream whose message
// size limit is below the server's max payload gets a copy cut to its
// limit; the record keeps the whole payload.
func TestDeadLetterFitsTheStreamLimit(t *testing.T) {
	t.Parallel()
	js, _ := setup(t)
	ctx := context.Background()
	s, err := js.Stream(ctx, StreamDLQ)
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 4096
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	payload := strings.Repeat("p", 10000)
	var recorded string
	d := NewDeadLetter("workers-pm", StreamTasks, 7, time.Now(), "troupe.tasks.pm", []byte(payload), nil, "bad", ClassPermanent, 1)
	require.NoError(t, PublishDeadLetter(ctx, js, Subjects{Prefix: "troupe"}, d, func(_ context.Context, d2 schemas.DeadLetter) error {
		recorded = d2.Payload
		return nil
	}))
	require.Equal(t, payload, recorded)
	cp, err := s.GetLastMsgForSubject(ctx, "troupe.dlq.workers-pm")
	require.NoError(t, err)
	require.Equal(t, "true", cp.Header.Get(HeaderTruncated))
	require.Equal(t, "10000", cp.Header.Get(HeaderOriginalSize))
	require.Less(t, len(cp.Data), 4096-fitMargin)
	require.Greater(t, len(cp.Data), 2048, "cut no more than needed")
}
