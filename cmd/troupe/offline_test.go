package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOfflineLatencyRefusedWithProviders: --offline-latency runs every
// role on the offline model; with a provider's model configured, the
// service refuses to start and says which roles it would have replaced,
// rather than silently running them offline.
func TestOfflineLatencyRefusedWithProviders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "troupe.json")
	require.NoError(t, os.WriteFile(cfg, []byte(`{"models": {"default": "fake/text", "providers": {"fake": {
		"baseUrl": "http://127.0.0.1:1", "apiKey": "k", "api": "openai-completions", "models": [{"id": "text"}]}}}}`), 0o600))
	var out, errb bytes.Buffer
	// Without the check the worker would wait for NATS until this ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := Run(ctx, []string{"worker", "--role", "developer", "--config", cfg, "--offline-latency", "10ms",
		"--nats-url", "nats://127.0.0.1:1", "--database-url", filepath.Join(dir, "t.db"), "--ops-addr", ""}, strings.NewReader(""), &out, &errb)
	require.NotEqual(t, 0, code)
	require.Contains(t, errb.String(), "--offline-latency")
	require.Contains(t, errb.String(), "roles.developer: fake/text")
}
