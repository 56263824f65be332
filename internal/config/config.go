// Package config reads Troupe's configuration: one JSON file with camelCase
// keys, ${VAR} replaced from the environment, defaults for everything, and
// validation errors that name the field.
package config

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/internal/redact"
	"github.com/troupe-dev/troupe/schemas"
)

// Config is the whole configuration.
type Config struct {
	NATS     NATS            `json:"nats"`
	Database Database        `json:"database"`
	Models   Models          `json:"models"`
	Roles    map[string]Role `json:"roles,omitempty"`
	Review   Review          `json:"review"`
	Budgets  Budgets         `json:"budgets"`
	// Reliability configures dead letters and the reconciler.
	Reliability Reliability `json:"reliability"`

	// envSecrets are the values Parse put in place of ${VAR} whose
	// variable is named like a credential (OPENAI_API_KEY, DB_PASSWORD).
	envSecrets []string
}

// Reliability configures what happens when messages fail or go missing.
type Reliability struct {
	// OnDeadLetter is what a dead-lettered task does to its job: "fail"
	// (the default; a replay revives it) or "wait" (the job keeps running
	// until the task is replayed).
	OnDeadLetter string `json:"onDeadLetter,omitempty"`
	// ReconcileInterval is how often the reconciler compares the store
	// with the streams, as a Go duration. Defaults to "30s"; "off" disables it.
	ReconcileInterval string `json:"reconcileInterval,omitempty"`
	// StaleAfter is how long a task may sit in one state before the
	// reconciler looks at it. Defaults to "5m".
	StaleAfter string `json:"staleAfter,omitempty"`
	// AckWait is how long a worker may hold a task without acking or a
	// heartbeat before it is redelivered. Defaults to "30s".
	AckWait string `json:"ackWait,omitempty"`
	// OutboxMaxAttempts is how many times the relay tries an outbox row
	// that can never be published (too large for the server or its stream,
	// a subject no stream takes) before it dead-letters it. Defaults to 5;
	// failures that may pass (NATS away) are retried for ever.
	OutboxMaxAttempts int `json:"outboxMaxAttempts,omitempty"`
	// StuckAfter is how long a service may stay not ready before its
	// /healthz fails too, so that Kubernetes restarts it. Defaults to "5m";
	// "off" keeps /healthz ok for as long as the process answers.
	StuckAfter string `json:"stuckAfter,omitempty"`
}

// StuckAfterDuration is StuckAfter parsed: 0 when unset, -1 when "off".
func (r Reliability) StuckAfterDuration() time.Duration {
	if r.StuckAfter == "off" {
		return -1
	}
	d, _ := time.ParseDuration(r.StuckAfter)
	return d
}

// Durations returns the reliability durations, parsed (0 where unset; -1
// for a disabled reconciler).
func (r Reliability) Durations() (reconcile, stale, ackWait time.Duration) {
	if r.ReconcileInterval == "off" {
		reconcile = -1
	} else {
		reconcile, _ = time.ParseDuration(r.ReconcileInterval)
	}
	stale, _ = time.ParseDuration(r.StaleAfter)
	ackWait, _ = time.ParseDuration(r.AckWait)
	return reconcile, stale, ackWait
}

