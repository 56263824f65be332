package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/schemas"
)

// Topology is the JetStream layout of DESIGN.md: four streams and the
// durable consumers of the workers, the review service and the orchestrator.
type Topology struct {
	// Prefix of every subject. Defaults to "troupe".
	Prefix string
	// Roles that get a workers-<role> consumer. Defaults to none.
	Roles []string
	// AllRoles are the roles whose tasks and review requests the streams
	// store: a task for any other role is refused at publish, since no
	// consumer would ever take it. Defaults to schemas.Roles.
	AllRoles []string
	// Replicas of every stream. Defaults to 1; 3 on a cluster.
	Replicas int
	// AckWait of the work consumers: a worker that neither acks nor sends a
	// heartbeat within it has its message redelivered. Defaults to 30s.
	AckWait time.Duration
	// MaxDeliver of the work consumers. Defaults to 10.
	MaxDeliver int
	// MaxAckPending bounds the unacknowledged messages of a consumer,
	// across all its workers. Defaults to 1000.
	MaxAckPending int
	// Duplicates is the window in which a Nats-Msg-Id is deduplicated.
	// Defaults to 2 minutes.
	Duplicates time.Duration
	// EventsMaxAge is how long events are kept. Defaults to 7 days.
	EventsMaxAge time.Duration
	// DLQMaxAge is how long dead letters are kept. Defaults to 90 days.
	DLQMaxAge time.Duration
	// RoleMaxDeliver overrides MaxDeliver for a role's consumer.
	RoleMaxDeliver map[string]int
	// People get users of their own (Users). Defaults to none.
	People []Person
	// ReplyPrefixes are the prefixes of the inboxes services answer on
	// (Replies.Prefixes). Defaults to "_INBOX.".
	ReplyPrefixes []string
	// Limits bound each stream, by name; a stream not named, or a zero
	// field, gets DefaultLimits'.
	Limits map[string]StreamLimits
}

// StreamLimits bound what a stream keeps. A full work-queue stream (tasks,
// review requests) refuses a publish, so the outbox row that carried it
// stays and is retried, rather than dropping work; a full events,
// dead-letter or advisories stream drops its oldest messages (every event
// and dead letter is in the store as well).
type StreamLimits struct {
	// MaxMsgs is how many messages the stream keeps.
	MaxMsgs int64 `json:"maxMsgs,omitempty"`
	// MaxBytes is how many bytes the stream keeps.
	MaxBytes int64 `json:"maxBytes,omitempty"`
	// MaxMsgSize is the largest message the stream accepts, in bytes (the
	// server's max_payload bounds it as well).
	MaxMsgSize int32 `json:"maxMsgSize,omitempty"`
}

// DefaultLimits are the limits of each stream unless configured:
// TROUPE_TASKS and TROUPE_REVIEW 100,000 messages and 1 GiB, TROUPE_EVENTS
// 1,000,000 messages and 2 GiB, TROUPE_DLQ 100,000 messages and 1 GiB,
// TROUPE_ADVISORIES 100,000 messages and 64 MiB; every message at most
// 8 MiB (NATS's largest advised max_payload).
var DefaultLimits = map[string]StreamLimits{
	StreamTasks:      {MaxMsgs: 100_000, MaxBytes: 1 << 30, MaxMsgSize: 8 << 20},
	StreamReview:     {MaxMsgs: 100_000, MaxBytes: 1 << 30, MaxMsgSize: 8 << 20},
	StreamEvents:     {MaxMsgs: 1_000_000, MaxBytes: 2 << 30, MaxMsgSize: 8 << 20},
	StreamDLQ:        {MaxMsgs: 100_000, MaxBytes: 1 << 30, MaxMsgSize: 8 << 20},
	StreamAdvisories: {MaxMsgs: 100_000, MaxBytes: 64 << 20, MaxMsgSize: 8 << 20},
}

