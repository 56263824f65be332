package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/store"
)

// SourceOutbox is the source of the dead letters of outbox rows that
// could never be published: their copies go to troupe.dlq.outbox.
const SourceOutbox = bus.SourceOutbox

// DefaultOutboxMaxAttempts is how many times a row that cannot be
// published is tried before it is dead-lettered, unless configured.
const DefaultOutboxMaxAttempts = 5

// errNoAck is a publish JetStream did not answer in time.
var errNoAck = errors.New("no ack from JetStream within 10s")

// permanentFailure says why outbox row m can never be published, given
// that a publish failed with err, or "" when the failure may pass: NATS
// away or slow, or the stream m is meant for missing until it is created
// again. exists caches, for one pass, whether a stream exists.
func (r *Relay) permanentFailure(ctx context.Context, m store.OutboxMessage, err error, exists map[string]bool) string {
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Sprintf("%d bytes and its headers are more than the server's max payload of %d bytes", len(m.Payload), r.js.Conn().MaxPayload())
	case errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		return fmt.Sprintf("%d bytes are more than its stream's message size limit", len(m.Payload))
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrBadHeaderMsg):
		return "not a valid NATS message"
	}
	streams := r.cfg.Streams
	if streams == nil {
		streams = r.cfg.StreamOf
	}
	if streams == nil {
		return ""
	}
	home := streams(m.Subject)
	noStream := errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
	switch {
	case home == "" && (noStream || errors.Is(err, errNoAck)):
		// No stream answers, or the server refused the subject to this
		// NATS user (it says so to the connection; the publish just goes
		// unanswered).
		return fmt.Sprintf("no stream of Troupe's takes subject %s", m.Subject)
	case home != "" && noStream:
		there, asked := exists[home]
		if !asked {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, serr := r.js.Stream(ctx, home)
			cancel()
			there = serr == nil
			exists[home] = there
		}
		if there {
			return fmt.Sprintf("stream %s does not take subject %s", home, m.Subject)
		}
	}
	return ""
}

// deadLetter records outbox row m, which failed for the attempts-th time
// for a reason no retry fixes, as a dead letter of source "outbox" (and
// stops the task that waits for it), deletes the row and queues the dead
// letter's copy for TROUPE_DLQ, in one transaction. A row that was a dead
// letter's copy is only deleted: its record is kept already. It reports
// false when the row was gone (another relay sent it meanwhile).
func (r *Relay) deadLetter(ctx context.Context, m store.OutboxMessage, why string, cause error, attempts int) (bool, error) {
	dl := r.cfg.DeadLetters
	ctx = context.WithoutCancel(ctx)
	reason := redact.String(fmt.Sprintf("the outbox relay gave up after %d attempts: %s (%v)", attempts, why, cause))
	headers := map[string]string{jetstream.MsgIDHeader: m.MsgID}
	for k, v := range m.Headers {
		headers[k] = v
	}
	d := bus.NewDeadLetter(SourceOutbox, "", 0, time.Time{}, m.Subject, m.Payload, headers, reason, bus.ClassPermanent, attempts)
	copyOnly := strings.HasPrefix(m.Subject, dl.Subjects.DLQ(""))
	var err error
	if !copyOnly {
		if d, err = dl.identified(ctx, d); err != nil {
			return false, err
		}
	}
	var rec recorded
	err = r.store.InTx(ctx, func(q store.Querier) error {
		// Fails with ErrNotFound when the row is no longer there unsent.
		if _, err := q.OutboxMarkFailed(ctx, m.Seq, reason, time.Time{}); err != nil {
			return err
		}
		if err := q.OutboxDeleteSent(ctx, []int64{m.Seq}); err != nil {
			return err
		}
		if copyOnly {
			return nil
		}
		var err error
		if rec, err = dl.recordIn(ctx, q, d); err != nil {
			return err
		}
		cp := bus.DeadLetterMsg(dl.Subjects, d, r.js.Conn().MaxPayload())
		row := store.OutboxMessage{Subject: cp.Subject, MsgID: "dlq." + d.ID, Payload: cp.Data, Headers: map[string]string{}}
		for k := range cp.Header {
			if k != jetstream.MsgIDHeader {
				row.Headers[k] = cp.Header.Get(k)
			}
		}
		return q.OutboxInsert(ctx, []store.OutboxMessage{row})
	})
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	dl.done(d, rec)
	r.Notify()
	log := r.cfg.Logger.Error().Str("subject", m.Subject).Int64("seq", m.Seq).Int("attempts", attempts).Str("reason", reason)
	if copyOnly {
		log.Msg("a dead letter's copy could never be published to TROUPE_DLQ; dropped (the dead letter is recorded)")
	} else {
		log.Str("dead_letter_id", d.ID).Msg("outbox row dead-lettered: it can never be published")
	}
	return true, nil
}
