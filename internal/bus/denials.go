package bus

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// The server reports a permissions violation asynchronously: for the
// requester, a request it refused is only a timeout. The connections made
// by Connect (or with AsyncErrors) pass their violations to whoever waits
// on them (Topology.Ensure, Request), so a refusal is known at once.
var (
	denialsMu sync.Mutex
	denials   = map[*nats.Conn]map[chan error]struct{}{}
)

// AsyncErrors returns the handler of the errors a server reports
// asynchronously: it logs them and passes permissions violations to the
// requests and Ensure calls waiting on the connection.
func AsyncErrors(log zerolog.Logger) nats.ErrHandler {
	return func(nc *nats.Conn, sub *nats.Subscription, err error) {
		ev := log.Warn().Err(err)
		if sub != nil {
			ev = ev.Str("subscription", sub.Subject)
		}
		if !IsDenied(err) {
			ev.Msg("nats error")
			return
		}
		ev.Msg("nats refused: this NATS user may not use that subject")
		denialsMu.Lock()
		defer denialsMu.Unlock()
		for ch := range denials[nc] {
			select {
			case ch <- err:
			default:
			}
		}
	}
}

// watchDenials returns the permissions violations nc's server reports
// until stop is called.
func watchDenials(nc *nats.Conn) (denied <-chan error, stop func()) {
	ch := make(chan error, 16)
	denialsMu.Lock()
	if denials[nc] == nil {
		denials[nc] = map[chan error]struct{}{}
	}
	denials[nc][ch] = struct{}{}
	denialsMu.Unlock()
	return ch, func() {
		denialsMu.Lock()
		defer denialsMu.Unlock()
		delete(denials[nc], ch)
		if len(denials[nc]) == 0 {
			delete(denials, nc)
		}
	}
}

// abortOnDenial returns a context that ends, with the violation as its
// cause, when nc's server reports a permissions violation that match says
// concerns this call. stop releases it.
func abortOnDenial(ctx context.Context, nc *nats.Conn, match func(error) bool) (context.Context, func()) {
	denied, unwatch := watchDenials(nc)
	ctx, abort := context.WithCancelCause(ctx)
	go func() {
		for {
			select {
			case err := <-denied:
				if match(err) {
					abort(err)
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, func() { abort(nil); unwatch() }
}

// IsDenied reports whether err is a permissions violation: the NATS user
// may not publish or subscribe to a subject.
func IsDenied(err error) bool { return errors.Is(err, nats.ErrPermissionViolation) }

// isJetStreamDenial reports whether err refused a JetStream API request.
func isJetStreamDenial(err error) bool {
	return IsDenied(err) && strings.Contains(err.Error(), `"$JS.API.`)
}

// deniesRequest reports whether err refused a request to subject on nc:
// publishing to it, or subscribing to the inbox its reply comes back on.
func deniesRequest(nc *nats.Conn, err error, subject string) bool {
	if !IsDenied(err) {
		return false
	}
	inbox := nc.Opts.InboxPrefix
	if inbox == "" {
		inbox = nats.InboxPrefix
	} else {
		inbox += "."
	}
	msg := err.Error()
	return strings.Contains(msg, `Publish to "`+subject+`"`) || strings.Contains(msg, `Subscription to "`+inbox)
}
