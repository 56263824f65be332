package integration

import (
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
)

var opsAddr = regexp.MustCompile(`ops:\s+http://([^/]+)/healthz`)

// TestMetrics: after a pipeline run with a poison message, /metrics holds
// every series operators need, with plausible values (parsed with the
// Prometheus text parser).
func TestMetrics(t *testing.T) {
	t.Parallel()
	d := startDev(t)
	events := d.events("*.*")
	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Measured"})
	require.Equal(t, schemas.JobDone, d.waitJobEnd(events, job.ID).Status)
	require.NoError(t, d.NC.Publish("troupe.tasks.pm", []byte("not json")))
	require.Eventually(t, func() bool {
		return len(call[schemas.DeadLetterList](d, "dlq.list", schemas.DeadLetterListRequest{}).DeadLetters) == 1
	}, 10*time.Second, 20*time.Millisecond)

	m := opsAddr.FindStringSubmatch(d.banner)
	require.NotNil(t, m, "troupe dev prints its ops address:\n%s", d.banner)
	resp, err := http.Get("http://" + m[1] + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)

	sum := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := families[name]
		require.True(t, ok, "no series %s", name)
		total := 0.0
		for _, metric := range f.Metric {
			match := true
			for k, v := range labels {
				found := false
				for _, l := range metric.Label {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				match = match && found
			}
			if !match {
				continue
			}
			switch {
			case metric.Counter != nil:
				total += metric.GetCounter().GetValue()
			case metric.Gauge != nil:
				total += metric.GetGauge().GetValue()
			case metric.Histogram != nil:
				total += float64(metric.GetHistogram().GetSampleCount())
			}
		}
		return total
	}
	for _, role := range schemas.Roles {
		require.Equal(t, 1.0, sum("troupe_tasks_total", map[string]string{"role": role, "outcome": "staged"}), role)
		require.Equal(t, 1.0, sum("troupe_task_duration_seconds", map[string]string{"role": role}), role)
		dispatched := 1.0
		if role == "pm" {
			dispatched = 2 // and the message that is not JSON
		}
		require.Equal(t, dispatched, sum("troupe_dispatch_latency_seconds", map[string]string{"role": role}), role)
		require.Equal(t, 1.0, sum("troupe_review_decisions_total", map[string]string{"role": role, "decision": "promote", "reviewer": "rules"}), role)
		require.Zero(t, sum("troupe_tasks_in_flight", map[string]string{"role": role}), "nothing runs now")
	}
	require.Equal(t, 6.0, sum("troupe_model_call_duration_seconds", map[string]string{"model": "offline", "outcome": "ok"}))
	require.Greater(t, sum("troupe_model_tokens_total", map[string]string{"model": "offline", "kind": "prompt"}), 100.0)
	require.Greater(t, sum("troupe_model_tokens_total", map[string]string{"model": "offline", "kind": "completion"}), 100.0)
	require.Equal(t, 1.0, sum("troupe_dead_letters_total", map[string]string{"source": "workers-pm", "class": "permanent"}))
	lag := sum("troupe_outbox_lag_seconds", nil)
	require.GreaterOrEqual(t, lag, 0.0)
	require.Less(t, lag, 60.0)
	_, ok := families["process_resident_memory_bytes"]
	require.True(t, ok)
}
