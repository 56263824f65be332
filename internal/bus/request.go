package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/troupe-dev/troupe/schemas"
)

// Request sends req (JSON, or raw bytes) to an API subject and decodes the
// reply into out (nil: ignore it; *json.RawMessage: keep it as it is). An
// error reply comes back as an *APIError with the service's code and
// message; ErrNoResponders means no service answers the subject; an error
// that IsDenied means the NATS user may not send it (or read its reply),
// known at once on a connection made by Connect or with AsyncErrors.
func Request(ctx context.Context, nc *nats.Conn, subject string, req, out any) error {
	data, ok := req.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(req); err != nil {
			return err
		}
	}
	ctx, stop := abortOnDenial(ctx, nc, func(err error) bool { return deniesRequest(nc, err, subject) })
	defer stop()
	msg, err := nc.RequestWithContext(ctx, subject, data)
	if cause := context.Cause(ctx); err != nil && IsDenied(cause) {
		return cause
	}
	if err != nil {
		return err
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		var er schemas.ErrorReply
		if json.Unmarshal(msg.Data, &er) == nil && er.Error != "" {
			return &APIError{Code: er.Code, Message: er.Error, Jobs: er.Jobs}
		}
		return &APIError{Code: code, Message: msg.Header.Get(micro.ErrorHeader)}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], msg.Data...)
		return nil
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("decoding the reply of %s: %w", subject, err)
	}
	return nil
}

// IsNoResponders reports whether err says nothing answers a subject.
func IsNoResponders(err error) bool { return errors.Is(err, nats.ErrNoResponders) }
