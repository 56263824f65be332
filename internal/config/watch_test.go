package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestWatcherAppliesValidChangesOnly: a changed file is applied with the
// list of what changed; an invalid one is refused with its reason and the
// last good configuration stays; secrets never show in the changes.
func TestWatcherAppliesValidChangesOnly(t *testing.T) { // not parallel: it sets an environment variable
	dir := t.TempDir()
	path := filepath.Join(dir, "troupe.json")
	write := func(s string) { writeAtomically(t, path, s) }
	write(`{"roles": {"developer": {"concurrency": 2, "review": "human"}}}`)
	cfg, _, err := Load(path)
	require.NoError(t, err)

	var mu sync.Mutex
	var applied []Config
	var changes [][]Change
	var logs strings.Builder
	var logMu sync.Mutex
	w := &Watcher{Path: path, Interval: 20 * time.Millisecond, Log: zerolog.New(syncWriter{&logMu, &logs}),
		Apply: func(c Config, ch []Change) {
			mu.Lock()
			defer mu.Unlock()
			applied, changes = append(applied, c), append(changes, ch)
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx, cfg)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(applied) }

	write(`{"roles": {"developer": {"concurrency": 8, "review": "rules"}}}`)
	require.Eventually(t, func() bool { return count() == 1 }, 5*time.Second, 10*time.Millisecond)
	mu.Lock()
	require.Equal(t, 8, applied[0].Roles["developer"].Concurrency)
	var keys []string
	for _, c := range changes[0] {
		keys = append(keys, c.String())
	}
	mu.Unlock()
	require.Contains(t, keys, "roles.developer.concurrency: 2 → 8")
	require.Contains(t, keys, `roles.developer.review: "human" → "rules"`)

	write(`{"roles": {"developer": {"concurrency": "many"}}}`)
	require.Eventually(t, func() bool {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Contains(logs.String(), "configuration refused")
	}, 5*time.Second, 10*time.Millisecond)
	logMu.Lock()
	require.Contains(t, logs.String(), "concurrency")
	logMu.Unlock()
	require.Equal(t, 1, count(), "an invalid file is not applied")

	// Back to a valid file: changes are against the last good one.
	t.Setenv("TROUPE_TEST_WATCH_KEY", "sk-secret-value")
	write(`{"roles": {"developer": {"concurrency": 8, "review": "rules"}}, "models": {"providers": {"p": {"baseURL": "http://127.0.0.1:1/v1", "apiKey": "${TROUPE_TEST_WATCH_KEY}", "models": [{"id": "m"}]}}}}`)
	require.Eventually(t, func() bool { return count() == 2 }, 5*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, c := range changes[1] {
		require.NotContains(t, c.String(), "sk-secret-value")
		require.False(t, strings.HasPrefix(c.Key, "roles."), "roles did not change: %s", c)
	}
	require.NotEmpty(t, changes[1])
}

// writeAtomically replaces the file at path with content in one step, so
// that a watcher never reads it half written.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o644))
	require.NoError(t, os.Rename(tmp, path))
}

// TestWatcherWaitsForAFileBeingWritten: a file read while it is being
// written (truncated, not yet filled) is looked at again before it is
// judged, so an editor's save is applied without a refusal in the log.
func TestWatcherWaitsForAFileBeingWritten(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "troupe.json")
	writeAtomically(t, path, `{"roles": {"developer": {"concurrency": 2}}}`)
	cfg, _, err := Load(path)
	require.NoError(t, err)

	var mu sync.Mutex
	var applied []Config
	var logs strings.Builder
	var logMu sync.Mutex
	const interval = 200 * time.Millisecond
	w := &Watcher{Path: path, Interval: interval, Log: zerolog.New(syncWriter{&logMu, &logs}),
		Apply: func(c Config, _ []Change) { mu.Lock(); defer mu.Unlock(); applied = append(applied, c) }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx, cfg)

	// Each save leaves the file empty for half an interval, across the
	// watcher's next look (the last change was applied at a look): one
	// look lands in it, two in a row cannot (a ticker drops the ticks it
	// misses).
	for n := 3; n <= 8; n++ {
		time.Sleep(interval * 3 / 4)
		require.NoError(t, os.WriteFile(path, nil, 0o644))
		time.Sleep(interval / 2)
		writeAtomically(t, path, fmt.Sprintf(`{"roles": {"developer": {"concurrency": %d}}}`, n))
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(applied) > 0 && applied[len(applied)-1].Roles["developer"].Concurrency == n
		}, 10*time.Second, 10*time.Millisecond)
	}
	logMu.Lock()
	defer logMu.Unlock()
	require.NotContains(t, logs.String(), "configuration refused")
}

func TestChangeNeedsRestart(t *testing.T) {
	t.Parallel()
	require.True(t, Change{Key: "nats.url"}.NeedsRestart())
	require.True(t, Change{Key: "database.url"}.NeedsRestart())
	require.True(t, Change{Key: "roles.pm.maxDeliver"}.NeedsRestart())
	require.True(t, Change{Key: "budgets.maxTokensPerJob"}.NeedsRestart())
	require.False(t, Change{Key: "roles.pm.review"}.NeedsRestart())
	require.False(t, Change{Key: "roles.developer.concurrency"}.NeedsRestart())
	require.False(t, Change{Key: "models.providers.openai.models"}.NeedsRestart())
	require.False(t, Change{Key: "review.model"}.NeedsRestart())
}

type syncWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestDiffSeesSecrets: a changed secret is a change, shown redacted.
func TestDiffSeesSecrets(t *testing.T) {
	t.Parallel()
	a, err := Parse([]byte(`{"nats": {"token": "first-token"}}`))
	require.NoError(t, err)
	b, err := Parse([]byte(`{"nats": {"token": "second-token"}}`))
	require.NoError(t, err)
	changes := Diff(a, b)
	require.Len(t, changes, 1)
	require.Equal(t, "nats.token", changes[0].Key)
	require.NotContains(t, changes[0].String(), "first-token")
	require.NotContains(t, changes[0].String(), "second-token")
	require.True(t, changes[0].NeedsRestart())
}
