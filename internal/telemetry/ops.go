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
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/redact"
)

// Check reports an error when a dependency is not ready.
type Check func(ctx context.Context) error

// Ops is a service's ops endpoint: /healthz (the process is alive and
// not stuck) and /readyz (every check passes: NATS connected, store
// reachable, streams present).
type Ops struct {
	mu     sync.RWMutex
	checks map[string]Check
	srv    *http.Server
	ln     net.Listener
	// Metrics, when set, are served on /metrics.
	Metrics *Metrics
	// StuckAfter is how long the process may stay not ready, without a
	// break, before /healthz fails as well: a service that could not
	// recover by itself in that time (a lost consumer it cannot create,
	// a connection that never comes back) is better restarted. Defaults
	// to 5 minutes; negative keeps /healthz ok while the process answers.
	StuckAfter time.Duration

	readyMu       sync.Mutex
	notReadySince time.Time // zero while ready
	now           func() time.Time
}

// NewOps returns an ops endpoint with no checks yet: not ready until
// SetCheck adds them, since a service adds them once its dependencies are up.
func NewOps() *Ops { return &Ops{now: time.Now} }

func (o *Ops) clock() time.Time {
	if o.now == nil {
		return time.Now()
	}
	return o.now()
}

// stuckAfter is StuckAfter or its default.
func (o *Ops) stuckAfter() time.Duration {
	if o.StuckAfter == 0 {
		return 5 * time.Minute
	}
	return o.StuckAfter
}

// Live reports an error when the process has not been ready for longer
// than StuckAfter, saying for how long and why.
func (o *Ops) Live(ctx context.Context) error {
	if o.stuckAfter() < 0 {
		return nil
	}
	status, code := o.Ready(ctx)
	if code == http.StatusOK {
		return nil
	}
	o.readyMu.Lock()
	since := o.notReadySince
	o.readyMu.Unlock()
	if d := o.clock().Sub(since); d >= o.stuckAfter() {
		var why []string
		for n, s := range status {
			if s != "ok" {
				why = append(why, n+": "+s)
			}
		}
		sort.Strings(why)
		return fmt.Errorf("not ready for %s (more than %s): %s", d.Round(time.Second), o.stuckAfter(), strings.Join(why, "; "))
	}
	return nil
}

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
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := o.Live(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
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
		status, code = map[string]string{"starting": "dependencies not connected yet"}, http.StatusServiceUnavailable
	}
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			status[n] = redact.String(err.Error()) // answered to anyone who asks
			code = http.StatusServiceUnavailable
			continue
		}
		status[n] = "ok"
	}
	o.readyMu.Lock()
	switch {
	case code == http.StatusOK:
		o.notReadySince = time.Time{}
	case o.notReadySince.IsZero():
		o.notReadySince = o.clock()
	}
	o.readyMu.Unlock()
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