// Backoffs returns a role's backoff as durations.
func (r Role) Backoffs() []time.Duration {
	var out []time.Duration
	for _, b := range r.Backoff {
		if d, err := time.ParseDuration(b); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// UseAtomicBatches reports whether the relays publish in atomic batches
// (AtomicBatches, or its default).
func (n NATS) UseAtomicBatches() bool {
	if n.AtomicBatches != nil {
		return *n.AtomicBatches
	}
	return n.Sync != "periodic"
}

// NATS is how services reach NATS.
type NATS struct {
	// URL of the NATS server. Defaults to nats://127.0.0.1:4222 (troupe dev
	// embeds its own server and ignores it).
	URL string `json:"url,omitempty"`
	// Prefix of every subject. Defaults to "troupe".
	Prefix string `json:"prefix,omitempty"`
	// Sync is the embedded server's fsync policy: "always" (the default) or
	// "periodic". Against another server it says what that server's
	// jetstream sync_interval is (a client cannot read it), for the
	// atomic-batch default and what the services say at start.
	Sync string `json:"sync,omitempty"`
	// AtomicBatches lets the outbox relays publish the rows bound for one
	// stream as JetStream atomic batches (NATS 2.12 or newer; older servers
	// get one message at a time anyway): one disk sync a batch instead of
	// one a message. It pays where the server syncs every write (as
	// troupe dev, the compose file and the Kubernetes values have it);
	// against a server that does not (NATS's own default), set it false:
	// staging a batch costs more than the writes it saves. Defaults to
	// true, except with the embedded server's periodic sync.
	AtomicBatches *bool `json:"atomicBatches,omitempty"`
	// Replicas of every stream. Defaults to 1.
	Replicas int `json:"replicas,omitempty"`
	// User and Password, Token, CredsFile (a .creds file: a user JWT and
	// its NKey seed) or NKeyFile (an NKey seed file) authenticate; at most
	// one of them. Credentials in the URL (nats://user:password@host) work
	// too. Secrets belong in the environment: TROUPE_NATS_USER,
	// TROUPE_NATS_PASSWORD, TROUPE_NATS_TOKEN, TROUPE_NATS_CREDS and
	// TROUPE_NATS_NKEY override these fields. Defaults to none.
	User      string `json:"user,omitempty"`
	Password  string `json:"password,omitempty"`
	Token     string `json:"token,omitempty"`
	CredsFile string `json:"credsFile,omitempty"`
	NKeyFile  string `json:"nkeyFile,omitempty"`
	// InboxPrefix starts the subjects replies come back on
	// (TROUPE_NATS_INBOX_PREFIX). A server can then let each user read only
	// its own replies. Defaults to "_INBOX.<user>" when a user name is set
	// (here or in the URL), else "_INBOX".
	InboxPrefix string `json:"inboxPrefix,omitempty"`
	// ReplyPrefixes are the prefixes of the reply subjects the services
	// answer requests on: a request naming any other reply subject (a
	// stream's, say) is dropped, logged and counted. Every client's inbox
	// prefix must start with one of them. Defaults to ["_INBOX."].
	ReplyPrefixes []string `json:"replyPrefixes,omitempty"`
	// Streams bound Troupe's streams, by name (TROUPE_TASKS, TROUPE_REVIEW,
	// TROUPE_EVENTS, TROUPE_DLQ, TROUPE_ADVISORIES). A stream or a field
	// left out keeps its default: 100,000 messages and 1 GiB each (the
	// events 1,000,000 and 2 GiB, the advisories 64 MiB), messages of at
	// most 8 MiB.
	Streams map[string]StreamLimits `json:"streams,omitempty"`
	// TLS, when set, connects over TLS (TROUPE_NATS_TLS_CA,
	// TROUPE_NATS_TLS_CERT, TROUPE_NATS_TLS_KEY).
	TLS TLS `json:"tls,omitzero"`
}

// StreamLimits bound one stream; zero keeps a field's default.
type StreamLimits struct {
	MaxMsgs    int64 `json:"maxMsgs,omitempty"`
	MaxBytes   int64 `json:"maxBytes,omitempty"`
	MaxMsgSize int32 `json:"maxMsgSize,omitempty"`
}

// StreamNames are the streams nats.streams may bound.
var StreamNames = []string{"TROUPE_TASKS", "TROUPE_REVIEW", "TROUPE_EVENTS", "TROUPE_DLQ", "TROUPE_ADVISORIES"}

// TLS are the files of a TLS connection to NATS. The server name checked
// is the URL's host.
type TLS struct {
	// CAFile holds the certificates the server's is checked against.
	// Defaults to the system's.
	CAFile string `json:"caFile,omitempty"`
	// CertFile and KeyFile are the client certificate and its key, for a
	// server that verifies clients. Both or neither.
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
}

// NATSEnv maps the environment variables that override the nats section
// to the fields they set.
var NATSEnv = []struct {
	Var   string
	Field func(*NATS) *string
}{
	{"TROUPE_NATS_USER", func(n *NATS) *string { return &n.User }},
	{"TROUPE_NATS_PASSWORD", func(n *NATS) *string { return &n.Password }},
	{"TROUPE_NATS_TOKEN", func(n *NATS) *string { return &n.Token }},
	{"TROUPE_NATS_CREDS", func(n *NATS) *string { return &n.CredsFile }},
	{"TROUPE_NATS_NKEY", func(n *NATS) *string { return &n.NKeyFile }},
	{"TROUPE_NATS_INBOX_PREFIX", func(n *NATS) *string { return &n.InboxPrefix }},
	{"TROUPE_NATS_TLS_CA", func(n *NATS) *string { return &n.TLS.CAFile }},
	{"TROUPE_NATS_TLS_CERT", func(n *NATS) *string { return &n.TLS.CertFile }},
	{"TROUPE_NATS_TLS_KEY", func(n *NATS) *string { return &n.TLS.KeyFile }},
}

// WithEnv returns n with the fields the environment sets (see NATSEnv)
// replaced. A kind of credential the environment gives replaces the other
// kinds the file may have, so a password from the environment goes with a
// file's user, but a token from the environment is never sent beside one.
func (n NATS) WithEnv(getenv func(string) string) NATS {
	kinds := []struct {
		vars  []string
		clear func(*NATS)
	}{
		{[]string{"TROUPE_NATS_USER", "TROUPE_NATS_PASSWORD"}, func(n *NATS) { n.User, n.Password = "", "" }},
		{[]string{"TROUPE_NATS_TOKEN"}, func(n *NATS) { n.Token = "" }},
		{[]string{"TROUPE_NATS_CREDS"}, func(n *NATS) { n.CredsFile = "" }},
		{[]string{"TROUPE_NATS_NKEY"}, func(n *NATS) { n.NKeyFile = "" }},
	}
	for i, k := range kinds {
		if !slices.ContainsFunc(k.vars, func(v string) bool { return getenv(v) != "" }) {
			continue
		}
		for j, other := range kinds {
			if j != i {
				other.clear(&n)
			}
		}
	}
	for _, e := range NATSEnv {
		if v := getenv(e.Var); v != "" {
			*e.Field(&n) = v
		}
	}
	return n
}

var subjectToken = regexp.MustCompile(`^[^.*> \t\r\n]+$`)

// Validate reports every problem of the nats section, each naming its
// field (and the environment variable that may have set it).
func (n NATS) Validate() error { return n.validate(nil) }

func (n NATS) validate(subs substitutions) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, subs.hide(args)...)))
	}
	if n.Sync != "" && n.Sync != "always" && n.Sync != "periodic" {
		bad("nats.sync", "%q is not a sync policy; use \"always\" or \"periodic\"", n.Sync)
	}
	if n.Replicas < 0 || n.Replicas > 5 {
		bad("nats.replicas", "%d is out of range 1..5", n.Replicas)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(n.Prefix) && n.Prefix != "" {
		bad("nats.prefix", "%q must be one subject token (letters, digits, _ and -)", n.Prefix)
	}
	var ways []string
	if n.User != "" || n.Password != "" {
		ways = append(ways, "user and password")
	}
	if n.Token != "" {
		ways = append(ways, "token")
	}
	if n.CredsFile != "" {
		ways = append(ways, "credsFile")
	}
	if n.NKeyFile != "" {
		ways = append(ways, "nkeyFile")
	}
	if len(ways) > 1 {
		bad("nats", "%s are set; authenticate one way only", strings.Join(ways, ", "))
	}
	if n.User != "" && n.Password == "" {
		bad("nats.password", "is required with nats.user (set TROUPE_NATS_PASSWORD)")
	}
	if n.Password != "" && n.User == "" {
		bad("nats.user", "is required with nats.password (set TROUPE_NATS_USER)")
	}
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		bad("nats.tls", "certFile and keyFile go together (TROUPE_NATS_TLS_CERT, TROUPE_NATS_TLS_KEY)")
	}
	if p := n.InboxPrefix; p != "" {
		for _, tok := range strings.Split(p, ".") {
			if !subjectToken.MatchString(tok) {
				bad("nats.inboxPrefix", "%q is not a subject without wildcards, such as _INBOX.worker-developer", p)
				break
			}
		}
	}
	if p, replies := n.InboxPrefix, cmp.Or(strings.Join(n.ReplyPrefixes, " "), "_INBOX."); p != "" &&
		!slices.ContainsFunc(strings.Fields(replies), func(r string) bool { return strings.HasPrefix(p+".", strings.TrimSuffix(r, ".")+".") }) {
		bad("nats.inboxPrefix", "%q is not under a reply prefix (%s): the services would not answer it", p, replies)
	}
	for name, l := range n.Streams {
		switch {
		case !slices.Contains(StreamNames, name):
			bad("nats.streams", "%q is not a stream; the streams are %s", name, strings.Join(StreamNames, ", "))
		case l.MaxMsgs < 0 || l.MaxBytes < 0 || l.MaxMsgSize < 0:
			bad("nats.streams."+name, "limits are positive numbers (or left out for the default)")
		}
	}
	for i, p := range n.ReplyPrefixes {
		for _, tok := range strings.Split(strings.TrimSuffix(p, "."), ".") {
			if !subjectToken.MatchString(tok) {
				bad(fmt.Sprintf("nats.replyPrefixes[%d]", i), "%q is not a subject prefix without wildcards, such as _INBOX.", p)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Database is the store.
type Database struct {
	// URL is a postgres:// URL, or a SQLite file path. Defaults to
	// <data>/troupe.db in troupe dev; required by the other services.
	URL string `json:"url,omitempty"`
}

// Models configures language models. With no provider, the built-in
// offline model answers.
type Models struct {
	// Default model reference, "<provider>/<model id>".
	Default   string              `json:"default,omitempty"`
	Providers map[string]Provider `json:"providers,omitempty"`
	// MaxImageSide is the longest side, in pixels, an image attachment is
	// sent with; larger ones are scaled down first. Defaults to 1568.
	MaxImageSide int `json:"maxImageSide,omitempty"`
	// MaxImageBytes bounds the bytes an image attachment's pixels take
	// once decoded, as its header says: a larger one is refused at
	// submission, and by a worker before it decodes it. Defaults to
	// 67108864 (64 MiB).
	MaxImageBytes int64 `json:"maxImageBytes,omitempty"`
	// ImageDecodes is how many images one process decodes (to scale them
	// down) at once, across every role. Defaults to 2.
	ImageDecodes int `json:"imageDecodes,omitempty"`
}

// Provider is an OpenAI-compatible endpoint.
type Provider struct {
	BaseURL string  `json:"baseUrl"`
	APIKey  string  `json:"apiKey,omitempty"`
	API     string  `json:"api,omitempty"`
	Models  []Model `json:"models"`
	// MaxConcurrency bounds the calls in flight to the provider from one
	// process, across every role. Defaults to 8.
	MaxConcurrency int `json:"maxConcurrency,omitempty"`
}

// Model is one model of a provider.
type Model struct {
	ID            string   `json:"id"`
	Name          string   `json:"name,omitempty"`
	Input         []string `json:"input,omitempty"`
	ContextWindow int      `json:"contextWindow,omitempty"`
	MaxTokens     int      `json:"maxTokens,omitempty"`
	// Cost is the price per million tokens, for the cost in job totals.
	Cost *Price `json:"cost,omitempty"`
}

// Price is what a million tokens cost, in any currency.
type Price struct {
	Input  float64 `json:"input"`
	Output float64 `json:"output"`
}

// Cost is what the tokens cost at this price (per million tokens).
func (p Price) Cost(promptTokens, completionTokens int64) float64 {
	return (float64(promptTokens)*p.Input + float64(completionTokens)*p.Output) / 1e6
}

// Prices returns the price of every model that has one, by reference.
func (c Config) Prices() map[string]Price {
	out := map[string]Price{}
	for name, p := range c.Models.Providers {
		for _, m := range p.Models {
			if m.Cost != nil {
				out[name+"/"+m.ID] = *m.Cost
			}
		}
	}
	return out
}

// Role configures one role.
type Role struct {
	// Model reference; defaults to models.default, or the offline model.
	Model     string   `json:"model,omitempty"`
	Fallbacks []string `json:"fallbacks,omitempty"`
	// Concurrency is how many tasks one worker runs at once. Defaults to 4.
	Concurrency int `json:"concurrency,omitempty"`
	// Temperature of the model. Defaults to the provider's.
	Temperature *float64 `json:"temperature,omitempty"`
	// Review policy: "rules" (the default), "human" or "model".
	Review string `json:"review,omitempty"`
	// MaxDeliver bounds deliveries of one task message. Defaults to 10.
	MaxDeliver int `json:"maxDeliver,omitempty"`
	// Backoff between redeliveries, as Go durations ("1s", "5s").
	Backoff []string `json:"backoff,omitempty"`
}

// Review configures the review service.
type Review struct {
	// MaxRevisions is how many times a rejected task is revised before it
	// fails. Defaults to 2.
	MaxRevisions *int `json:"maxRevisions,omitempty"`
	// MaxOutputBytes bounds an output. Defaults to 1 MiB.
	MaxOutputBytes int `json:"maxOutputBytes,omitempty"`
	// MaxFileBytes bounds one file of an output. Defaults to 512 KiB.
	MaxFileBytes int `json:"maxFileBytes,omitempty"`
	// Model reviews for the roles whose policy is "model". Defaults to
	// models.default.
	Model string `json:"model,omitempty"`
}

// Budgets bound spending.
type Budgets struct {
	// MaxTokensPerJob is the token budget of a job that names none. 0 is unlimited.
	MaxTokensPerJob int64 `json:"maxTokensPerJob,omitempty"`
}

// Review policies.
const (
	PolicyRules = "rules"
	PolicyHuman = "human"
	PolicyModel = "model"
)

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.NATS.URL == "" {
		c.NATS.URL = "nats://127.0.0.1:4222"
	}
	if c.NATS.Prefix == "" {
		c.NATS.Prefix = "troupe"
	}
	if c.NATS.Sync == "" {
		c.NATS.Sync = "always"
	}
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	for name, p := range c.Models.Providers {
		if p.MaxConcurrency == 0 {
			p.MaxConcurrency = 8
			c.Models.Providers[name] = p
		}
	}
	if c.Review.MaxRevisions == nil {
		two := 2
		c.Review.MaxRevisions = &two
	}
	roles := make(map[string]Role, len(schemas.Roles))
	for _, name := range schemas.Roles {
		r := c.Roles[name]
		if r.Concurrency == 0 {
			r.Concurrency = 4
		}
		if r.Review == "" {
			r.Review = PolicyRules
		}
		if r.MaxDeliver == 0 {
			r.MaxDeliver = 10
		}
		roles[name] = r
	}
	for name, r := range c.Roles {
		if _, ok := roles[name]; !ok {
			roles[name] = r // kept so Validate can name it
		}
	}
	c.Roles = roles
	return c
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error { return c.validate(nil) }

// validate is Validate showing, in place of every value Parse substituted
// for ${VAR}, the ${VAR}: a key put in the wrong field is never printed.
func (c Config) validate(subs substitutions) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, subs.hide(args)...)))
	}
	if err := c.NATS.validate(subs); err != nil {
		errs = append(errs, err)
	}
	if c.Models.MaxImageBytes < 0 {
		bad("models.maxImageBytes", "must not be negative")
	}
	if c.Models.ImageDecodes < 0 {
		bad("models.imageDecodes", "must not be negative")
	}
	refs := map[string]bool{}
	for _, pname := range sortedKeys(c.Models.Providers) {
		p := c.Models.Providers[pname]
		field := "models.providers." + pname
		if p.BaseURL == "" {
			bad(field+".baseUrl", "is required")
		}
		if p.API != "" && p.API != "openai-completions" {
			bad(field+".api", "%q is not supported; use \"openai-completions\"", p.API)
		}
		if len(p.Models) == 0 {
			bad(field+".models", "names no model")
		}
		if p.MaxConcurrency < 0 {
			bad(field+".maxConcurrency", "must not be negative")
		}
		for i, m := range p.Models {
			mf := fmt.Sprintf("%s.models[%d]", field, i)
			if m.ID == "" {
				bad(mf+".id", "is required")
			}
			if len(m.Input) > 0 && !slices.Equal(m.Input, []string{"text"}) && !slices.Equal(m.Input, []string{"text", "image"}) {
				var quoted []string
				for _, in := range m.Input {
					if in != "text" && in != "image" {
						quoted = append(quoted, fmt.Sprintf("%q", subs.hide([]any{in})...))
					}
				}
				what := strings.Join(quoted, ", ")
				if what == "" {
					what = fmt.Sprintf("%q", m.Input)
				}
				bad(mf+".input", "%s is not supported; use [\"text\"] or [\"text\",\"image\"]", what)
			}
			if m.ContextWindow < 0 {
				bad(mf+".contextWindow", "must not be negative")
			}
			if m.MaxTokens < 0 {
				bad(mf+".maxTokens", "must not be negative")
			}
			if m.Cost != nil && (m.Cost.Input < 0 || m.Cost.Output < 0) {
				bad(mf+".cost", "prices must not be negative")
			}
			refs[pname+"/"+m.ID] = true
		}
	}
	checkRef := func(field, ref string) {
		if ref != "" && ref != "offline" && !refs[ref] {
			bad(field, "%q is not a configured model; use \"<provider>/<model id>\" of models.providers", ref)
		}
	}
	checkRef("models.default", c.Models.Default)
	checkRef("review.model", c.Review.Model)
	for _, name := range sortedKeys(c.Roles) {
		r := c.Roles[name]
		field := "roles." + name
		if !schemas.IsRole(name) {
			bad(field, "unknown role; the roles are %s", strings.Join(schemas.Roles, ", "))
			continue
		}
		checkRef(field+".model", r.Model)
		for i, fb := range r.Fallbacks {
			checkRef(fmt.Sprintf("%s.fallbacks[%d]", field, i), fb)
		}
		if r.Concurrency < 0 || r.Concurrency > 10000 {
			bad(field+".concurrency", "%d is out of range 1..10000", r.Concurrency)
		}
		switch r.Review {
		case "", PolicyRules, PolicyHuman:
		case PolicyModel:
			if c.Review.Model == "" && c.Models.Default == "" {
				bad(field+".review", "\"model\" needs a model to review with: set review.model or models.default")
			}
		default:
			bad(field+".review", "%q is not a policy; use \"rules\", \"human\" or \"model\"", r.Review)
		}
		if r.MaxDeliver < 0 {
			bad(field+".maxDeliver", "must not be negative")
		}
		for i, b := range r.Backoff {
			if _, err := time.ParseDuration(b); err != nil {
				bad(fmt.Sprintf("%s.backoff[%d]", field, i), "%q is not a duration such as \"5s\"", b)
			}
		}
	}
	if c.Review.MaxRevisions != nil && (*c.Review.MaxRevisions < 0 || *c.Review.MaxRevisions > 20) {
		bad("review.maxRevisions", "%d is out of range 0..20", *c.Review.MaxRevisions)
	}
	if c.Review.MaxOutputBytes < 0 {
		bad("review.maxOutputBytes", "must not be negative")
	}
	if c.Review.MaxFileBytes < 0 {
		bad("review.maxFileBytes", "must not be negative")
	}
	switch c.Reliability.OnDeadLetter {
	case "", "fail", "wait":
	default:
		bad("reliability.onDeadLetter", "%q is not a policy; use \"fail\" or \"wait\"", c.Reliability.OnDeadLetter)
	}
	if c.Reliability.OutboxMaxAttempts < 0 {
		bad("reliability.outboxMaxAttempts", "must not be negative")
	}
	for _, d := range []struct{ field, v string }{
		{"reliability.reconcileInterval", c.Reliability.ReconcileInterval},
		{"reliability.staleAfter", c.Reliability.StaleAfter},
		{"reliability.ackWait", c.Reliability.AckWait},
		{"reliability.stuckAfter", c.Reliability.StuckAfter},
	} {
		field, v := d.field, d.v
		if v == "" || (v == "off" && (field == "reliability.reconcileInterval" || field == "reliability.stuckAfter")) {
			continue
		}
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			bad(field, "%q is not a positive duration such as \"30s\"", v)
		}
	}
	if c.Budgets.MaxTokensPerJob < 0 {
		bad("budgets.maxTokensPerJob", "must not be negative")
	}
	return errors.Join(errs...)
}

