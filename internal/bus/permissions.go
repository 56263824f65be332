package bus

import (
	"slices"

	"github.com/troupe-dev/troupe/schemas"
)

// Least privilege: a deployment can give every service a NATS user of its
// own that may publish and subscribe to exactly what the service needs
// (Topology.Users; troupe nats-config writes them as a nats-server
// authorization block). A developer worker then consumes developer tasks
// only, and only the review service serves review decisions.

// Users of a least-privilege deployment, besides WorkerUser(role).
const (
	// UserOrchestrator runs troupe orchestrator. It creates and updates
	// Troupe's streams and consumers; nothing else does.
	UserOrchestrator = "orchestrator"
	// UserReview runs troupe review and its dashboard.
	UserReview = "review"
	// UserClient submits jobs and reads them: troupe submit, jobs, memory,
	// workspace, reviews ls|show, dlq ls|show, and the nats CLI.
	UserClient = "client"
	// UserReviewer is a person who also decides reviews and replays or
	// discards dead letters from the command line.
	UserReviewer = "reviewer"
	// UserAdmin may do everything: people running the nats CLI on the
	// streams (reports, backups, deleting one). No service needs it.
	UserAdmin = "admin"
)

// ServiceName is the name of Troupe's micro service, which the
// orchestrator and the review service both serve.
const ServiceName = "troupe"

// WorkerUser is the NATS user of a role's workers.
func WorkerUser(role string) string { return "worker-" + role }

// InboxPrefix is the prefix of a user's reply subjects. Replies, and the
// messages a pull consumer hands out, arrive on inboxes: a user that may
// subscribe to its own inboxes only cannot read anybody else's.
func InboxPrefix(user string) string { return "_INBOX." + user }

// Permissions are the subjects a NATS user may publish and subscribe to:
// nothing else.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// Responses lets the user answer each request it receives, once, on
	// whatever reply subject the request names (the server's
	// allow_responses): the API endpoints and the workers' pings reply so.
	Responses bool
}

// User is one NATS user of a least-privilege deployment.
type User struct {
	Name string
	// About says who connects as the user.
	About string
	// Permissions are nil for the admin, which may do everything.
	Permissions *Permissions
}

// workerEvents are the events a worker writes: its stage, and what a dead
// letter or a spent budget does to a task and its job.
var workerEvents = []string{schemas.EventOutputStaged, schemas.EventTaskDeadLettered, schemas.EventJobFailed, schemas.EventJobBudgetExceeded}

// reviewEvents are the events the review service writes: its decisions,
// an output parked for a person, and what a dead letter does.
var reviewEvents = []string{schemas.EventOutputAwaitingReview, schemas.EventOutputPromoted, schemas.EventOutputRejected,
	schemas.EventTaskDeadLettered, schemas.EventJobFailed}

// WorkerSubjects are the subjects a role's worker publishes messages on:
// its review requests, the events it writes and its dead letters. Its
// outbox relay claims rows on these only.
func (s Subjects) WorkerSubjects(role string) []string {
	return append([]string{s.Review(role), s.DLQ(WorkerConsumer(role))}, s.events(workerEvents)...)
}

// ReviewSubjects are the subjects the review service publishes messages
// on: its events and its dead letters. Its outbox relay claims rows on
// these only.
func (s Subjects) ReviewSubjects() []string {
	return append([]string{s.DLQ(ConsumerReview)}, s.events(reviewEvents)...)
}

func (s Subjects) events(kinds []string) []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = s.Event("*", k)
	}
	return out
}

