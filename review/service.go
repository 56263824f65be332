package review

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/llm"
	"github.com/troupe-dev/troupe/internal/secretscan"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// Review policies.
const (
	PolicyRules = "rules"
	PolicyHuman = "human"
)

// Config configures the review service.
type Config struct {
	// Prefix of every subject. Defaults to "troupe".
	Prefix string
	// Policies maps a role to its policy; a role not named uses "rules".
	Policies map[string]string
	// Limits are the rule checks' size limits.
	Limits Limits
	// RequestTimeout bounds one API request. Defaults to 10s.
	RequestTimeout time.Duration
	// Notify is called after a transaction wrote outbox rows. Optional.
	Notify func()
	// RecordDeadLetter records a dead letter (and what it means for its
	// task). Defaults to inserting it into the store.
	RecordDeadLetter func(ctx context.Context, d schemas.DeadLetter) error
	// Available, when set, reports whether the store answers; while it
	// does not, review requests are held rather than nacked.
	Available func(ctx context.Context) error
	// Reviewer is the model of the "model" policy; without one, outputs
	// of such roles wait for a person.
	Reviewer llm.Completer
	// Metrics, when set, count decisions and the reviewer's model calls.
	Metrics *telemetry.Metrics
	// Concurrency is how many review requests are handled at once (model
	// reviews wait on the model). Defaults to 64.
	Concurrency int
	// Replies are the reply subjects API requests are answered on
	// (inboxes); their Log is the service's.
	Replies bus.Replies
	Logger  zerolog.Logger
}

// Service reviews staged outputs: rule checks first, then promotion,
// rejection, or a place in the queue of a person, by the role's policy.
type Service struct {
	cfg   Config
	log   zerolog.Logger
	store store.Store
	nc    *nats.Conn
	js    jetstream.JetStream
	subj  bus.Subjects

	// live guards what a configuration change replaces while the service
	// runs: cfg.Policies, cfg.Reviewer and cfg.Limits.Secrets.
	live sync.RWMutex

	mu   sync.Mutex
	svc  micro.Service
	cc   *bus.Consumption
	wg   sync.WaitGroup // review requests in flight
	api  *bus.Tracker   // API requests in flight; set by Start
	stop context.CancelFunc
	// stopping is closed when Stop begins: a review waiting for its
	// model's rate limit hands its request back at once. Set by Start.
	stopping chan struct{}
	stopOnce sync.Once
}

