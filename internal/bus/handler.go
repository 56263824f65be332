package bus

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/redact"
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

// ErrHandBack marks a handler's error that gives the message back at once
// for another consumer, as a shutdown does, rather than as a failure: the
// process is stopping and the handler was only waiting (for a provider's
// rate limit, say).
var ErrHandBack = errors.New("handed back: the process is stopping")

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
	// Backoff, when set, are the retry delays by delivery (the last one
	// repeats), in place of BaseDelay and MaxDelay.
	Backoff []time.Duration
	// MaxDeliver is the consumer's MaxDeliver: a failure on the last
	// delivery dead-letters the message with its error rather than leaving
	// it to the sweeper. 0 leaves every exhausted message to the sweeper.
	MaxDeliver int
	// Available, when set, reports whether what handlers depend on (the
	// store) answers. While it does not, a failed message is held (kept
	// alive with InProgress) and tried again once it does, rather than
	// nacked: an outage spends no delivery, so it cannot exhaust MaxDeliver.
	Available func(ctx context.Context) error
}

// HeaderReplayOf names the dead letter a replayed message came from.
const HeaderReplayOf = "Troupe-Replay-Of"

// Handle runs h on msg, recovering a panic as a failed delivery, and settles msg.
func (s *Settler) Handle(ctx context.Context, msg jetstream.Msg, h MsgHandler) {
	err := s.run(ctx, msg, h)
	var perm *PermanentError
	for err != nil && !errors.As(err, &perm) && s.hold(ctx, msg, err) {
		err = s.run(ctx, msg, h)
	}
	meta, _ := msg.Metadata()
	var delivered uint64 = 1
	if meta != nil {
		delivered = meta.NumDelivered
	}
	log := s.Log.With().Str("subject", msg.Subject()).Uint64("attempt", delivered).Logger()
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
	case ctx.Err() != nil || errors.Is(err, ErrHandBack):
		// Stopping (past the grace period, or with nothing left to
		// finish): not the message's fault.
		log.Info().Err(err).Msg("aborted by shutdown; redelivering")
		_ = msg.Nak()
	case s.MaxDeliver > 0 && delivered >= uint64(s.MaxDeliver):
		reason := fmt.Sprintf("gave up after %d deliveries: %v", delivered, err)
		if derr := s.DeadLetter(ctx, msg, reason, ClassExhausted); derr != nil {
			log.Error().Err(derr).Msg("dead-lettering failed; the sweeper will catch the message")
			return
		}
		log.Warn().Err(err).Msg("dead-lettered after its last delivery")
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

// hold keeps msg while s.Available fails, telling JetStream it is alive,
// and reports true when the dependency is back (handle it again) or false
// when there is nothing to wait for (settle the failure now).
func (s *Settler) hold(ctx context.Context, msg jetstream.Msg, cause error) bool {
	if s.Available == nil || ctx.Err() != nil || s.Available(ctx) == nil {
		return false
	}
	s.Log.Warn().Err(cause).Str("subject", msg.Subject()).Msg("a dependency is unavailable; holding the message until it is back")
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if err := s.Available(ctx); err == nil {
			return true
		}
		_ = msg.InProgress()
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
	if n := len(s.Backoff); n > 0 {
		return s.Backoff[min(int(delivered)-1, n-1)]
	}
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
	var seq uint64
	var stored time.Time
	attempts, stream := 1, ""
	if meta != nil {
		seq, attempts, stream, stored = meta.Sequence.Stream, int(meta.NumDelivered), meta.Stream, meta.Timestamp
	}
	headers := map[string]string{}
	for k := range msg.Headers() {
		headers[k] = msg.Headers().Get(k)
	}
	d := NewDeadLetter(s.Source, stream, seq, stored, msg.Subject(), msg.Data(), headers, reason, class, attempts)
	return PublishDeadLetter(ctx, s.JS, s.Subjects, d, s.Record)
}

// NewDeadLetter builds the dead letter of a message. Its id is derived from
// the stream, the sequence and the time the stream stored the message, so
// dead-lettering the same message twice (a crash between the publish and
// the terminate) records it once, while a new stream that counts from 1
// again (another NATS, a recreated stream) never collides with it.
func NewDeadLetter(source, stream string, seq uint64, stored time.Time, subject string, data []byte, headers map[string]string, reason, class string, attempts int) schemas.DeadLetter {
	id := uuid.NewString()
	if stream != "" && seq > 0 && !stored.IsZero() {
		id = uuid.NewSHA1(deadLetterNS, []byte(stream+"/"+strconv.FormatUint(seq, 10)+"/"+strconv.FormatInt(stored.UnixNano(), 10))).String()
	}
	kept := make(map[string]string, len(headers)+1)
	for k, v := range headers {
		kept[k] = v
	}
	headers = kept
	payload := string(data)
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		// Not text a database column takes (PostgreSQL refuses NUL and
		// invalid UTF-8), so it could never be recorded: kept as base64.
		payload = base64.StdEncoding.EncodeToString(data)
		headers[HeaderPayloadEncoding] = "base64"
	}
	reason = strings.ReplaceAll(strings.ToValidUTF8(reason, "\uFFFD"), "\x00", `\x00`)
	return schemas.DeadLetter{
		ID: id, Source: source, Stream: stream, StreamSeq: seq, Subject: subject, Payload: payload,
		Headers: headers, Reason: reason, Class: class, Attempts: attempts,
		CreatedAt: time.Now().UTC(), Status: schemas.DeadLetterOpen, ReplayOf: headers[HeaderReplayOf],
	}
}

