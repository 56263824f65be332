package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/internal/bus"
)

// maxDeliveriesAdvisory is the part of the server's MAX_DELIVERIES
// advisory the sweeper reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// sweep handles one MAX_DELIVERIES advisory: a message that exhausted its
// consumer's MaxDeliver without being settled (its handler crashed the
// process every time) stays in the work-queue stream for ever. The sweeper
// fetches it by sequence, dead-letters it with its headers and deletes it.
func (s *Service) sweep(ctx context.Context, msg jetstream.Msg) error {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil || adv.Stream == "" || adv.StreamSeq == 0 {
		return bus.Permanent(fmt.Errorf("not a max deliveries advisory: %s", msg.Data()))
	}
	if !strings.HasPrefix(adv.Consumer, "workers-") && adv.Consumer != bus.ConsumerReview && adv.Consumer != bus.ConsumerOrchestrator {
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
	headers := map[string]string{}
	for k := range raw.Header {
		headers[k] = raw.Header.Get(k)
	}
	reason := fmt.Sprintf("delivered %d times to %s without being settled (MaxDeliver); the handler may crash on it", adv.Deliveries, adv.Consumer)
	d := bus.NewDeadLetter(adv.Consumer, adv.Stream, adv.StreamSeq, raw.Time, raw.Subject, raw.Data, headers, reason, bus.ClassExhausted, int(adv.Deliveries))
	if err := bus.PublishDeadLetter(ctx, s.js, s.subj, d, s.dl.Record); err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("deleting %s #%d: %w", adv.Stream, adv.StreamSeq, err)
	}
	s.log.Warn().Str("stream", adv.Stream).Uint64("stream_seq", adv.StreamSeq).Str("consumer", adv.Consumer).
		Str("dead_letter_id", d.ID).Msg("swept a message that exhausted MaxDeliver into the dead-letter stream")
	return nil
}