// LimitsOf are the limits of a stream: t.Limits', else DefaultLimits'.
func (t Topology) LimitsOf(stream string) StreamLimits {
	l, d := t.Limits[stream], DefaultLimits[stream]
	return StreamLimits{MaxMsgs: cmp.Or(l.MaxMsgs, d.MaxMsgs), MaxBytes: cmp.Or(l.MaxBytes, d.MaxBytes), MaxMsgSize: cmp.Or(l.MaxMsgSize, d.MaxMsgSize)}
}

// StreamAdvisories captures the MAX_DELIVERIES advisories of Troupe's
// consumers: advisories are plain NATS messages, at most once, so the
// sweeper reads them from a stream.
const StreamAdvisories = "TROUPE_ADVISORIES"

// ConsumerSweeper is the sweeper's consumer of StreamAdvisories.
const ConsumerSweeper = "sweeper"

// SourceOutbox is the source of the dead letters of outbox rows that could
// never be published (the relay's): their copies go to <prefix>.dlq.outbox.
const SourceOutbox = "outbox"

// maxDeliveriesAdvisory is the subject prefix of the server's
// MAX_DELIVERIES advisories: <prefix>.<stream>.<consumer>.
const maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

// MaxDeliveriesAdvisory is the subject of the MAX_DELIVERIES advisories of
// a stream's consumer.
func MaxDeliveriesAdvisory(stream, consumer string) string {
	return maxDeliveriesAdvisory + "." + stream + "." + consumer
}

// SweptConsumer reports whether consumer is one of Troupe's work consumers
// of stream, whose exhausted messages the sweeper dead-letters: a role's
// workers on TROUPE_TASKS, the review service on TROUPE_REVIEW, the
// orchestrator on TROUPE_EVENTS.
func (t Topology) SweptConsumer(stream, consumer string) bool {
	t = t.WithDefaults()
	switch stream {
	case StreamTasks:
		role, ok := strings.CutPrefix(consumer, "workers-")
		return ok && slices.Contains(t.AllRoles, role)
	case StreamReview:
		return consumer == ConsumerReview
	case StreamEvents:
		return consumer == ConsumerOrchestrator
	}
	return false
}

// MaxDeliverOf is the MaxDeliver of a role's consumer.
func (t Topology) MaxDeliverOf(role string) int {
	t = t.WithDefaults()
	if n := t.RoleMaxDeliver[role]; n > 0 {
		return n
	}
	return t.MaxDeliver
}

// The consumers set no JetStream BackOff: it would replace AckWait (which
// the workers' heartbeats are timed against) and skew NAK delays. Retries
// back off through the delays bus.Settler gives its NAKs, per role; a
// crashed worker's message comes back after AckWait.

// WithDefaults returns t with every zero field set to its default.
func (t Topology) WithDefaults() Topology {
	if t.Prefix == "" {
		t.Prefix = DefaultPrefix
	}
	if t.Replicas == 0 {
		t.Replicas = 1
	}
	if len(t.AllRoles) == 0 {
		t.AllRoles = schemas.Roles
	}
	if t.AckWait == 0 {
		t.AckWait = 30 * time.Second
	}
	if t.MaxDeliver == 0 {
		t.MaxDeliver = 10
	}
	if t.MaxAckPending == 0 {
		t.MaxAckPending = 1000
	}
	if t.Duplicates == 0 {
		t.Duplicates = 2 * time.Minute
	}
	if t.EventsMaxAge == 0 {
		t.EventsMaxAge = 7 * 24 * time.Hour
	}
	if t.DLQMaxAge == 0 {
		t.DLQMaxAge = 90 * 24 * time.Hour
	}
	return t
}

// Consumer names.
const (
	ConsumerReview       = "review"
	ConsumerOrchestrator = "orchestrator"
)

// WorkerConsumer is the durable consumer every worker of a role binds to.
func WorkerConsumer(role string) string { return "workers-" + role }

