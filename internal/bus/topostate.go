package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamMark tells one life of a stream from the next: a stream deleted
// and created again has another creation time, and a stream whose
// sequence went backwards lost what it held.
type StreamMark struct {
	Created time.Time
	LastSeq uint64
}

// TopologyState is what Inspect found: the marks of the streams that
// exist, and the streams and consumers that do not.
type TopologyState struct {
	Marks   map[string]StreamMark
	Missing []string
	// MissingStreams names the streams among Missing.
	MissingStreams []string
}

// Consumers names every durable consumer of t.
func (t Topology) Consumers() []ConsumerRef {
	t = t.WithDefaults()
	var out []ConsumerRef
	for _, c := range t.consumers() {
		out = append(out, ConsumerRef{Stream: c.stream, Consumer: c.cfg.Durable})
	}
	return out
}

// Inspect looks at every stream and consumer of t: what exists, and the
// marks of the streams. An error is returned only when it could not look.
func (t Topology) Inspect(ctx context.Context, js jetstream.JetStream) (TopologyState, error) {
	state := TopologyState{Marks: map[string]StreamMark{}}
	for _, sc := range t.Streams() {
		var info *jetstream.StreamInfo
		err := jsCall(ctx, js, 10*time.Second, "stream "+sc.Name, func(ctx context.Context) error {
			st, err := js.Stream(ctx, sc.Name)
			if err == nil {
				info = st.CachedInfo()
			}
			return err
		})
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			state.Missing = append(state.Missing, "stream "+sc.Name)
			state.MissingStreams = append(state.MissingStreams, sc.Name)
		case err != nil:
			return state, err
		default:
			state.Marks[sc.Name] = StreamMark{Created: info.Created, LastSeq: info.State.LastSeq}
		}
	}
	for _, c := range t.Consumers() {
		if _, ok := state.Marks[c.Stream]; !ok {
			continue // counted with its stream
		}
		err := jsCall(ctx, js, 10*time.Second, fmt.Sprintf("consumer %s of stream %s", c.Consumer, c.Stream), func(ctx context.Context) error {
			_, err := js.Consumer(ctx, c.Stream, c.Consumer)
			return err
		})
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			state.Missing = append(state.Missing, fmt.Sprintf("consumer %s of stream %s", c.Consumer, c.Stream))
		case err != nil:
			return state, err
		}
	}
	return state, nil
}

// Lost says why a stream lost what it held between two looks, or "" when
// it did not: created again, or its last sequence moved backwards.
func (m StreamMark) Lost(now StreamMark) string {
	switch {
	case !now.Created.Equal(m.Created):
		return "created again"
	case now.LastSeq < m.LastSeq:
		return fmt.Sprintf("its last sequence went back from %d to %d", m.LastSeq, now.LastSeq)
	}
	return ""
}

// Server advisories that say a stream lost messages. A purge says so in
// the API audit advisory only, which the server sends for every
// JetStream API request while someone listens.
const (
	advisoryAPI           = "$JS.EVENT.ADVISORY.API"
	advisoryStreamDeleted = "$JS.EVENT.ADVISORY.STREAM.DELETED"
	apiStreamPurge        = "$JS.API.STREAM.PURGE."
	apiStreamDelete       = "$JS.API.STREAM.DELETE."
)

// LossAdvisories are the subjects WatchLosses listens on for t's streams.
func (t Topology) LossAdvisories() []string {
	out := []string{advisoryAPI}
	for _, sc := range t.Streams() {
		out = append(out, advisoryStreamDeleted+"."+sc.Name)
	}
	return out
}

// WatchLosses calls lost with the stream and a reason whenever the server
// advises that one of t's streams was purged or deleted. Advisories are plain NATS
// messages, at most once: a caller also looks for itself now and then.
func (t Topology) WatchLosses(nc *nats.Conn, lost func(stream, reason string)) ([]*nats.Subscription, error) {
	ours := map[string]bool{}
	for _, sc := range t.Streams() {
		ours[sc.Name] = true
	}
	var subs []*nats.Subscription
	unsubscribe := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, subject := range t.LossAdvisories() {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			if stream, ok := strings.CutPrefix(m.Subject, advisoryStreamDeleted+"."); ok {
				lost(stream, "stream "+stream+" deleted")
				return
			}
			var audit struct {
				Subject  string `json:"subject"`
				Response string `json:"response"`
			}
			if json.Unmarshal(m.Data, &audit) != nil {
				return
			}
			var resp struct {
				Success bool `json:"success"`
			}
			if json.Unmarshal([]byte(audit.Response), &resp) != nil || !resp.Success {
				return
			}
			for prefix, what := range map[string]string{apiStreamPurge: "purged", apiStreamDelete: "deleted"} {
				if stream, ok := strings.CutPrefix(audit.Subject, prefix); ok && ours[stream] {
					lost(stream, "stream "+stream+" "+what)
				}
			}
		})
		if err != nil {
			unsubscribe()
			return nil, fmt.Errorf("listening to %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}
