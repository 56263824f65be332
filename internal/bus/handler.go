package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/schemas"
)

// Error classes of dead letters.
const (
	ClassPermanent = "permanent"
	ClassTransient = "transient"
	ClassExhausted = "exhausted"
)

// PermanentError is a failure no retry can fix: the message is dead-lettered
// and terminated.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent.
func Permanent(err error) error { return &PermanentError{Err: err} }

// RetryError is a transient failure: the message is redelivered after
// After (or a delay that grows with the delivery count when After is zero).
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string { return e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }

// RetryAfter marks err as transient, to retry after d.
func RetryAfter(err error, d time.Duration) error { return &RetryError{Err: err, After: d} }

// MsgHandler handles one JetStream message. Returning nil acks it; a
// *PermanentError dead-letters and terminates it; any other error naks it
// with a delay.
type MsgHandler func(ctx context.Context, msg jetstream.Msg) error

// Settler runs MsgHandlers and maps their outcome onto JetStream: the one
// place where acks, naks and dead letters happen.
type Settler struct {
	JS       jetstream.JetStream
	Subjects Subjects
	// Source names the consumer in dead-letter subjects, e.g. "workers-pm".
	Source string
	Log    zerolog.Logger
	// Record, when set, stores a dead letter after it was published.
	Record func(ctx context.Context, d schemas.DeadLetter) error
	// BaseDelay is the first retry delay. Defaults to 1s; it doubles with
	// every delivery up to MaxDelay (defaults to 1 minute).
	BaseDelay, MaxDelay time.Duration
}

// Handle runs h on msg, recovering a panic as a failed delivery, and settles msg.
func (s *Settler) Handle(ctx context.Context, msg jetstream.Msg, h MsgHandler) {
	err := s.run(ctx, msg, h)
	meta, _ := msg.Metadata()
	var delivered uint64 = 1
	if meta != nil {
		delivered = meta.NumDelivered
	}
	log := s.Log.With().Str("subject", msg.Subject()).Uint64("attempt", delivered).Logger()
	var perm *PermanentError
	var retry *RetryError
	switch {
	case err == nil:
		if aerr := msg.Ack(); aerr != nil {
			log.Warn().Err(aerr).Msg("ack failed; the message will be redelivered")
		}
	case errors.As(err, &perm):
		if derr := s.DeadLetter(ctx, msg, err.Error(), ClassPermanent); derr != nil {
			log.Error().Err(derr).Msg("dead-lettering failed; retrying the message")
			_ = msg.NakWithDelay(s.delay(delivered))
			return
		}
		log.Warn().Err(err).Msg("dead-lettered")
		_ = msg.Term()
	default:
		d := s.delay(delivered)
		if errors.As(err, &retry) && retry.After > 0 {
			d = retry.After
		}
		log.Warn().Err(err).Dur("retry_in", d).Msg("handling failed; retrying")
		_ = msg.NakWithDelay(d)
	}
}

func (s *Settler) run(ctx context.Context, msg jetstream.Msg, h MsgHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.Log.Error().Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("handler panicked")
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return h(ctx, msg)
}

func (s *Settler) delay(delivered uint64) time.Duration {
	base, maxd := s.BaseDelay, s.MaxDelay
	if base == 0 {
		base = time.Second
	}
	if maxd == 0 {
		maxd = time.Minute
	}
	d := base
	for i := uint64(1); i < delivered && d < maxd; i++ {
		d *= 2
	}
	return min(d, maxd)
}

// DeadLetter publishes msg to the dead-letter stream with its reason and
// records it. The caller terminates msg afterwards.
func (s *Settler) DeadLetter(ctx context.Context, msg jetstream.Msg, reason, class string) error {
	meta, _ := msg.Metadata()
	d := schemas.DeadLetter{
		ID:        uuid.NewString(),
		Source:    s.Source,
		Subject:   msg.Subject(),
		Payload:   string(msg.Data()),
		Headers:   map[string]string{},
		Reason:    reason,
		Class:     class,
		Attempts:  1,
		CreatedAt: time.Now().UTC(),
		Status:    "open",
	}
	if meta != nil {
		d.Attempts = int(meta.NumDelivered)
		d.StreamSeq = meta.Sequence.Stream
	}
	for k := range msg.Headers() {
		d.Headers[k] = msg.Headers().Get(k)
	}
	headers := map[string]string{
		HeaderReason:          truncate(reason, 1024),
		HeaderErrorClass:      class,
		HeaderDeliveries:      strconv.Itoa(d.Attempts),
		HeaderOriginalSubject: d.Subject,
		HeaderStreamSeq:       strconv.FormatUint(d.StreamSeq, 10),
	}
	if err := Publish(ctx, s.JS, s.Subjects.DLQ(s.Source), "dlq."+d.ID, msg.Data(), headers); err != nil {
		return err
	}
	if s.Record != nil {
		if err := s.Record(ctx, d); err != nil {
			return fmt.Errorf("recording dead letter: %w", err)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