// Streams returns the stream configurations. Each stream's subjects are
// exactly those some consumer serves (a role's tasks, an event kind, a
// consumer's dead letters): a publish on any other subject finds no stream
// and is refused, rather than stored where nothing ever reads it. Updating
// an existing stream narrows its subjects the same way (JetStream lets a
// stream's subjects and limits change; what it already stores stays).
func (t Topology) Streams() []jetstream.StreamConfig {
	t = t.WithDefaults()
	s := Subjects{Prefix: t.Prefix}
	var tasks, reviews, dlq []string
	for _, role := range t.AllRoles {
		tasks = append(tasks, s.Task(role))
		reviews = append(reviews, s.Review(role))
		dlq = append(dlq, s.DLQ(WorkerConsumer(role)))
	}
	dlq = append(dlq, s.DLQ(ConsumerReview), s.DLQ(ConsumerOrchestrator), s.DLQ(ConsumerSweeper), s.DLQ(SourceOutbox))
	streams := []jetstream.StreamConfig{
		{
			Name: StreamTasks, Description: "role-tagged tasks, one subject per role",
			Subjects: tasks, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
			AllowAtomicPublish: true,
		},
		{
			Name: StreamReview, Description: "review requests for staged outputs",
			Subjects: reviews, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
			AllowAtomicPublish: true,
		},
		{
			Name: StreamEvents, Description: "job and task events",
			Subjects: s.events(schemas.EventKinds), Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
			MaxAge: t.EventsMaxAge, AllowAtomicPublish: true,
		},
		{
			Name: StreamDLQ, Description: "dead letters with their reasons",
			Subjects: dlq, Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
			MaxAge: t.DLQMaxAge, AllowAtomicPublish: true,
		},
		{
			Name: StreamAdvisories, Description: "MAX_DELIVERIES advisories of Troupe's consumers, for the sweeper",
			Subjects: []string{
				maxDeliveriesAdvisory + "." + StreamTasks + ".*",
				maxDeliveriesAdvisory + "." + StreamReview + ".*",
				maxDeliveriesAdvisory + "." + StreamEvents + ".*",
			},
			Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardOld,
			Storage: jetstream.FileStorage, Replicas: t.Replicas,
			MaxAge: t.EventsMaxAge,
		},
	}
	for i := range streams {
		l := t.LimitsOf(streams[i].Name)
		streams[i].MaxMsgs, streams[i].MaxBytes, streams[i].MaxMsgSize = l.MaxMsgs, l.MaxBytes, l.MaxMsgSize
	}
	return streams
}

// StreamOf returns a function that names t's stream storing messages
// published on a subject, or "" when none does.
func (t Topology) StreamOf() func(subject string) string {
	type filter struct{ subject, stream string }
	var filters []filter
	for _, sc := range t.Streams() {
		for _, f := range sc.Subjects {
			filters = append(filters, filter{f, sc.Name})
		}
	}
	return func(subject string) string {
		for _, f := range filters {
			if SubjectMatches(f.subject, subject) {
				return f.stream
			}
		}
		return ""
	}
}

// SubjectMatches reports whether subject matches the NATS subject filter,
// in which "*" stands for one token and a last ">" for one or more.
func SubjectMatches(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return st != ""
		case st == "" || (ft != "*" && ft != st):
			return false
		case !fmore || !smore:
			return !fmore && !smore
		}
		filter, subject = frest, srest
	}
}

// WorkerConsumerConfig is the consumer shared by a role's workers.
func (t Topology) WorkerConsumerConfig(role string) jetstream.ConsumerConfig {
	t = t.WithDefaults()
	md := t.MaxDeliverOf(role)
	return jetstream.ConsumerConfig{
		Durable:       WorkerConsumer(role),
		Description:   "shared by every " + role + " worker",
		FilterSubject: t.Prefix + ".tasks." + role,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    md,
		MaxAckPending: t.MaxAckPending,
	}
}

// SweeperConsumerConfig is the sweeper's consumer of the advisories.
func (t Topology) SweeperConsumerConfig() jetstream.ConsumerConfig {
	t = t.WithDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerSweeper,
		Description:   "dead-letters messages that exhausted MaxDeliver",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 64,
	}
}

// ReviewConsumerConfig is the review service's consumer.
func (t Topology) ReviewConsumerConfig() jetstream.ConsumerConfig {
	t = t.WithDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerReview,
		Description:   "the review service",
		FilterSubject: t.Prefix + ".review.*",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    t.MaxDeliver,
		MaxAckPending: t.MaxAckPending,
	}
}