// NewService returns a review service; Start runs it.
func NewService(cfg Config, st store.Store, nc *nats.Conn, js jetstream.JetStream) *Service {
	if cfg.Prefix == "" {
		cfg.Prefix = bus.DefaultPrefix
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Notify == nil {
		cfg.Notify = func() {}
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	return &Service{
		cfg: cfg, log: cfg.Logger.With().Str("service", "review").Logger(),
		store: st, nc: nc, js: js, subj: bus.Subjects{Prefix: cfg.Prefix},
	}
}

// Policy is the review policy of a role.
func (s *Service) Policy(role string) string {
	s.live.RLock()
	defer s.live.RUnlock()
	if p := s.cfg.Policies[role]; p != "" {
		return p
	}
	return PolicyRules
}

// SetPolicies replaces the review policy of every role (a configuration
// change); outputs staged from now on are reviewed by the new ones.
func (s *Service) SetPolicies(p map[string]string) {
	s.live.Lock()
	defer s.live.Unlock()
	s.cfg.Policies = p
}

// SetReviewer replaces the model of the "model" policy.
func (s *Service) SetReviewer(c llm.Completer) {
	s.live.Lock()
	defer s.live.Unlock()
	s.cfg.Reviewer = c
}

// SetSecrets replaces the configured secrets the rule checks look for
// (see Limits.Secrets).
func (s *Service) SetSecrets(secrets []string) {
	s.live.Lock()
	defer s.live.Unlock()
	s.cfg.Limits.Secrets = secrets
}

// limits are the rule checks' limits and secrets in force.
func (s *Service) limits() Limits {
	s.live.RLock()
	defer s.live.RUnlock()
	return s.cfg.Limits
}

func (s *Service) reviewerNow() llm.Completer {
	s.live.RLock()
	defer s.live.RUnlock()
	return s.cfg.Reviewer
}

// Start serves the reviews and memory API and consumes review requests.
func (s *Service) Start(ctx context.Context) error {
	ctx, s.stop = context.WithCancel(context.WithoutCancel(ctx))
	s.stopping = make(chan struct{})
	svc, err := micro.AddService(s.nc, micro.Config{Name: "troupe", Version: "0.1.0", Description: "Troupe: reviews and memory"})
	if err != nil {
		return fmt.Errorf("starting the api: %w", err)
	}
	s.svc = svc
	// A new tracker each start: requests of an earlier run that outlived
	// its Stop leave the old one.
	api := &bus.Tracker{}
	s.mu.Lock()
	s.api = api
	s.mu.Unlock()
	replies := s.cfg.Replies
	replies.Log = s.log
	ep := bus.EndpointConfig{Ctx: ctx, Log: s.log, Timeout: s.cfg.RequestTimeout, MaxPayload: s.nc.MaxPayload(), Track: api, Replies: replies, Available: s.cfg.Available}
	if ep.Available == nil {
		ep.Available = s.store.Ping
	}
	reviews := svc.AddGroup(s.cfg.Prefix + ".api.reviews")
	memory := svc.AddGroup(s.cfg.Prefix + ".api.memory")
	for _, e := range []struct {
		g    micro.Group
		name string
		h    micro.Handler
	}{
		{reviews, "list", bus.Endpoint(ep, schemas.SchemaListRequest, s.listReviews)},
		{reviews, "get", bus.Endpoint(ep, schemas.SchemaIDRequest, s.getReview)},
		{reviews, "decide", bus.Endpoint(ep, schemas.SchemaReviewDecision, s.decideOnAPI)},
		{memory, "list", bus.Endpoint(ep, schemas.SchemaListRequest, s.listLessons)},
	} {
		if err := e.g.AddEndpoint(e.name, e.h); err != nil {
			_ = svc.Stop()
			return fmt.Errorf("adding endpoint %s: %w", e.name, err)
		}
		if e.g == reviews && e.name == "decide" {
			// Served on reviews.decide.<user> as well, which records
			// who decides: see bus.Caller.
			if err := e.g.AddEndpoint("decide_as", e.h, micro.WithEndpointSubject("decide.*")); err != nil {
				_ = svc.Stop()
				return fmt.Errorf("adding endpoint decide_as: %w", err)
			}
		}
	}
	cons, err := s.js.Consumer(ctx, bus.StreamReview, bus.ConsumerReview)
	if err != nil {
		_ = svc.Stop()
		return fmt.Errorf("binding the review consumer: %w", err)
	}
	record := s.cfg.RecordDeadLetter
	if record == nil {
		record = func(ctx context.Context, d schemas.DeadLetter) error {
			_, err := s.store.DeadLetterInsert(ctx, d)
			return err
		}
	}
	settler := &bus.Settler{JS: s.js, Subjects: s.subj, Source: bus.ConsumerReview, Log: s.log, Record: record,
		MaxDeliver: cons.CachedInfo().Config.MaxDeliver, Available: s.cfg.Available}
	s.cc, err = bus.Consume(s.js, cons, s.log, bus.Parallel(s.cfg.Concurrency, &s.wg, func(msg jetstream.Msg) {
		settler.Handle(ctx, msg, s.handle)
	}), jetstream.PullMaxMessages(max(1, s.cfg.Concurrency/4)))
	// A small buffer: a message waiting there for a free handler is not
	// heartbeated, and model reviews are slow; a quarter of the handlers'
	// count keeps that wait a fraction of one review.
	if err != nil {
		_ = svc.Stop()
		return fmt.Errorf("consuming review requests: %w", err)
	}
	s.log.Info().Interface("policies", s.cfg.Policies).Msg("review started") // before any change: no lock needed
	return nil
}

// Stop stops the API and drains the consumer within ctx.
func (s *Service) Stop(ctx context.Context) error {
	if s.stopping != nil {
		s.stopOnce.Do(func() { close(s.stopping) })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.svc != nil {
		_ = s.svc.Stop()
		s.svc = nil
	}
	if s.cc != nil {
		s.cc.Drain(ctx)
		s.cc = nil
	}
	groups := []*sync.WaitGroup{&s.wg}
	if s.api != nil { // s.mu is held
		groups = append(groups, s.api.Close())
	}
	bus.Wait(ctx, groups...)
	if s.stop != nil {
		s.stop()
	}
	return nil
}

func (s *Service) handle(ctx context.Context, msg jetstream.Msg) error {
	req, err := schemas.Decode[schemas.ReviewRequest](schemas.SchemaReviewRequest, msg.Data())
	if err != nil {
		return bus.Permanent(err)
	}
	if msg.Subject() != s.subj.Review(req.Role) {
		return bus.Permanent(fmt.Errorf("review of a %s output arrived on %s", req.Role, msg.Subject()))
	}
	out, err := s.store.OutputGetByID(ctx, req.OutputID)
	if errors.Is(err, store.ErrNotFound) {
		return bus.Permanent(fmt.Errorf("unknown output %q", req.OutputID))
	}
	if err != nil {
		return fmt.Errorf("reading output: %w", err)
	}
	if out.TaskID != req.TaskID || out.Role != req.Role || out.Revision != req.Revision {
		return bus.Permanent(fmt.Errorf("output %s is task %s revision %d as %s, not what the request says", out.ID, out.TaskID, out.Revision, out.Role))
	}
	if out.Status != schemas.OutputStaged {
		return nil // decided already: a redelivery
	}
	checks := Checks(out, s.limits())
	if !Passed(checks) {
		_, err := s.decide(ctx, out, staged, schemas.ReviewDecision{
			OutputID: out.ID, Decision: "reject", Reviewer: PolicyRules, Feedback: Feedback(checks),
		}, checks)
		return ignoreDecided(err)
	}
	switch s.Policy(out.Role) {
	case PolicyHuman:
		return s.park(ctx, out)
	case PolicyModel:
		if s.reviewerNow() == nil {
			return s.park(ctx, out)
		}
		return s.modelReview(ctx, msg, out, checks)
	default:
		_, err := s.decide(ctx, out, staged, schemas.ReviewDecision{OutputID: out.ID, Decision: "promote", Reviewer: PolicyRules}, checks)
		return ignoreDecided(err)
	}
}

// staged is where the review consumer finds an output.
var staged = []string{schemas.OutputStaged}

// errDecided is returned when an output was decided already.
var errDecided = errors.New("output decided already")

func ignoreDecided(err error) error {
	if errors.Is(err, errDecided) {
		return nil
	}
	return err
}

// park puts an output that passed the rules into the queue of a person;
// why, when given, is said in its event.
func (s *Service) park(ctx context.Context, out store.Output, why ...string) error {
	message := "waiting for a person"
	if len(why) > 0 {
		message += ": " + bus.Clip(strings.Join(why, "; "), 2000)
	}
	err := s.store.InTx(ctx, func(q store.Querier) error {
		moved, err := q.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: []string{schemas.OutputStaged}, To: schemas.OutputAwaitingReview})
		if err != nil || !moved {
			return err
		}
		status, rev := schemas.TaskAwaitingReview, out.Revision
		moved, err = q.TaskUpdate(ctx, store.TaskUpdateParams{ID: out.TaskID, From: []string{schemas.TaskStaged}, Revision: &rev, Status: &status})
		if err != nil {
			return err
		}
		if !moved {
			// The job ended meanwhile: nobody needs to decide.
			_, err := q.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: []string{schemas.OutputAwaitingReview}, To: schemas.OutputCancelled})
			return err
		}
		return bus.Emit(ctx, q, s.subj, schemas.Event{
			JobID: out.JobID, TaskID: out.TaskID, OutputID: out.ID, Kind: schemas.EventOutputAwaitingReview,
			Role: out.Role, Revision: out.Revision, Message: message,
		})
	})
	if err == nil {
		s.cfg.Notify()
		s.log.Info().Str("job_id", out.JobID).Str("task_id", out.TaskID).Str("role", out.Role).Msg("output waits for a person")
	}
	return err
}