// Users returns the users of a least-privilege deployment of t:
// orchestrator, review, a worker user for each of t.Roles, client,
// reviewer and admin.
func (t Topology) Users() []User {
	t = t.WithDefaults()
	s := Subjects{Prefix: t.Prefix}
	api := func(endpoints ...string) []string {
		out := make([]string, len(endpoints))
		for i, e := range endpoints {
			out[i] = s.API(e)
		}
		return out
	}
	var streamInfo []string
	for _, sc := range t.Streams() {
		streamInfo = append(streamInfo, "$JS.API.STREAM.INFO."+sc.Name)
	}
	// A pull consumer's user binds to it, pulls from it and acks (and
	// sends heartbeats) on the reply subjects of its messages.
	consume := func(stream, consumer string) []string {
		return []string{
			"$JS.API.CONSUMER.INFO." + stream + "." + consumer,
			"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer,
			"$JS.ACK." + stream + "." + consumer + ".>",
		}
	}
	// The micro service answers discovery on $SRV.<verb>[.troupe[.<id>]].
	service := []string{"$SRV.*", "$SRV.*." + ServiceName, "$SRV.*." + ServiceName + ".*"}
	cat := func(lists ...[]string) []string { return slices.Concat(lists...) }

	var orch []string
	for _, sc := range t.Streams() {
		orch = append(orch, "$JS.API.STREAM.CREATE."+sc.Name, "$JS.API.STREAM.UPDATE."+sc.Name)
	}
	for _, c := range t.consumers() {
		// With one filter subject the client names it in the subject.
		orch = append(orch, "$JS.API.CONSUMER.CREATE."+c.stream+"."+c.cfg.Durable, "$JS.API.CONSUMER.CREATE."+c.stream+"."+c.cfg.Durable+".>",
			// The topology watcher looks whether it still exists.
			"$JS.API.CONSUMER.INFO."+c.stream+"."+c.cfg.Durable)
	}
	for _, stream := range []string{StreamTasks, StreamReview, StreamEvents} {
		// The sweeper takes a message that exhausted its deliveries out.
		orch = append(orch, "$JS.API.STREAM.MSG.GET."+stream, "$JS.API.STREAM.MSG.DELETE."+stream)
	}
	users := []User{{
		Name:  UserOrchestrator,
		About: "troupe orchestrator: the jobs, artifacts and dlq API; publishes every role's tasks; creates and updates Troupe's streams and consumers (it cannot delete or purge them)",
		Permissions: &Permissions{
			Publish: cat(
				[]string{s.Prefix + ".tasks.*", s.Prefix + ".review.*", s.Prefix + ".events.>", s.Prefix + ".dlq.>"},
				streamInfo, orch,
				consume(StreamEvents, ConsumerOrchestrator), consume(StreamAdvisories, ConsumerSweeper),
			),
			Subscribe: cat(api("jobs.*", "artifacts.*", "dlq.*"), service, []string{s.ProcessesPing(), InboxPrefix(UserOrchestrator) + ".>"},
				t.LossAdvisories()),
			Responses: true,
		},
	}}

	var queues []string
	for _, role := range t.Roles {
		queues = append(queues, "$JS.API.CONSUMER.INFO."+StreamTasks+"."+WorkerConsumer(role))
	}
	users = append(users, User{
		Name:  UserReview,
		About: "troupe review and its dashboard: the reviews and memory API; the only user that serves review decisions",
		Permissions: &Permissions{
			Publish: cat(
				s.ReviewSubjects(), streamInfo, consume(StreamReview, ConsumerReview),
				// The dashboard: decisions and dead-letter actions through the
				// API, the workers' pings, the queue depth of every role.
				api("reviews.decide", "dlq.replay", "dlq.discard"), []string{s.WorkersPing()}, queues,
			),
			Subscribe: cat(api("reviews.*", "memory.*"), service, []string{s.Prefix + ".events.>", s.ProcessesPing(), InboxPrefix(UserReview) + ".>"}),
			Responses: true,
		},
	})

	for _, role := range t.Roles {
		users = append(users, User{
			Name:  WorkerUser(role),
			About: "troupe worker --role " + role + ": consumes " + role + " tasks only (" + WorkerConsumer(role) + ")",
			Permissions: &Permissions{
				Publish:   cat(s.WorkerSubjects(role), streamInfo, consume(StreamTasks, WorkerConsumer(role))),
				Subscribe: []string{s.WorkersPing(), s.ProcessesPing(), InboxPrefix(WorkerUser(role)) + ".>"},
				Responses: true,
			},
		})
	}

	read := api("jobs.*", "artifacts.*", "memory.*", "reviews.list", "reviews.get", "dlq.list", "dlq.get")
	users = append(users,
		User{
			Name:  UserClient,
			About: "troupe submit, jobs, memory, workspace, reviews ls|show, dlq ls|show, bench, and the nats CLI (--inbox-prefix " + InboxPrefix(UserClient) + "): submits, follows, reads and cancels jobs, and asks the workers and processes how busy they are",
			Permissions: &Permissions{
				Publish:   cat(read, service, []string{s.WorkersPing(), s.ProcessesPing()}),
				Subscribe: []string{s.Prefix + ".events.>", InboxPrefix(UserClient) + ".>"},
			},
		},
		User{
			Name:  UserReviewer,
			About: "what client may, and troupe reviews approve|reject, dlq replay|discard: a person's decisions",
			Permissions: &Permissions{
				Publish:   cat(read, api("reviews.decide", "dlq.replay", "dlq.discard"), service, []string{s.WorkersPing(), s.ProcessesPing()}),
				Subscribe: []string{s.Prefix + ".events.>", InboxPrefix(UserReviewer) + ".>"},
			},
		},
		User{
			Name:  UserAdmin,
			About: "everything: people with the nats CLI (stream reports, backups, deleting a stream); no service needs it",
		},
	)
	return users
}
