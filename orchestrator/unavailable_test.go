package orchestrator

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

// TestAPISaysTheStoreIsUnavailable: while the database does not answer,
// an API request gets a retryable "unavailable" that says so, not an
// internal error; a request that is wrong is still told what is wrong.
func TestAPISaysTheStoreIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, st, _, log := relayTestEnv(t, "developer")
	s := New(Config{Logger: log, Reconcile: ReconcileConfig{Interval: -1}}, st, js.Conn(), js)
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { _ = s.Stop(ctx) })

	ask := func(endpoint string, req any) (string, schemas.ErrorReply) {
		body, err := json.Marshal(req)
		require.NoError(t, err)
		msg, err := js.Conn().Request("troupe.api."+endpoint, body, 20*time.Second)
		require.NoError(t, err)
		var er schemas.ErrorReply
		require.NoError(t, json.Unmarshal(msg.Data, &er))
		return msg.Header.Get(micro.ErrorCodeHeader), er
	}

	require.NoError(t, st.Close()) // the database is gone
	status, er := ask("jobs.get", schemas.IDRequest{ID: "0b6a3c3e-8a7e-4d43-9b0b-6f1f0f0b1a55"})
	require.Equal(t, "503", status)
	require.Equal(t, "unavailable", er.Code)
	require.Contains(t, er.Error, "store is unavailable")
	require.Contains(t, er.Error, "try again")

	// Many at once: each reply is its own (the race detector watches).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			status, er := ask("jobs.get", schemas.IDRequest{ID: "0b6a3c3e-8a7e-4d43-9b0b-6f1f0f0b1a55"})
			assert.Equal(t, "503", status)
			assert.Equal(t, "unavailable", er.Code)
		})
	}
	wg.Wait()

	status, er = ask("jobs.submit", schemas.Submission{Title: "T", Tasks: []schemas.PlanTask{{Key: "a", Role: "wizard"}}})
	require.Equal(t, "400", status, "a wrong request is the caller's to fix, outage or not")
	require.Equal(t, "invalid_request", er.Code)
}
