// Package bus is Troupe's NATS plumbing: connecting (or embedding a
// server), the JetStream topology of DESIGN.md, publishing with message ids,
// dead-lettering, and the request/reply API helpers.
package bus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/config"
)

// Stream names.
const (
	StreamTasks  = "TROUPE_TASKS"
	StreamReview = "TROUPE_REVIEW"
	StreamEvents = "TROUPE_EVENTS"
	StreamDLQ    = "TROUPE_DLQ"
)

// Header names Troupe sets on dead letters.
const (
	HeaderReason          = "Troupe-Reason"
	HeaderErrorClass      = "Troupe-Error-Class"
	HeaderDeliveries      = "Troupe-Deliveries"
	HeaderOriginalSubject = "Troupe-Original-Subject"
	HeaderStreamSeq       = "Troupe-Stream-Seq"
)

// DefaultPrefix is the subject prefix when none is configured.
const DefaultPrefix = "troupe"

// Subjects builds Troupe's subjects under a prefix.
type Subjects struct{ Prefix string }

// Task is the subject of a role's tasks.
func (s Subjects) Task(role string) string { return s.Prefix + ".tasks." + role }

// Review is the subject of a role's review requests.
func (s Subjects) Review(role string) string { return s.Prefix + ".review." + role }

// Event is the subject of one event of a job.
func (s Subjects) Event(jobID, kind string) string {
	return s.Prefix + ".events." + jobID + "." + kind
}

// WorkersPing is the subject every running worker answers with its
// schemas.WorkerInfo.
func (s Subjects) WorkersPing() string { return s.Prefix + ".workers.ping" }

// DLQ is the dead-letter subject of a source (a consumer's name).
func (s Subjects) DLQ(source string) string { return s.Prefix + ".dlq." + source }

// API is the subject of an API endpoint such as "jobs.submit".
func (s Subjects) API(endpoint string) string { return s.Prefix + ".api." + endpoint }

// Connect connects to NATS at url and reconnects for ever; name identifies
// the client in the server's monitoring.
func Connect(natsURL, name string, log zerolog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	all := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
	}, opts...)
	nc, err := nats.Connect(natsURL, all...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to nats at %s: %w", config.RedactDSN(natsURL), err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(15*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// Publish publishes payload on subject with a Nats-Msg-Id, so a retried
// publish is deduplicated by the stream, and waits for the stream's ack.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, payload []byte, headers map[string]string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg := NewMsg(subject, msgID, payload, headers)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publishing %s: %w", subject, err)
	}
	return nil
}

// NewMsg builds a message with its id and headers.
func NewMsg(subject, msgID string, payload []byte, headers map[string]string) *nats.Msg {
	msg := nats.NewMsg(subject)
	msg.Data = payload
	for k, v := range headers {
		msg.Header.Set(k, v)
	}
	if msgID != "" {
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	return msg
}

// CheckServer reports an error unless the server runs NATS 2.10 or newer
// with JetStream: the orchestrator's consumer filters on several subjects,
// which older servers refuse.
func CheckServer(nc *nats.Conn) error {
	v := nc.ConnectedServerVersion()
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("nats server version %q: not understood", v)
	}
	if major < 2 || (major == 2 && minor < 10) {
		return fmt.Errorf("nats server %s runs NATS %s; Troupe needs NATS 2.10 or newer with JetStream", config.RedactDSN(nc.ConnectedUrl()), v)
	}
	if !nc.HeadersSupported() {
		return fmt.Errorf("nats server %s does not support headers", config.RedactDSN(nc.ConnectedUrl()))
	}
	return nil
}
