// Package telemetry serves what operators and orchestrators ask a service:
// is it alive, is it ready to work.
package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/redact"
)

// Check reports an error when a dependency is not ready.
type Check func(ctx context.Context) error

// Ops is a service's ops endpoint: /healthz (the process is alive) and
// /readyz (every check passes: NATS connected, store reachable, streams
// present).
type Ops struct {
	mu     sync.RWMutex
	checks map[string]Check
	srv    *http.Server
	ln     net.Listener
	// Metrics, when set, are served on /metrics.
	Metrics *Metrics
}

// NewOps returns an ops endpoint with no checks yet: not ready until
// SetCheck adds them, since a service adds them once its dependencies are up.
func NewOps() *Ops { return &Ops{} }

// SetCheck adds or replaces a named readiness check.
func (o *Ops) SetCheck(name string, c Check) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.checks == nil {
		o.checks = map[string]Check{}
	}
	o.checks[name] = c
}

// Handler serves /healthz and /readyz.
func (o *Ops) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics.Handler())
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code := o.Ready(ctx)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(status)
	})
	return mux
}

// Ready runs every check and returns what each said, and 200 or 503.
func (o *Ops) Ready(ctx context.Context) (map[string]string, int) {
	o.mu.RLock()
	names := make([]string, 0, len(o.checks))
	for n := range o.checks {
		names = append(names, n)
	}
	checks := o.checks
	o.mu.RUnlock()
	sort.Strings(names)
	status, code := map[string]string{}, http.StatusOK
	if len(names) == 0 {
		return map[string]string{"starting": "dependencies not connected yet"}, http.StatusServiceUnavailable
	}
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			status[n] = redact.String(err.Error()) // answered to anyone who asks
			code = http.StatusServiceUnavailable
			continue
		}
		status[n] = "ok"
	}
	return status, code
}

// Listen binds addr (host:port; port 0 picks a free one) and serves until
// Close. It returns the address it listens on.
func (o *Ops) Listen(addr string, log zerolog.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("ops endpoint %s: %w", addr, err)
	}
	o.ln = ln
	o.srv = &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := o.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("ops endpoint stopped")
		}
	}()
	return ln.Addr().String(), nil
}

// Close stops serving.
func (o *Ops) Close(ctx context.Context) error {
	if o.srv == nil {
		return nil
	}
	return o.srv.Shutdown(ctx)
}