// decideOnAPI is Decide for a request of the API: the decision is recorded
// under who sent it, as far as the server vouches (bus.Caller.Actor); the
// dashboard's user records the name of the person signed in to it.
func (s *Service) decideOnAPI(ctx context.Context, d schemas.ReviewDecision) (any, error) {
	endpoint := s.subj.API("reviews.decide")
	who, err := bus.CallerOf(ctx, s.nc, endpoint).Actor(endpoint, strings.TrimPrefix(d.Reviewer, "human:"), "anonymous")
	if err != nil {
		return nil, err
	}
	d.Reviewer = who
	return s.Decide(ctx, d)
}

// Decide applies a person's (or any reviewer's) decision to an output that
// waits for one. A rejection needs feedback; lessons go to MEMORY either way.
func (s *Service) Decide(ctx context.Context, d schemas.ReviewDecision) (schemas.Review, error) {
	out, err := s.store.OutputGetByID(ctx, d.OutputID)
	if errors.Is(err, store.ErrNotFound) {
		return schemas.Review{}, &bus.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("output_id: no output %q", d.OutputID)}
	}
	if err != nil {
		return schemas.Review{}, err
	}
	// Decisions on the API are a person's: only on outputs the rules
	// passed and parked, and always recorded as human.
	d.Reviewer = "human:" + strings.TrimPrefix(cmp.Or(d.Reviewer, "anonymous"), "human:")
	// A person's lessons go into models' prompts like a model's.
	if err := checkLessonsOf(secretscan.New(s.limits().Secrets...), d.Lessons); err != nil {
		return schemas.Review{}, err
	}
	r, err := s.decide(ctx, out, []string{schemas.OutputAwaitingReview}, d, nil)
	if errors.Is(err, errDecided) {
		if cur, gerr := s.store.OutputGetByID(ctx, out.ID); gerr == nil {
			out = cur
		}
		return schemas.Review{}, bus.Conflict("output %s is %s; only an output awaiting review can be decided", out.ID, out.Status)
	}
	return r, err
}

