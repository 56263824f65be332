package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/stretchr/testify/require"
)

// secretPaths are where a checkout keeps secrets: docker compose's .env,
// the NATS credentials troupe nats-config writes, a Kubernetes overlay's
// secrets (the example's own too, once filled in), troupe dev's data.
var secretPaths = []string{
	".env",
	"models.env",
	"nats-secrets/troupe-auth.conf",
	"nats-secrets/worker-developer.env",
	"deploy/k8s/overlays/example/secrets.env",
	"deploy/k8s/overlays/example/nats-secrets/review.env",
	"deploy/k8s/overlays/prod/secrets.env",
	"deploy/k8s/overlays/prod/nats-secrets/orchestrator.env",
	".troupe/troupe.db",
}

// TestSecretsAreNotCommitted: git ignores every place a checkout keeps
// secrets, tracks none of them, and tracks the templates people copy.
func TestSecretsAreNotCommitted(t *testing.T) {
	t.Parallel()
	for _, p := range secretPaths {
		out, err := exec.Command("git", "-C", "..", "check-ignore", "--no-index", "-v", p).CombinedOutput()
		require.NoError(t, err, "git does not ignore %s: %s", p, out)
	}
	for _, p := range []string{".env.example", "models.env.example", "deploy/k8s/overlays/example/secrets.env.example", "deploy/k8s/base/secrets.env"} {
		err := exec.Command("git", "-C", "..", "check-ignore", "--no-index", "-q", p).Run()
		require.Error(t, err, "%s is a template and must stay tracked", p)
	}
	tracked, err := exec.Command("git", "-C", "..", "ls-files").Output()
	require.NoError(t, err)
	for _, f := range strings.Split(strings.TrimSpace(string(tracked)), "\n") {
		base := filepath.Base(f)
		require.NotContains(t, []string{".env", "models.env"}, base, "tracked: %s", f)
		require.NotContains(t, f, "nats-secrets/", "tracked: %s", f)
		if base == "secrets.env" {
			require.Equal(t, "deploy/k8s/base/secrets.env", f, "only the base's placeholder Secret is tracked")
		}
	}
}

// TestImageContextHoldsNoSecrets: the image build's context, as docker
// reads .dockerignore (docker's own matcher), leaves out the secrets, git's
// history and troupe dev's data, and keeps every file go build reads for
// the binary.
func TestImageContextHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../.dockerignore")
	require.NoError(t, err, "without a .dockerignore, COPY . . sends everything")
	patterns, err := ignorefile.ReadAll(f)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	pm, err := patternmatcher.New(patterns)
	require.NoError(t, err)
	excluded := func(p string) bool {
		t.Helper()
		ok, err := pm.MatchesOrParentMatches(filepath.ToSlash(p))
		require.NoError(t, err)
		return ok
	}
	for _, p := range append(secretPaths, ".git/config", ".env.local", "store/sqlite/x.db") {
		require.True(t, excluded(p), "%s goes into the image build", p)
	}

	// What go build reads: go.mod, go.sum and the Go and embedded files
	// of every package of this module the binary imports.
	need := []string{"go.mod", "go.sum"}
	out, err := exec.Command("go", "list", "-deps", "-json=Dir,Module,GoFiles,EmbedFiles", "../cmd/troupe").Output()
	require.NoError(t, err)
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			Dir                 string
			Module              *struct{ Main bool }
			GoFiles, EmbedFiles []string
		}
		require.NoError(t, dec.Decode(&p))
		if p.Module == nil || !p.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		require.NoError(t, err)
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			need = append(need, filepath.Join(rel, f))
		}
	}
	require.Greater(t, len(need), 20)
	for _, p := range need {
		require.False(t, excluded(p), "the build needs %s", p)
	}
}