// Load reads the configuration from path. An empty path means: the file
// named by TROUPE_CONFIG, else ./troupe.json when it exists, else defaults
// only. It returns the file it read ("" when none).
func Load(path string) (Config, string, error) {
	if path == "" {
		path = os.Getenv("TROUPE_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat("troupe.json"); err == nil {
			path = "troupe.json"
		}
	}
	if path == "" {
		return Config{}.WithDefaults(), "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, path, fmt.Errorf("reading configuration: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, path, fmt.Errorf("%s: %w", path, err)
	}
	return c, path, nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Parse decodes a configuration document, replaces ${VAR} from the
// environment, applies defaults and validates it.
func Parse(data []byte) (Config, error) {
	var missing []string
	var subs substitutions
	expanded := envRef.ReplaceAllFunc(data, func(m []byte) []byte {
		name := string(envRef.FindSubmatch(m)[1])
		v, ok := os.LookupEnv(name)
		if !ok {
			missing = append(missing, name)
			return m
		}
		subs = append(subs, substitution{name, v})
		// The value lands inside a JSON string: escape it as one.
		q, _ := json.Marshal(v)
		return q[1 : len(q)-1]
	})
	if len(missing) > 0 {
		if len(missing) == 1 {
			return Config{}, fmt.Errorf("environment variable %s is not set", missing[0])
		}
		return Config{}, fmt.Errorf("environment variables %s are not set", strings.Join(missing, ", "))
	}
	dec := json.NewDecoder(bytes.NewReader(expanded))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	if err := c.validate(subs); err != nil {
		return Config{}, err
	}
	for _, sub := range subs {
		if redact.IsCredentialName(sub.name) {
			c.envSecrets = append(c.envSecrets, sub.value)
		}
	}
	return c.WithDefaults(), nil
}

// substitution is a value Parse put in place of ${name}.
type substitution struct{ name, value string }

type substitutions []substitution

// hide returns args with every substituted value shown as the ${VAR} it
// came from: a string holding one (all of it, or a part of at least
// redact.MinLen bytes), a number that is one.
func (subs substitutions) hide(args []any) []any {
	if len(subs) == 0 {
		return args
	}
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		switch v := a.(type) {
		case string:
			for _, sub := range subs {
				if sub.value != "" && (v == sub.value || len(sub.value) >= redact.MinLen && strings.Contains(v, sub.value)) {
					v = strings.ReplaceAll(v, sub.value, "${"+sub.name+"}")
				}
			}
			out[i] = v
		case int, int64:
			for _, sub := range subs {
				if fmt.Sprint(v) == strings.TrimSpace(sub.value) {
					out[i] = verbatim("${" + sub.name + "}")
				}
			}
		}
	}
	return out
}

