package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Topology is the JetStream layout of DESIGN.md: four streams and the
// durable consumers of the workers, the review service and the orchestrator.
type Topology struct {
	// Prefix of every subject. Defaults to "troupe".
	Prefix string
	// Roles that get a workers-<role> consumer. Defaults to none.
	Roles []string
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
}

// StreamAdvisories captures the MAX_DELIVERIES advisories of Troupe's
// consumers: advisories are plain NATS messages, at most once, so the
// sweeper reads them from a stream.
const StreamAdvisories = "TROUPE_ADVISORIES"

// ConsumerSweeper is the sweeper's consumer of StreamAdvisories.
const ConsumerSweeper = "sweeper"

// maxDeliveriesAdvisory is the subject prefix of the server's
// MAX_DELIVERIES advisories: <prefix>.<stream>.<consumer>.
const maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

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

// Streams returns the stream configurations.
func (t Topology) Streams() []jetstream.StreamConfig {
	t = t.WithDefaults()
	return []jetstream.StreamConfig{
		{
			Name: StreamTasks, Description: "role-tagged tasks, one subject per role",
			Subjects: []string{t.Prefix + ".tasks.*"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
		},
		{
			Name: StreamReview, Description: "review requests for staged outputs",
			Subjects: []string{t.Prefix + ".review.*"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
		},
		{
			Name: StreamEvents, Description: "job and task events",
			Subjects: []string{t.Prefix + ".events.>"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
			MaxAge: t.EventsMaxAge,
		},
		{
			Name: StreamDLQ, Description: "dead letters with their reasons",
			Subjects: []string{t.Prefix + ".dlq.>"}, Retention: jetstream.LimitsPolicy,
			Storage: jetstream.FileStorage, Replicas: t.Replicas, Duplicates: t.Duplicates,
			MaxAge: t.DLQMaxAge,
		},
		{
			Name: StreamAdvisories, Description: "MAX_DELIVERIES advisories of Troupe's consumers, for the sweeper",
			Subjects: []string{
				maxDeliveriesAdvisory + "." + StreamTasks + ".*",
				maxDeliveriesAdvisory + "." + StreamReview + ".*",
				maxDeliveriesAdvisory + "." + StreamEvents + ".*",
			},
			Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: t.Replicas,
			MaxAge: t.EventsMaxAge,
		},
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
// running it again with the same topology changes nothing.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	t = t.WithDefaults()
	// Each call gets its own time: on a busy cluster creating one R3
	// stream can take seconds, and a deadline for them all would never
	// let the last ones through.
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 15*time.Second) }
	for _, sc := range t.Streams() {
		sctx, cancel := step()
		_, err := js.CreateOrUpdateStream(sctx, sc)
		cancel()
		if err != nil {
			return fmt.Errorf("creating stream %s: %w", sc.Name, err)
		}
	}
	consumers := []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{
		{StreamReview, t.ReviewConsumerConfig()},
		{StreamEvents, t.OrchestratorConsumerConfig()},
		{StreamAdvisories, t.SweeperConsumerConfig()},
	}
	for _, role := range t.Roles {
		consumers = append(consumers, struct {
			stream string
			cfg    jetstream.ConsumerConfig
		}{StreamTasks, t.WorkerConsumerConfig(role)})
	}
	for _, c := range consumers {
		cctx, cancel := step()
		_, err := js.CreateOrUpdateConsumer(cctx, c.stream, c.cfg)
		cancel()
		if err != nil {
			return fmt.Errorf("creating consumer %s on %s: %w", c.cfg.Durable, c.stream, err)
		}
	}
	return nil
}

// Check reports an error unless every stream exists, for readiness.
func (t Topology) Check(ctx context.Context, js jetstream.JetStream) error {
	for _, sc := range t.Streams() {
		if _, err := js.Stream(ctx, sc.Name); err != nil {
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("stream %s does not exist", sc.Name)
			}
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	return nil
}
