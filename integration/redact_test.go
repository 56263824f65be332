package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/llm/llmtest"
	"github.com/troupe-dev/troupe/schemas"
)

// TestKeyInBaseURLLeaksNowhere: a provider whose base URL carries a key
// in its query (?key=...) and whose calls fail (its connections break, so
// net/http's errors quote the URL) fails the job with its reason, and the
// key is in none of what the failure reaches: the task's and the job's
// reasons, the events, the dead letter and its headers, the model calls,
// the logs, the dashboard's pages, everything stored (the database and
// the streams), and config check.
func TestKeyInBaseURLLeaksNowhere(t *testing.T) {
	t.Parallel()
	const secret = "SECRETVALUE123"
	cfg := writeConfig(t, fmt.Sprintf(`{
  "models": {
    "default": "leaky/text",
    "providers": {
      "leaky": {"baseUrl": %q, "apiKey": "${FAKE_API_KEY}", "models": [{"id": "text"}]}
    }
  },
  "roles": {"pm": {"maxDeliver": 2, "backoff": ["50ms"]}}
}`, llmtest.HangUp(t)+"?key="+secret))
	dir := t.TempDir()
	d := startDevIn(t, dir, []string{"FAKE_API_KEY=" + fakeKey}, "--config", cfg, "--log-level", "debug")
	events := d.events("*.*")
	var dlqMu sync.Mutex
	var deadLetters []*nats.Msg
	sub, err := d.NC.Subscribe("troupe.dlq.>", func(m *nats.Msg) {
		dlqMu.Lock()
		deadLetters = append(deadLetters, m)
		dlqMu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, d.NC.Flush())

	job := call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: "Leaky provider", Tasks: []schemas.PlanTask{{Key: "prd", Role: "pm"}}})
	failed := d.waitJobEnd(events, job.ID)
	require.Equal(t, schemas.JobFailed, failed.Status)
	require.Contains(t, failed.Reason, "?key=***", "the reason says what failed, with the key masked")
	require.NoError(t, d.NC.Flush())

	// Each place is checked on its own, so a leak names its sink.
	seen := 0
	nowhere := func(where, text string) {
		t.Helper()
		seen += len(text)
		for _, form := range []string{secret, strings.ToLower(secret), fakeKey} {
			require.NotContains(t, text, form, where)
		}
	}
	asJSON := func(v any) string {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return string(b)
	}
	nowhere("job reason", failed.Reason)
	for _, task := range failed.Tasks {
		require.NotEmpty(t, task.Reason)
		nowhere("task reason", task.Reason)
	}
	nowhere("job", asJSON(failed))
	nowhere("events", asJSON(events.all()))
	dlqMu.Lock()
	require.NotEmpty(t, deadLetters, "the task was dead-lettered")
	for _, m := range deadLetters {
		require.Contains(t, m.Header.Get("Troupe-Reason"), "?key=***")
		nowhere("dead-letter headers", asJSON(m.Header))
	}
	dlqMu.Unlock()
	stdout, stderr, code := d.cli("jobs", "show", job.ID, "--json")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "?key=***", "the model calls are shown, masked")
	nowhere("jobs show (model calls)", stdout)
	stdout, stderr, code = d.cli("dlq", "ls", "--json")
	require.Equal(t, 0, code, stderr)
	nowhere("dlq ls", stdout)
	for _, page := range []string{"/jobs/" + job.ID, "/deadletters"} {
		resp, err := http.Get(d.Web + page)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
		nowhere("dashboard "+page, string(body))
	}
	check := exec.Command(troupeBin(t), "config", "check", "--config", cfg)
	check.Env = append(os.Environ(), "FAKE_API_KEY="+fakeKey)
	cfgOut, err := check.CombinedOutput()
	require.NoError(t, err, string(cfgOut))
	require.Contains(t, string(cfgOut), "key=***")
	nowhere("config check", string(cfgOut))
	d.Stop()
	require.Contains(t, d.logs.String(), "?key=***", "the failures were logged, masked")
	nowhere("logs", d.logs.String())
	require.NoError(t, filepath.Walk(filepath.Join(dir, "data"), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && info.Name() != "LOCK" {
			b, rerr := os.ReadFile(path)
			require.NoError(t, rerr)
			nowhere("stored in "+path, string(b))
		}
		return nil
	}))
	require.Greater(t, seen, 10000)
}
