package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

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
