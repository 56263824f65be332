package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// maxDeliveriesAdvisory is the part of the server's MAX_DELIVERIES
// advisory the sweeper reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// sweepRecheck is how long the sweeper waits before looking again at an
// advisory whose consumer has not yet moved past the message.
const sweepRecheck = 5 * time.Second

// sweep handles one MAX_DELIVERIES advisory: a message that exhausted its
// consumer's MaxDeliver without being settled (its handler crashed the
// process every time) stays in the work-queue stream for ever. The sweeper
// fetches it by sequence, dead-letters it with its headers and deletes it.
//
// An advisory is a plain message anyone who may publish on its subject
// can forge (no Troupe user but admin may), so the sweeper believes only
// what JetStream and the store say: see checkAdvisory. A forged advisory
// is logged and acknowledged; nothing is deleted or dead-lettered.
func (s *Service) sweep(ctx context.Context, msg jetstream.Msg) error {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil || adv.Stream == "" || adv.StreamSeq == 0 {
		return bus.Permanent(fmt.Errorf("not a max deliveries advisory: %s", msg.Data()))
	}
	log := s.log.With().Str("advisory_subject", msg.Subject()).Str("stream", adv.Stream).Str("consumer", adv.Consumer).
		Uint64("stream_seq", adv.StreamSeq).Logger()
	if !(bus.Topology{}).SweptConsumer(adv.Stream, adv.Consumer) {
		if msg.Subject() != bus.MaxDeliveriesAdvisory(adv.Stream, adv.Consumer) {
			log.Warn().Msg("ignored a max deliveries advisory: it names another stream or consumer than its subject")
		}
		return nil // not one of Troupe's consumers: its owner decides
	}
	stream, err := s.js.Stream(ctx, adv.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", adv.Stream, err)
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled or dead-lettered already
	}
	if err != nil {
		return fmt.Errorf("fetching %s #%d: %w", adv.Stream, adv.StreamSeq, err)
	}
	workQueue := stream.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy
	if err := s.checkAdvisory(ctx, msg.Subject(), adv, raw, workQueue); err != nil {
		var retry *bus.RetryError
		if errors.As(err, &retry) {
			return err
		}
		log.Warn().Err(err).Msg("ignored a max deliveries advisory that JetStream or the store contradicts: nothing deleted or dead-lettered")
		return nil
	}
	headers := map[string]string{}
	for k := range raw.Header {
		headers[k] = raw.Header.Get(k)
	}
	reason := fmt.Sprintf("delivered %d times to %s without being settled (MaxDeliver); the handler may crash on it", adv.Deliveries, adv.Consumer)
	d := bus.NewDeadLetter(adv.Consumer, adv.Stream, adv.StreamSeq, raw.Time, raw.Subject, raw.Data, headers, reason, bus.ClassExhausted, int(adv.Deliveries))
	if err := bus.PublishDeadLetter(ctx, s.js, s.subj, d, s.dl.Record); err != nil {
		return err
	}
	// A work queue keeps an unsettled message for ever; a limits stream
	// (the events) keeps its history whatever its consumers did, and the
	// consumer has moved past the message already.
	if workQueue {
		if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("deleting %s #%d: %w", adv.Stream, adv.StreamSeq, err)
		}
	}
	log.Warn().Str("dead_letter_id", d.ID).Msg("swept a message that exhausted MaxDeliver into the dead-letter stream")
	return nil
}

// checkAdvisory returns an error unless JetStream (and, for an event, the
// store) confirms that the consumer an advisory names gave up on the
// message it points at:
//   - the advisory's subject names the stream and consumer its body does;
//   - the consumer exists, and its MaxDeliver is at most the deliveries
//     claimed;
//   - the message's subject is one the consumer serves;
//   - the consumer has delivered the message, and no longer waits for
//     its ack: its ack floor is past it, or nothing at all waits for an
//     ack. After MaxDeliver deliveries the server drops a message from
//     the consumer's pending (JetStream tells no message's own delivery
//     count, only the floor and how many are pending). In a work queue a
//     message still there that its consumer delivered and no longer waits
//     for was never acknowledged: the consumer gave up on it.
//
// A limits stream (the events) keeps acknowledged messages too, and
// JetStream tells no message's delivery count, so there the store decides
// as well: only an event of a job still running is dead-lettered; an event
// of a finished job has nothing left to do, whatever became of it.
//
// While other messages wait for an ack below or around it, the consumer may
// still hold the message: a RetryError looks at the advisory again later
// (on a busy consumer the sweep waits for its floor to move past).
func (s *Service) checkAdvisory(ctx context.Context, subject string, adv maxDeliveriesAdvisory, raw *jetstream.RawStreamMsg, workQueue bool) error {
	if subject != bus.MaxDeliveriesAdvisory(adv.Stream, adv.Consumer) {
		return fmt.Errorf("published on %s, about %s of %s", subject, adv.Consumer, adv.Stream)
	}
	cons, err := s.js.Consumer(ctx, adv.Stream, adv.Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%s has no consumer %s", adv.Stream, adv.Consumer)
	}
	if err != nil {
		return bus.RetryAfter(fmt.Errorf("consumer %s of %s: %w", adv.Consumer, adv.Stream, err), sweepRecheck)
	}
	info := cons.CachedInfo()
	if md := info.Config.MaxDeliver; md <= 0 || adv.Deliveries < uint64(md) {
		return fmt.Errorf("claims %d deliveries; %s gives up after %d", adv.Deliveries, adv.Consumer, md)
	}
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	if len(filters) > 0 && !slices.ContainsFunc(filters, func(f string) bool { return bus.SubjectMatches(f, raw.Subject) }) {
		return fmt.Errorf("#%d is on %s, which %s does not serve", adv.StreamSeq, raw.Subject, adv.Consumer)
	}
	if info.Delivered.Stream < adv.StreamSeq {
		return fmt.Errorf("%s has not delivered #%d yet", adv.Consumer, adv.StreamSeq)
	}
	if info.AckFloor.Stream < adv.StreamSeq && info.NumAckPending > 0 {
		return bus.RetryAfter(fmt.Errorf("%s may still hold #%d: %d messages wait for an ack", adv.Consumer, adv.StreamSeq, info.NumAckPending), sweepRecheck)
	}
	if workQueue {
		return nil
	}
	ev, err := schemas.Decode[schemas.Event](schemas.SchemaEvent, raw.Data)
	if err != nil {
		return nil // not an event: nothing the store could say
	}
	job, err := s.store.JobGetByID(ctx, ev.JobID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("the event is of job %s, which does not exist", ev.JobID)
	case err != nil:
		return bus.RetryAfter(fmt.Errorf("job %s: %w", ev.JobID, err), sweepRecheck)
	case job.Status != schemas.JobRunning:
		return fmt.Errorf("the event's job %s is %s: nothing is left to do", ev.JobID, job.Status)
	}
	return nil
}
