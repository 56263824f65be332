package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/store"
)

// startTestApp starts the orchestrator and the review service on an
// embedded NATS server and SQLite, as troupe dev does, without workers.
func startTestApp(t *testing.T) *App {
	t.Helper()
	cfg, _, err := config.Load("")
	require.NoError(t, err)
	a := &App{Config: cfg, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		DataDir: t.TempDir(), Embedded: true, Orchestrator: true, Review: true}
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(func() { a.Stop(context.Background()) })
	return a
}

// cli runs the troupe command line against a.
func (a *App) cli(t *testing.T, args ...string) (stdout string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), append(args, "--nats-url", a.NATSURL), nil, &out, &errOut)
	require.Equal(t, 0, code, "troupe %v: %s", args, errOut.String())
	return out.String()
}

func TestWorkspaceExportHistory(t *testing.T) {
	t.Parallel()
	a := startTestApp(t)
	ctx := context.Background()
	for i, art := range []struct{ path, content string }{
		{"projects/j1/pm/PRD.md", "PRD v1"},
		{"projects/j1/pm/PRD.md", "PRD v2"},
		{"projects/j1/pm/PRD.md", "PRD v3"},
		{"docs/GLOSSARY.md", "glossary"},
	} {
		_, err := a.store.ArtifactInsert(ctx, store.Artifact{ID: fmt.Sprintf("a_%d", i), Path: art.path, Content: art.content,
			Size: len(art.content), CreatedAt: time.Now()})
		require.NoError(t, err)
	}
	read := func(dir, rel string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		require.NoError(t, err, rel)
		return string(data)
	}

	t.Run("newest only, and says so", func(t *testing.T) {
		dir := t.TempDir()
		out := a.cli(t, "workspace", "export", dir)
		require.Equal(t, "PRD v3", read(dir, "projects/j1/pm/PRD.md"))
		require.Equal(t, "glossary", read(dir, "docs/GLOSSARY.md"))
		require.Contains(t, out, "exported 2 file(s)")
		require.Contains(t, out, "2 older version(s) of 1 path(s) were not written; --history writes every version under .history/")
		require.NoDirExists(t, filepath.Join(dir, historyDir))
	})
	t.Run("every version", func(t *testing.T) {
		dir := t.TempDir()
		out := a.cli(t, "workspace", "export", dir, "--history")
		require.Equal(t, "PRD v3", read(dir, "projects/j1/pm/PRD.md"))
		for v := 1; v <= 3; v++ {
			require.Equal(t, fmt.Sprintf("PRD v%d", v), read(dir, fmt.Sprintf(".history/projects/j1/pm/PRD.md@v%d", v)))
		}
		require.Equal(t, "glossary", read(dir, ".history/docs/GLOSSARY.md@v1"))
		require.Contains(t, out, "every version of them (4 file(s))")
	})
	t.Run("json", func(t *testing.T) {
		var got struct {
			Files   int `json:"files"`
			Older   int `json:"older_versions"`
			History int `json:"history_files"`
		}
		require.NoError(t, json.Unmarshal([]byte(a.cli(t, "workspace", "export", t.TempDir(), "--json")), &got))
		require.Equal(t, 2, got.Files)
		require.Equal(t, 2, got.Older)
		require.Equal(t, 0, got.History)
	})
}
