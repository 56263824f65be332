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

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// APIError is an error an API caller sees: a machine code, a message that
// names what is wrong, and the status it maps to.
type APIError struct {
	Status  int
	Code    string
	Message string
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

// Endpoint adapts fn to a micro handler: the request is validated against
// schema and decoded into Req, fn's result is the JSON reply, and its error
// becomes a micro error with a JSON body {"error","code"}.
func Endpoint[Req any](ctx context.Context, log zerolog.Logger, schema string, timeout time.Duration, fn func(ctx context.Context, req Req) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var reply any
		req, err := schemas.Decode[Req](schema, r.Data())
		if err == nil {
			reply, err = fn(ctx, req)
		}
		if err != nil {
			e := ToAPIError(err, log.With().Str("endpoint", r.Subject()).Logger())
			body, _ := json.Marshal(schemas.ErrorReply{Error: e.Message, Code: e.Code})
			_ = r.Error(strconv.Itoa(e.Status), e.Message, body)
			return
		}
		if err := r.RespondJSON(reply); err != nil {
			log.Warn().Err(err).Str("endpoint", r.Subject()).Msg("sending the reply failed")
		}
	})
}