// verbatim prints as it is whatever the verb.
type verbatim string

func (v verbatim) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(v)) }

// MaxRevisions is review.maxRevisions with its default applied.
func (c Config) MaxRevisions() int {
	if c.Review.MaxRevisions == nil {
		return 2
	}
	return *c.Review.MaxRevisions
}

// Policies returns the review policy of every role.
func (c Config) Policies() map[string]string {
	out := map[string]string{}
	for name, r := range c.WithDefaults().Roles {
		out[name] = r.Review
	}
	return out
}

// Redacted returns c with every secret replaced by "***", for display:
// the secret fields, credentials in URLs (user:password@, key=,
// access_token=...), and every secret of Secrets wherever it was put.
func (c Config) Redacted() Config {
	r := c
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return redact.Mask
	}
	red := redact.New(c.Secrets()...)
	r.NATS.Password = mask(c.NATS.Password)
	r.NATS.Token = mask(c.NATS.Token)
	r.NATS.URL = red.String(c.NATS.URL)
	r.Database.URL = red.String(c.Database.URL)
	r.Models.Providers = map[string]Provider{}
	for k, p := range c.Models.Providers {
		p.APIKey = mask(p.APIKey)
		p.BaseURL = red.String(p.BaseURL)
		r.Models.Providers[k] = p
	}
	// A secret in any other field (a key substituted into the wrong one):
	// masked through the JSON form, which every field has.
	data, err := json.Marshal(r)
	if err != nil {
		return r
	}
	var clean Config
	if err := json.Unmarshal([]byte(red.String(string(data))), &clean); err != nil {
		return r
	}
	clean.envSecrets = c.envSecrets
	return clean
}

// Secrets are the values of c that must never be shown: every provider's
// API key, the credentials in its base URL, in the NATS and database URLs
// and of NATS, and every value substituted for a ${VAR} named like a
// credential (OPENAI_API_KEY, DB_PASSWORD), wherever it was put.
func (c Config) Secrets() []string {
	out := []string{c.NATS.Password, c.NATS.Token}
	out = append(out, redact.ShapedValues(c.NATS.URL)...)
	out = append(out, redact.ShapedValues(c.Database.URL)...)
	for _, name := range sortedKeys(c.Models.Providers) {
		p := c.Models.Providers[name]
		out = append(out, p.APIKey)
		out = append(out, redact.ShapedValues(p.BaseURL)...)
	}
	out = append(out, c.envSecrets...)
	return slices.DeleteFunc(out, func(s string) bool { return s == "" })
}

// RedactDSN hides credentials in connection strings: user:password@ in
// URLs (each of a comma-separated list) and password=..., key=... and
// the like in key=value DSNs or query strings (see redact.Shapes).
func RedactDSN(u string) string { return redact.Shapes(u) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
