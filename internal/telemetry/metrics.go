package telemetry

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are what a Troupe process exports on /metrics. Every method is
// safe on a nil *Metrics, so code under test needs none.
type Metrics struct {
	reg               *prometheus.Registry
	tasks             *prometheus.CounterVec
	taskDuration      *prometheus.HistogramVec
	inFlight          *prometheus.GaugeVec
	dispatch          *prometheus.HistogramVec
	modelCallDuration *prometheus.HistogramVec
	modelTokens       *prometheus.CounterVec
	reviewDecisions   *prometheus.CounterVec
	deadLetters       *prometheus.CounterVec
	signInFailures    *prometheus.CounterVec
	repliesRefused    *prometheus.CounterVec

	hooks Hooks
}

// Hooks see measurements as they are made, for troupe bench. Set them
// before the services start; either may be nil.
type Hooks struct {
	Dispatch func(role string, d time.Duration)
	InFlight func(role string, delta float64)
}

// SetHooks sets the hooks. Call it before any service starts.
func (m *Metrics) SetHooks(h Hooks) { m.hooks = h }

// NewMetrics registers Troupe's metrics, and Go's and the process's.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_tasks_total", Help: "Task runs by role and outcome (staged, retried, dead_lettered, skipped).",
		}, []string{"role", "outcome"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "troupe_task_duration_seconds", Help: "Time from a worker taking a task to staging its output.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}, []string{"role"}),
		dispatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "troupe_dispatch_latency_seconds", Help: "Time from a task message being stored in JetStream to a worker starting it (delivery, redeliveries included).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 12),
		}, []string{"role"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "troupe_tasks_in_flight", Help: "Tasks a worker of this process runs now.",
		}, []string{"role"}),
		modelCallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "troupe_model_call_duration_seconds", Help: "Model call latency by model and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"model", "outcome"}),
		modelTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_model_tokens_total", Help: "Tokens by model and kind (prompt, completion).",
		}, []string{"model", "kind"}),
		reviewDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_review_decisions_total", Help: "Review decisions by role, decision and reviewer kind (rules, model, human).",
		}, []string{"role", "decision", "reviewer"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_dead_letters_total", Help: "Dead letters by source (consumer) and class.",
		}, []string{"source", "class"}),
		signInFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_dashboard_sign_in_failures_total", Help: "Dashboard sign-ins refused, by reason (wrong_token, wrong_password, rate_limited).",
		}, []string{"reason"}),
		repliesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_replies_refused_total", Help: "Requests dropped unanswered because their reply subject is not an inbox, by request subject.",
		}, []string{"subject"}),
	}
	reg.MustRegister(m.tasks, m.taskDuration, m.dispatch, m.inFlight, m.modelCallDuration, m.modelTokens, m.reviewDecisions, m.deadLetters, m.signInFailures, m.repliesRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// OutboxLag registers a gauge of the age of the oldest unsent outbox
// message, read on each scrape by oldest (zero time when none).
func (m *Metrics) OutboxLag(oldest func(ctx context.Context) (time.Time, error)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "troupe_outbox_lag_seconds", Help: "Age of the oldest outbox message not yet published.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		t, err := oldest(ctx)
		if err != nil || t.IsZero() {
			return 0
		}
		return time.Since(t).Seconds()
	}))
}

// TaskDone counts a task run and, when staged, its duration.
func (m *Metrics) TaskDone(role, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.tasks.WithLabelValues(role, outcome).Inc()
	if outcome == "staged" {
		m.taskDuration.WithLabelValues(role).Observe(d.Seconds())
	}
}

// Dispatch records how long a task message waited from JetStream storing
// it to a worker starting it.
func (m *Metrics) Dispatch(role string, d time.Duration) {
	if m == nil {
		return
	}
	m.dispatch.WithLabelValues(role).Observe(d.Seconds())
	if m.hooks.Dispatch != nil {
		m.hooks.Dispatch(role, d)
	}
}

// InFlight moves the in-flight gauge of a role by delta.
func (m *Metrics) InFlight(role string, delta float64) {
	if m == nil {
		return
	}
	m.inFlight.WithLabelValues(role).Add(delta)
	if m.hooks.InFlight != nil {
		m.hooks.InFlight(role, delta)
	}
}

// ModelCall records one model call.
func (m *Metrics) ModelCall(model, outcome string, d time.Duration, prompt, completion int64) {
	if m == nil {
		return
	}
	m.modelCallDuration.WithLabelValues(model, outcome).Observe(d.Seconds())
	m.modelTokens.WithLabelValues(model, "prompt").Add(float64(prompt))
	m.modelTokens.WithLabelValues(model, "completion").Add(float64(completion))
}

// ReviewDecision counts a decision; reviewer is "rules", "model:<id>" or
// "human:<name>", counted by its kind.
func (m *Metrics) ReviewDecision(role, decision, reviewer string) {
	if m == nil {
		return
	}
	kind := reviewer
	for i := range reviewer {
		if reviewer[i] == ':' {
			kind = reviewer[:i]
			break
		}
	}
	m.reviewDecisions.WithLabelValues(role, decision, kind).Inc()
}

// DeadLetter counts a dead letter.
func (m *Metrics) DeadLetter(source, class string) {
	if m != nil {
		m.deadLetters.WithLabelValues(source, class).Inc()
	}
}

// DashboardSignInFailure counts a refused dashboard sign-in.
func (m *Metrics) DashboardSignInFailure(reason string) {
	if m != nil {
		m.signInFailures.WithLabelValues(reason).Inc()
	}
}

// ReplyRefused counts a request dropped because its reply subject is not
// an inbox; subject is the request's (an API endpoint or a ping).
func (m *Metrics) ReplyRefused(subject string) {
	if m != nil {
		m.repliesRefused.WithLabelValues(subject).Inc()
	}
}
