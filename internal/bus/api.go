package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// APIError is an error an API caller sees: a machine code, a message that
// names what is wrong, and the status it maps to.
type APIError struct {
	Status  int
	Code    string
	Message string
	// Jobs says what is wrong with each wrong job of a batch.
	Jobs []schemas.JobError
}

func (e *APIError) Error() string { return e.Message }

// BadRequest is an APIError for a request that is wrong.
func BadRequest(code, format string, args ...any) error {
	return &APIError{Status: 400, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Conflict is an APIError for a request that conflicts with the state.
func Conflict(format string, args ...any) error {
	return &APIError{Status: 409, Code: "conflict", Message: fmt.Sprintf(format, args...)}
}

// ToAPIError turns any error into what the caller sees: the one boundary
// where errors become codes and messages. Unknown errors are logged and
// reported as internal without their details.
func ToAPIError(err error, log zerolog.Logger) *APIError {
	var apiErr *APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, schemas.ErrInvalid):
		return &APIError{Status: 400, Code: "invalid_request", Message: err.Error()}
	case errors.Is(err, store.ErrNotFound):
		return &APIError{Status: 404, Code: "not_found", Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &APIError{Status: 503, Code: "timeout", Message: "the request timed out; try again"}
	default:
		log.Error().Err(err).Msg("request failed")
		return &APIError{Status: 500, Code: "internal", Message: "internal error; see the service's logs"}
	}
}

// EndpointConfig is what every endpoint of a service shares.
type EndpointConfig struct {
	// Ctx is the service's context; each request gets Timeout on top.
	Ctx     context.Context
	Log     zerolog.Logger
	Timeout time.Duration
	// MaxPayload is the largest reply the server accepts (the connection's
	// MaxPayload); a larger reply becomes a too_large error.
	MaxPayload int64
	// Track, when set, counts requests in flight so a service's Stop can
	// close it and wait for them.
	Track *Tracker
	// Concurrency is how many requests of one endpoint are handled at
	// once, each on its own goroutine. Defaults to 32.
	Concurrency int
	// Replies are the reply subjects requests are answered on; a request
	// naming another is dropped unanswered.
	Replies Replies
	// Available, when set, says whether the store answers: a request that
	// fails for no reason the caller gave, while it does not, is answered
	// with a retryable "unavailable" rather than "internal".
	Available func(ctx context.Context) error
}

// Unavailable is the API error of a request that failed because the store
// does not answer: 503, code "unavailable", worth retrying.
var Unavailable = &APIError{Status: 503, Code: "unavailable", Message: "the store is unavailable (the database does not answer); try again shortly"}

// unavailable returns Unavailable when err is not the caller's doing and
// the store does not answer, else err.
func (c EndpointConfig) unavailable(ctx context.Context, err error, log zerolog.Logger) error {
	var apiErr *APIError
	if c.Available == nil || errors.As(err, &apiErr) || errors.Is(err, schemas.ErrInvalid) || errors.Is(err, store.ErrNotFound) {
		return err
	}
	// The request's own time may be spent: give the store a moment of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if perr := c.Available(ctx); perr != nil {
		log.Warn().Err(err).Str("store", perr.Error()).Msg("request failed: the store is unavailable")
		return Unavailable
	}
	return err
}

// Endpoint adapts fn to a micro handler: the request is validated against
// schema and decoded into Req, fn's result is the JSON reply, and its error
// becomes a micro error with a JSON body {"error","code"}.
func Endpoint[Req any](c EndpointConfig, schema string, fn func(ctx context.Context, req Req) (any, error)) micro.Handler {
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	sem := make(chan struct{}, c.Concurrency)
	return micro.HandlerFunc(func(r micro.Request) {
		if !c.Replies.Allowed(r.Subject(), r.Reply()) {
			return
		}
		// The subscription's goroutine only hands the request on, so a
		// slow request does not hold up the ones behind it.
		if c.Track != nil && !c.Track.enter() {
			_ = r.Error("503", "the service is stopping; try again", nil)
			return
		}
		sem <- struct{}{}
		go func() {
			defer func() {
				<-sem
				if c.Track != nil {
					c.Track.leave()
				}
			}()
			handle(c, schema, fn, r)
		}()
	})
}

func handle[Req any](c EndpointConfig, schema string, fn func(ctx context.Context, req Req) (any, error), r micro.Request) {
	ctx, cancel := context.WithTimeout(context.WithValue(c.Ctx, subjectKey{}, r.Subject()), c.Timeout)
	defer cancel()
	log := c.Log.With().Str("endpoint", r.Subject()).Logger()
	var reply any
	req, err := schemas.Decode[Req](schema, r.Data())
	if err == nil {
		reply, err = fn(ctx, req)
	}
	var body []byte
	if err == nil {
		body, err = json.Marshal(reply)
	}
	if err == nil && c.MaxPayload > 0 && int64(len(body)) > c.MaxPayload {
		err = &APIError{Status: 413, Code: "too_large", Message: fmt.Sprintf(
			"the reply would be %d bytes, more than the server's max payload of %d; ask for less (a smaller limit, one item)", len(body), c.MaxPayload)}
	}
	if err != nil {
		// A copy: ToAPIError may return a shared error (Unavailable).
		e := *ToAPIError(c.unavailable(ctx, err, log), log)
		e.Message = redact.String(e.Message)
		errBody, _ := json.Marshal(schemas.ErrorReply{Error: e.Message, Code: e.Code, Jobs: e.Jobs})
		if rerr := r.Error(strconv.Itoa(e.Status), e.Message, errBody); rerr != nil {
			log.Warn().Err(rerr).Msg("sending the error reply failed")
		}
		return
	}
	if err := r.Respond(body); err != nil {
		log.Warn().Err(err).Msg("sending the reply failed")
	}
}