// decide promotes or rejects an output in one transaction: output status,
// artifacts, lessons, the review, task status and the events.
func (s *Service) decide(ctx context.Context, out store.Output, from []string, d schemas.ReviewDecision, checks []schemas.Check) (schemas.Review, error) {
	return s.decideWith(ctx, out, from, d, checks, nil)
}

// decideWith decides, and with a promotion also promotes a skill document
// to skills/<name>/SKILL.md.
func (s *Service) decideWith(ctx context.Context, out store.Output, from []string, d schemas.ReviewDecision, checks []schemas.Check, skill *schemas.Skill) (schemas.Review, error) {
	if d.Decision == "reject" && strings.TrimSpace(d.Feedback) == "" {
		return schemas.Review{}, bus.BadRequest("invalid_request", "feedback: is required to reject")
	}
	now := time.Now().UTC()
	rev := store.Review{
		ID: uuid.NewString(), OutputID: out.ID, TaskID: out.TaskID, JobID: out.JobID,
		Decision: d.Decision, Reviewer: d.Reviewer, Feedback: d.Feedback, Checks: checks, CreatedAt: now,
	}
	lessons := make([]store.Lesson, 0, len(d.Lessons))
	for i, l := range d.Lessons {
		scope := l.Scope
		if scope == "" {
			scope = out.Role
		}
		if scope != "all" && !schemas.IsRole(scope) {
			return schemas.Review{}, bus.BadRequest("invalid_request", "lessons[%d].scope: %q is not \"all\" or a role", i, scope)
		}
		l := store.Lesson{ID: uuid.NewString(), Text: strings.TrimSpace(l.Text), Scope: scope, ReviewID: rev.ID, JobID: out.JobID, CreatedAt: now}
		lessons = append(lessons, l)
		rev.Lessons = append(rev.Lessons, l.Schema())
	}
	err := s.store.InTx(ctx, func(q store.Querier) error {
		// The task first (every transaction takes a task before its
		// outputs): it must still wait for this very output, so a
		// cancelled or failed job's output is never promoted.
		revision := out.Revision
		taskTo, outTo := schemas.TaskPromoted, schemas.OutputPromoted
		var feedback *string
		if d.Decision == "reject" {
			taskTo, outTo, feedback = schemas.TaskRejected, schemas.OutputRejected, &d.Feedback
		}
		// Both must move, else the transaction fails with errDecided; on
		// PostgreSQL they go with the rest, and COMMIT, in one round trip.
		if _, err := q.TaskUpdate(ctx, store.TaskUpdateParams{
			ID: out.TaskID, From: []string{schemas.TaskStaged, schemas.TaskAwaitingReview}, Revision: &revision, Status: &taskTo, Feedback: feedback,
			Else: errDecided,
		}); err != nil {
			return err
		}
		if _, err := q.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: from, To: outTo, Else: errDecided}); err != nil {
			return err
		}
		if err := q.ReviewInsert(ctx, rev); err != nil {
			return err
		}
		if len(lessons) > 0 {
			if err := q.LessonInsert(ctx, lessons); err != nil {
				return err
			}
		}
		ev := schemas.Event{JobID: out.JobID, TaskID: out.TaskID, OutputID: out.ID, Role: out.Role, Revision: out.Revision}
		if d.Decision == "reject" {
			ev.Kind, ev.Message = schemas.EventOutputRejected, d.Feedback
			return bus.Emit(ctx, q, s.subj, ev)
		}
		for _, f := range out.Files {
			if err := q.ArtifactAdd(ctx, store.Artifact{
				ID: uuid.NewString(), Path: fmt.Sprintf("projects/%s/%s/%s", out.JobID, out.Role, f.Path),
				JobID: out.JobID, TaskID: out.TaskID, OutputID: out.ID, Role: out.Role,
				Content: f.Content, Size: len(f.Content), CreatedAt: now,
			}); err != nil {
				return err
			}
		}
		if skill != nil {
			if err := q.ArtifactAdd(ctx, store.Artifact{
				ID: uuid.NewString(), Path: "skills/" + skill.Name + "/SKILL.md", JobID: out.JobID, TaskID: out.TaskID,
				OutputID: out.ID, Role: out.Role, Content: skill.Content, Size: len(skill.Content), CreatedAt: now,
			}); err != nil {
				return err
			}
		}
		ev.Kind, ev.Message = schemas.EventOutputPromoted, fmt.Sprintf("%d files promoted by %s", len(out.Files), d.Reviewer)
		return bus.Emit(ctx, q, s.subj, ev)
	})
	if err != nil {
		return schemas.Review{}, err
	}
	s.cfg.Notify()
	s.cfg.Metrics.ReviewDecision(out.Role, d.Decision, d.Reviewer)
	s.log.Info().Str("job_id", out.JobID).Str("task_id", out.TaskID).Str("role", out.Role).
		Int("revision", out.Revision).Str("decision", d.Decision).Str("reviewer", d.Reviewer).Msg("output decided")
	return rev.Schema(), nil
}
