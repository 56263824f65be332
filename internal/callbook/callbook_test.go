package callbook

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/store"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// outageStore is a store whose model-call writes fail while it is down.
type outageStore struct {
	store.Store
	down atomic.Bool
}

func (s *outageStore) ModelCallInsert(ctx context.Context, calls []store.ModelCall) error {
	if s.down.Load() {
		return errors.New("connection refused")
	}
	return s.Store.ModelCallInsert(ctx, calls)
}

// TestModelCallsRecordedAfterAStoreOutage: ten calls made while the
// store refuses writes reach model_calls once it answers again; none is
// dropped and none is counted twice.
func TestModelCallsRecordedAfterAStoreOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &outageStore{Store: sqlite.NewTestStore(t)}
	book := New(st, zerolog.New(zerolog.NewTestWriter(t)))
	book.Retry = 50 * time.Millisecond
	t.Cleanup(func() { book.Close(ctx) })
	job := uuid.NewString()

	st.down.Store(true)
	for range 10 {
		book.Record(ctx, []store.ModelCall{{ID: uuid.NewString(), JobID: job, Role: "developer", Model: "m", PromptTokens: 7, Outcome: "ok"}})
	}
	require.Equal(t, 10, book.Waiting())
	tokens, err := st.ModelCallTokens(ctx, job)
	require.NoError(t, err)
	require.Zero(t, tokens, "the store is down")

	st.down.Store(false)
	require.Eventually(t, func() bool { return book.Waiting() == 0 }, 30*time.Second, 10*time.Millisecond)
	tokens, err = st.ModelCallTokens(ctx, job)
	require.NoError(t, err)
	require.Equal(t, int64(70), tokens, "every call recorded once")
}

// TestModelCallsWrittenAtStop: calls kept through an outage are written
// when the worker stops, if the store answers by then.
func TestModelCallsWrittenAtStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := &outageStore{Store: sqlite.NewTestStore(t)}
	book := New(st, zerolog.New(zerolog.NewTestWriter(t)))
	book.Retry = time.Hour
	job := uuid.NewString()
	st.down.Store(true)
	book.Record(ctx, []store.ModelCall{{ID: uuid.NewString(), JobID: job, Role: "developer", Model: "m", PromptTokens: 5, Outcome: "ok"}})
	st.down.Store(false)
	book.Close(ctx)
	book.Close(ctx) // twice is fine
	tokens, err := st.ModelCallTokens(ctx, job)
	require.NoError(t, err)
	require.Equal(t, int64(5), tokens)
}
