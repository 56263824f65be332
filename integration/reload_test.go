package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// TestLiveConfigReload: troupe dev follows its configuration file. A new
// review policy and concurrency apply to the running services without a
// restart, and the change is logged; an invalid file is refused with its
// reason and the last good configuration stays in force; a setting that
// needs a restart says so.
func TestLiveConfigReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "troupe.json")
	write := func(s string) {
		// Write and rename, as a ConfigMap update swaps the file whole.
		tmp := cfg + ".tmp"
		require.NoError(t, os.WriteFile(tmp, []byte(s), 0o644))
		require.NoError(t, os.Rename(tmp, cfg))
	}
	write(`{"roles": {"developer": {"review": "human", "concurrency": 2}}}`)
	d := startDevIn(t, dir, nil, "--config", cfg)
	events := d.events("*.*")
	devJob := func(title string) schemas.Job {
		return call[schemas.Job](d, "jobs.submit", schemas.Submission{Title: title, Tasks: []schemas.PlanTask{{Key: "impl", Role: "developer"}}})
	}

	first := devJob("Under the human policy")
	waitEvent(t, events, func(ev schemas.Event) bool {
		return ev.JobID == first.ID && ev.Kind == schemas.EventOutputAwaitingReview
	})
	require.Equal(t, 2, developerConcurrency(t, d))

	write(`{"roles": {"developer": {"review": "rules", "concurrency": 5}}}`)
	waitLog(t, d, "configuration applied to the running services")
	logs := d.logs.String()
	require.Contains(t, logs, `"key":"roles.developer.review","old":"\"human\"","new":"\"rules\""`)
	require.Contains(t, logs, `"key":"roles.developer.concurrency","old":"2","new":"5"`)
	second := devJob("Under the rules policy")
	require.Equal(t, schemas.JobDone, d.waitJobEnd(events, second.ID).Status, "promoted by the rules, without a restart")
	require.Equal(t, 5, developerConcurrency(t, d))

	write(`{"roles": {"developer": {"review": "sometimes"}}}`)
	waitLog(t, d, "configuration refused")
	require.Contains(t, d.logs.String(), "sometimes")
	third := devJob("After a bad file")
	require.Equal(t, schemas.JobDone, d.waitJobEnd(events, third.ID).Status, "the last good configuration stays")
	require.Equal(t, 5, developerConcurrency(t, d))

	write(`{"roles": {"developer": {"review": "rules", "concurrency": 5, "maxDeliver": 3}}}`)
	waitLog(t, d, "takes effect at the next restart")
	require.Contains(t, d.logs.String(), `"key":"roles.developer.maxDeliver"`)
}

// developerConcurrency asks the running developer worker its concurrency.
func developerConcurrency(t *testing.T, d *dev) int {
	t.Helper()
	inbox := d.NC.NewRespInbox()
	sub, err := d.NC.SubscribeSync(inbox)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, d.NC.PublishRequest(bus.Subjects{Prefix: "troupe"}.WorkersPing(), inbox, nil))
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m, err := sub.NextMsg(time.Until(deadline))
		require.NoError(t, err)
		var wi schemas.WorkerInfo
		require.NoError(t, json.Unmarshal(m.Data, &wi))
		if wi.Role == "developer" {
			return wi.Concurrency
		}
	}
	t.Fatal("the developer worker did not answer the ping")
	return 0
}

func waitLog(t *testing.T, d *dev, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(d.logs.String(), s) }, 15*time.Second, 50*time.Millisecond,
		"troupe dev never logged %q:\n%s", s, tail(d.logs.String(), 20))
}
