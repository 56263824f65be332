package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestOps(t *testing.T) {
	t.Parallel()
	o := NewOps()
	addr, err := o.Listen("127.0.0.1:0", zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	base := "http://" + addr

	code, _ := get(t, base+"/healthz")
	require.Equal(t, 200, code)
	code, body := get(t, base+"/readyz")
	require.Equal(t, 503, code, "not ready before its dependencies are up")
	require.Contains(t, body, "starting")

	storeDown := errors.New("store: connection refused")
	var storeErr error
	o.SetCheck("nats", func(context.Context) error { return nil })
	o.SetCheck("store", func(context.Context) error { return storeErr })
	code, _ = get(t, base+"/readyz")
	require.Equal(t, 200, code)

	storeErr = storeDown
	code, body = get(t, base+"/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "connection refused")
	require.Contains(t, body, `"nats":"ok"`)
}

// TestReadyHidesCredentials: /readyz answers anyone who asks; a check's
// error that quotes a URL with its password is masked.
func TestReadyHidesCredentials(t *testing.T) {
	t.Parallel()
	o := NewOps()
	o.SetCheck("store", func(context.Context) error {
		return errors.New(`connecting to postgres://troupe:hunter2@db:5432/troupe?password=hunter3: refused`)
	})
	status, code := o.Ready(context.Background())
	require.Equal(t, 503, code)
	require.Equal(t, "connecting to postgres://***@db:5432/troupe?password=***: refused", status["store"])
}

// TestHealthzFailsWhenStuck: a process that stays not ready for longer
// than StuckAfter fails its liveness probe too, saying why, so Kubernetes
// restarts it; a short outage, or one it recovers from, does not.
func TestHealthzFailsWhenStuck(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(d)
	}
	o := NewOps()
	o.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	o.StuckAfter = 5 * time.Minute
	addr, err := o.Listen("127.0.0.1:0", zerolog.Nop())
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	base := "http://" + addr

	var streams atomic.Value
	streams.Store("stream TROUPE_TASKS does not exist")
	o.SetCheck("streams", func(context.Context) error {
		if msg := streams.Load().(string); msg != "" {
			return errors.New(msg)
		}
		return nil
	})
	code, _ := get(t, base+"/healthz")
	require.Equal(t, 200, code, "not ready, but not for long")
	advance(4 * time.Minute)
	code, _ = get(t, base+"/healthz")
	require.Equal(t, 200, code)
	advance(2 * time.Minute)
	code, body := get(t, base+"/healthz")
	require.Equal(t, 503, code, "not ready for six minutes: stuck")
	require.Contains(t, body, "stream TROUPE_TASKS does not exist")
	require.Contains(t, body, "not ready for 6m0s")

	streams.Store("")
	code, _ = get(t, base+"/healthz")
	require.Equal(t, 200, code, "recovered")
	streams.Store("stream TROUPE_TASKS does not exist")
	code, _ = get(t, base+"/healthz")
	require.Equal(t, 200, code, "a new outage starts its own count")
}
