// Package bus is Troupe's NATS plumbing: connecting (or embedding a
// server), the JetStream topology of DESIGN.md, publishing with message ids,
// dead-lettering, and the request/reply API helpers.
package bus

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
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

// ProcessesPing is the subject every running Troupe process answers with
// its schemas.ProcessInfo.
func (s Subjects) ProcessesPing() string { return s.Prefix + ".processes.ping" }

// DLQ is the dead-letter subject of a source (a consumer's name).
func (s Subjects) DLQ(source string) string { return s.Prefix + ".dlq." + source }

// API is the subject of an API endpoint such as "jobs.submit".
func (s Subjects) API(endpoint string) string { return s.Prefix + ".api." + endpoint }

// Connect connects to NATS at url and reconnects for ever; name identifies
// the client in the server's monitoring. opts come after Troupe's own
// (ConnectOptions gives the credentials, TLS and inbox of a configuration).
// Errors the server reports asynchronously are logged; a permissions
// violation says which subject the user may not use.
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
		nats.ErrorHandler(AsyncErrors(log)),
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

// ConnectOptions are the options that authenticate as c says (user and
// password, token, creds file or NKey seed; credentials in the URL need
// none), set up TLS, and choose the inbox prefix: c.InboxPrefix, else
// "_INBOX.<user>" for a user named in c or in the URL, so a server can let
// each user subscribe only to its own replies.
func ConnectOptions(c config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkeyFile: %w", err)
		}
		opts = append(opts, opt)
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	if p := inboxPrefix(c); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts, nil
}

// inboxPrefix is the inbox prefix a configuration asks for, or "" for the
// client's default.
func inboxPrefix(c config.NATS) string {
	if c.InboxPrefix != "" {
		return c.InboxPrefix
	}
	user := c.User
	if user == "" {
		first, _, _ := strings.Cut(c.URL, ",")
		if u, err := url.Parse(strings.TrimSpace(first)); err == nil && u.User != nil {
			user = u.User.Username()
		}
	}
	if user == "" || !userToken.MatchString(user) {
		return ""
	}
	return InboxPrefix(user)
}

var userToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Publish publishes payload on subject with a Nats-Msg-Id, so a retried
// publish is deduplicated by the stream, and waits for the stream's ack.
func Publish(ctx context.Context, js jetstream.JetStream, subject, msgID string, payload []byte, headers map[string]string) error {
	return publishMsg(ctx, js, NewMsg(subject, msgID, payload, headers))
}

// publishMsg publishes msg and waits for the stream's ack, within ctx or,
// when ctx has no deadline, 10 seconds.
func publishMsg(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publishing %s: %w", msg.Subject, err)
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