// OrchestratorConsumerConfig is the orchestrator's consumer of the events
// it schedules on.
func (t Topology) OrchestratorConsumerConfig() jetstream.ConsumerConfig {
	t = t.WithDefaults()
	return jetstream.ConsumerConfig{
		Durable:     ConsumerOrchestrator,
		Description: "the orchestrator: schedules on promotions and rejections",
		FilterSubjects: []string{
			t.Prefix + ".events.*.output_promoted",
			t.Prefix + ".events.*.output_rejected",
		},
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    t.MaxDeliver,
		MaxAckPending: t.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Ensure creates or updates every stream and consumer. It is idempotent:
// running it again with the same topology changes nothing. A NATS user
// that may not create or update them gets an error that IsDenied at once,
// rather than after a timeout: see CheckConsumers.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	t = t.WithDefaults()
	// Each call gets its own time: on a busy cluster creating one R3
	// stream can take seconds, and a deadline for them all would never
	// let the last ones through.
	for _, sc := range t.Streams() {
		if err := jsCall(ctx, js, 15*time.Second, "creating stream "+sc.Name, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, sc)
			return err
		}); err != nil {
			return err
		}
	}
	for _, c := range t.consumers() {
		if err := jsCall(ctx, js, 15*time.Second, fmt.Sprintf("creating consumer %s on %s", c.cfg.Durable, c.stream), func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, c.stream, c.cfg)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// jsCall runs a JetStream API call within timeout, named what in its
// error. The server refuses a request the user may not make by telling
// the connection, not by answering it: the call ends at once then, with
// an error that IsDenied.
func jsCall(ctx context.Context, js jetstream.JetStream, timeout time.Duration, what string, call func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx, stop := abortOnDenial(ctx, js.Conn(), isJetStreamDenial)
	defer stop()
	err := call(ctx)
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); isJetStreamDenial(cause) {
		return fmt.Errorf("%s: %w", what, cause)
	}
	if last := js.Conn().LastError(); errors.Is(err, context.DeadlineExceeded) && isJetStreamDenial(last) {
		return fmt.Errorf("%s: %w", what, last) // a connection not made by Connect
	}
	return fmt.Errorf("%s: %w", what, err)
}

type streamConsumer struct {
	stream string
	cfg    jetstream.ConsumerConfig
}

// consumers are every durable consumer of the topology.
func (t Topology) consumers() []streamConsumer {
	consumers := []streamConsumer{
		{StreamReview, t.ReviewConsumerConfig()},
		{StreamEvents, t.OrchestratorConsumerConfig()},
		{StreamAdvisories, t.SweeperConsumerConfig()},
	}
	for _, role := range t.Roles {
		consumers = append(consumers, streamConsumer{StreamTasks, t.WorkerConsumerConfig(role)})
	}
	return consumers
}

// Check reports an error unless every stream exists, for readiness.
func (t Topology) Check(ctx context.Context, js jetstream.JetStream) error {
	for _, sc := range t.Streams() {
		err := jsCall(ctx, js, 10*time.Second, "stream "+sc.Name, func(ctx context.Context) error {
			_, err := js.Stream(ctx, sc.Name)
			return err
		})
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s does not exist", sc.Name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ConsumerRef names a durable consumer of a stream.
type ConsumerRef struct{ Stream, Consumer string }

// CheckConsumers reports an error unless every stream exists and so do
// the consumers named: what a service whose NATS user may not create them
// needs before it starts. Whoever may (the orchestrator) runs Ensure.
func (t Topology) CheckConsumers(ctx context.Context, js jetstream.JetStream, consumers ...ConsumerRef) error {
	if err := t.Check(ctx, js); err != nil {
		return err
	}
	for _, c := range consumers {
		err := jsCall(ctx, js, 10*time.Second, fmt.Sprintf("consumer %s of stream %s", c.Consumer, c.Stream), func(ctx context.Context) error {
			_, err := js.Consumer(ctx, c.Stream, c.Consumer)
			return err
		})
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("consumer %s of stream %s does not exist", c.Consumer, c.Stream)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
