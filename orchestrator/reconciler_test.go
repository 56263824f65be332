package orchestrator

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store/sqlite"
)

// TestReconcilerFinishesAJobWhoseLastEventWasLost: every task is promoted
// but the event that would have ended the job never came; the reconciler
// ends it.
func TestReconcilerFinishesAJobWhoseLastEventWasLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := sqlite.NewTestStore(t)
	job, _ := jobWith(t, st, schemas.TaskPromoted, schemas.TaskPromoted)
	s := New(Config{Logger: zerolog.New(zerolog.NewTestWriter(t))}, st, nil, nil)
	r := newReconciler(s)

	require.NoError(t, r.decisions(ctx, time.Now().Add(-time.Hour)), "not stale yet: left alone")
	got, err := st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobRunning, got.Status)

	require.NoError(t, r.decisions(ctx, time.Now().Add(time.Second)))
	got, err = st.JobGetByID(ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, schemas.JobDone, got.Status)
}