var deadLetterNS = uuid.MustParse("5b1c0f1e-7d52-4d7e-9a55-2f1d7d3c9a10")

// HeaderPayloadEncoding, in a dead letter's recorded headers, says its
// payload is kept as base64: the message's payload was not UTF-8 text, or
// held NUL bytes. DeadLetterPayload decodes it.
const HeaderPayloadEncoding = "Troupe-Payload-Encoding"

// DeadLetterPayload is the payload of d's message, as it was received.
func DeadLetterPayload(d schemas.DeadLetter) []byte {
	if d.Headers[HeaderPayloadEncoding] == "base64" {
		if b, err := base64.StdEncoding.DecodeString(d.Payload); err == nil {
			return b
		}
	}
	return []byte(d.Payload)
}

// PublishDeadLetter publishes d to troupe.dlq.<source> with the headers
// that say why, then records it (with its whole payload). A payload that
// does not fit in one message with those headers (the message arrived near
// the server's max payload, or above the dead-letter stream's message size
// limit) is cut to fit in the stream's copy, which then says so
// (Troupe-Truncated) and how large the payload was (Troupe-Original-Size):
// a dead letter that cannot be published is never dead-lettered, and its
// message would be retried for ever. Its reason is masked first (redact):
// it becomes a header, the dead letter's record and the task's and job's
// reasons.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, subj Subjects, d schemas.DeadLetter, record func(context.Context, schemas.DeadLetter) error) error {
	d.Reason = redact.String(d.Reason)
	var maxPayload int64
	if nc := js.Conn(); nc != nil {
		maxPayload = nc.MaxPayload()
	}
	msg := DeadLetterMsg(subj, d, maxPayload)
	err := publishMsg(ctx, js, msg)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		// The dead-letter stream's own limit is below the server's.
		if limit := streamMaxMsgSize(ctx, js, StreamDLQ); limit > 0 {
			FitMsg(msg, limit)
			err = publishMsg(ctx, js, msg)
		}
	}
	if err != nil {
		return err
	}
	if record != nil {
		if err := record(ctx, d); err != nil {
			return fmt.Errorf("recording dead letter: %w", err)
		}
	}
	return nil
}

// DeadLetterMsg is d's copy for troupe.dlq.<source>: its payload, with
// the headers that say why, cut to fit in maxPayload (0: not cut).
func DeadLetterMsg(subj Subjects, d schemas.DeadLetter, maxPayload int64) *nats.Msg {
	headers := map[string]string{
		HeaderReason:          Clip(d.Reason, 1024),
		HeaderErrorClass:      d.Class,
		HeaderDeliveries:      strconv.Itoa(d.Attempts),
		HeaderOriginalSubject: d.Subject,
		HeaderStreamSeq:       strconv.FormatUint(d.StreamSeq, 10),
	}
	if d.ReplayOf != "" {
		headers[HeaderReplayOf] = d.ReplayOf
	}
	msg := NewMsg(subj.DLQ(d.Source), "dlq."+d.ID, DeadLetterPayload(d), headers)
	FitMsg(msg, maxPayload)
	return msg
}

// Headers of a dead letter's copy whose payload was cut to fit.
const (
	HeaderTruncated    = "Troupe-Truncated"
	HeaderOriginalSize = "Troupe-Original-Size"
)

// fitMargin is left free under a size limit when a payload is cut: the
// server counts a little more than the payload and headers.
const fitMargin = 256

// FitMsg cuts msg's payload, at a UTF-8 boundary, so that the message with
// its headers is within limit bytes (less a margin), and then marks it
// with Troupe-Truncated and Troupe-Original-Size. A message within limit
// is left as it is. It reports whether it cut.
func FitMsg(msg *nats.Msg, limit int64) bool {
	if limit <= 0 || msgBytes(msg) <= limit {
		return false
	}
	size := len(msg.Data)
	if msg.Header.Get(HeaderOriginalSize) == "" {
		msg.Header.Set(HeaderOriginalSize, strconv.Itoa(size))
	}
	msg.Header.Set(HeaderTruncated, "true")
	room := limit - fitMargin - (msgBytes(msg) - int64(len(msg.Data)))
	cut := int(max(0, min(room, int64(size))))
	for cut > 0 && cut < size && !utf8.RuneStart(msg.Data[cut]) {
		cut--
	}
	msg.Data = msg.Data[:cut]
	return true
}

// msgBytes is what the server's max payload counts of msg: its payload
// and its encoded headers.
func msgBytes(msg *nats.Msg) int64 {
	return int64(msg.Size() - len(msg.Subject) - len(msg.Reply))
}

// streamMaxMsgSize is a stream's message size limit, 0 when it has none
// or its configuration cannot be read.
func streamMaxMsgSize(ctx context.Context, js jetstream.JetStream, stream string) int64 {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	return int64(s.CachedInfo().Config.MaxMsgSize)
}

// Clip shortens s to at most n bytes without splitting a UTF-8 sequence,
// marking the cut with an ellipsis, so reasons and feedback stay within
// the limits of the schemas and headers that carry them.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Drain drains consumers and waits, within ctx, until they closed; past
// ctx they are stopped.
func Drain(ctx context.Context, ccs ...jetstream.ConsumeContext) {
	for _, cc := range ccs {
		cc.Drain()
	}
	for _, cc := range ccs {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
			cc.Stop()
		}
	}
}

// Wait waits for the groups, within ctx, and reports whether they finished.
func Wait(ctx context.Context, groups ...*sync.WaitGroup) bool {
	done := make(chan struct{})
	go func() {
		for _, g := range groups {
			g.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}
