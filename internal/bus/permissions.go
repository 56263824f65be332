package bus

import (
	"slices"
	"strings"

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
// nothing else. No user gets the server's allow_responses, which lets a
// user answer a request on whatever reply subject the request names (a
// stream's, an advisory's): the services answer on inboxes, and may
// publish on inboxes only (Replies refuses the rest before the server
// would).
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// Person is a user of a least-privilege deployment of its own for one
// person: decisions and dead-letter actions are recorded under its name,
// and it reads its own replies only.
type Person struct {
	// Name is the NATS user, one subject token; it names the person's
	// inbox (_INBOX.<name>) and the subjects of what the person does.
	Name string
	// Decides lets the person decide reviews and replay or discard dead
	// letters, as UserReviewer may; else it may what UserClient may.
	Decides bool
}

// User is one NATS user of a least-privilege deployment.
type User struct {
	Name string
	// About says who connects as the user.
	About string
	// Permissions are nil for the admin, which may do everything.
	Permissions *Permissions
}

// workerEvents are the events a worker publishes: a task's start and its
// stage. What a dead letter or a spent budget does to a task and its job a
// worker writes in the store, and the orchestrator's relay publishes it: a
// worker's NATS user may not announce that any job failed (or a task was
// dead-lettered) whatever the store says.
var workerEvents = []string{schemas.EventTaskStarted, schemas.EventOutputStaged}

// reviewEvents are the events the review service writes: its decisions,
// an output parked for a person, and what a dead letter does.
var reviewEvents = []string{schemas.EventOutputAwaitingReview, schemas.EventOutputPromoted, schemas.EventOutputRejected,
	schemas.EventTaskDeadLettered, schemas.EventJobFailed}

// workerStoreEvents are the events a worker writes in the store's outbox
// for the orchestrator's relay to publish (its own may not): what a dead
// letter or a spent budget does to its task and its job.
var workerStoreEvents = []string{schemas.EventTaskDeadLettered, schemas.EventJobFailed, schemas.EventJobBudgetExceeded}

// WorkerOutboxSubjects are the subjects a role's worker writes outbox rows
// on: those its relay publishes (WorkerSubjects), and the events and the
// copies of rows its relay could never publish that only the orchestrator's
// relay publishes for it (a least-privilege database role's outbox policy
// allows these and no other).
func (s Subjects) WorkerOutboxSubjects(role string) []string {
	return append(append(s.WorkerSubjects(role), s.events(workerStoreEvents)...), s.DLQ(SourceOutbox))
}

// ReviewOutboxSubjects are the subjects the review service writes outbox
// rows on: those its relay publishes (ReviewSubjects) and the copy of a row
// its relay could never publish, which the orchestrator's relay sends.
func (s Subjects) ReviewOutboxSubjects() []string {
	return append(s.ReviewSubjects(), s.DLQ(SourceOutbox))
}

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
	// The acting endpoints, sent as user (see ActingEndpoints).
	actAs := func(user string) []string {
		out := make([]string, len(ActingEndpoints))
		for i, e := range ActingEndpoints {
			out[i] = s.APIAs(e, user)
		}
		return out
	}
	// The micro service answers discovery on $SRV.<verb>[.troupe[.<id>]].
	service := []string{"$SRV.*", "$SRV.*." + ServiceName, "$SRV.*." + ServiceName + ".*"}
	cat := func(lists ...[]string) []string { return slices.Concat(lists...) }
	// A service answers requests on any user's inbox, which it cannot read.
	replyPrefixes := t.ReplyPrefixes
	if len(replyPrefixes) == 0 {
		replyPrefixes = []string{DefaultReplyPrefix}
	}
	var inboxes []string
	for _, p := range replyPrefixes {
		inboxes = append(inboxes, strings.TrimSuffix(p, ".")+".>")
	}

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
	// and checks an advisory against the consumer it names.
	orch = append(orch, "$JS.API.CONSUMER.INFO."+StreamReview+"."+ConsumerReview)
	for _, role := range t.Roles {
		orch = append(orch, "$JS.API.CONSUMER.INFO."+StreamTasks+"."+WorkerConsumer(role))
	}
	users := []User{{
		Name:  UserOrchestrator,
		About: "troupe orchestrator: the jobs, artifacts and dlq API; publishes every role's tasks; creates and updates Troupe's streams and consumers (it cannot delete or purge them)",
		Permissions: &Permissions{
			Publish: cat(
				[]string{s.Prefix + ".tasks.*", s.Prefix + ".review.*", s.Prefix + ".events.>", s.Prefix + ".dlq.>"},
				streamInfo, orch,
				consume(StreamEvents, ConsumerOrchestrator), consume(StreamAdvisories, ConsumerSweeper), inboxes,
			),
			Subscribe: cat(api("jobs.*", "artifacts.*", "dlq.*", "dlq.replay.*", "dlq.discard.*"), service, []string{s.ProcessesPing(), InboxPrefix(UserOrchestrator) + ".>"},
				t.LossAdvisories()),
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
				actAs(UserReview), []string{s.WorkersPing()}, queues, inboxes,
				// Sign-outs, shared by the dashboard's replicas.
				[]string{s.Prefix + ".dashboard.>"},
			),
			Subscribe: cat(api("reviews.*", "reviews.decide.*", "memory.*"), service, []string{s.Prefix + ".events.>", s.ProcessesPing(), InboxPrefix(UserReview) + ".>"},
				[]string{s.Prefix + ".dashboard.>"}),
		},
	})

	for _, role := range t.Roles {
		users = append(users, User{
			Name:  WorkerUser(role),
			About: "troupe worker --role " + role + ": consumes " + role + " tasks only (" + WorkerConsumer(role) + ")",
			Permissions: &Permissions{
				Publish:   cat(s.WorkerSubjects(role), streamInfo, consume(StreamTasks, WorkerConsumer(role)), inboxes),
				Subscribe: []string{s.WorkersPing(), s.ProcessesPing(), InboxPrefix(WorkerUser(role)) + ".>"},
			},
		})
	}

	read := api("jobs.*", "artifacts.*", "memory.*", "reviews.list", "reviews.get", "dlq.list", "dlq.get")
	client := func(name, about string) User {
		return User{Name: name, About: about, Permissions: &Permissions{
			Publish:   cat(read, service, []string{s.WorkersPing(), s.ProcessesPing()}),
			Subscribe: []string{s.Prefix + ".events.>", InboxPrefix(name) + ".>"},
		}}
	}
	reviewer := func(name, about string) User {
		u := client(name, about)
		u.Permissions.Publish = cat(u.Permissions.Publish, actAs(name))
		return u
	}
	users = append(users,
		client(UserClient, "troupe submit, jobs, memory, workspace, reviews ls|show, dlq ls|show, bench, and the nats CLI (--inbox-prefix "+InboxPrefix(UserClient)+"): submits, follows, reads and cancels jobs, and asks the workers and processes how busy they are; everyone who shares it reads the others' replies: give each person a user of their own (--person)"),
		reviewer(UserReviewer, "what client may, and troupe reviews approve|reject, dlq replay|discard, recorded as reviewer: shared, so it says nobody's name: give each person a user of their own (--person NAME:reviewer)"),
	)
	for _, p := range t.People {
		if p.Decides {
			users = append(users, reviewer(p.Name, "a person: what reviewer may, recorded under this name; reads its own replies only"))
		} else {
			users = append(users, client(p.Name, "a person: what client may; reads its own replies only"))
		}
	}
	users = append(users, User{
		Name:  UserAdmin,
		About: "everything: people with the nats CLI (stream reports, backups, deleting a stream); no service needs it",
	})
	return users
}
