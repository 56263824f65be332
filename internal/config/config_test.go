package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`{}`))
	require.NoError(t, err)
	require.Equal(t, "troupe", c.NATS.Prefix)
	require.Equal(t, "always", c.NATS.Sync)
	require.Equal(t, 2, c.MaxRevisions())
	require.Equal(t, 4, c.Roles["developer"].Concurrency)
	require.Equal(t, PolicyRules, c.Roles["developer"].Review)
	require.Len(t, c.Roles, 6)
}

func TestParseRoles(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(`{"roles": {"developer": {"concurrency": 8, "review": "human"}}, "review": {"maxRevisions": 0}}`))
	require.NoError(t, err)
	require.Equal(t, 8, c.Roles["developer"].Concurrency)
	require.Equal(t, PolicyHuman, c.Policies()["developer"])
	require.Equal(t, PolicyRules, c.Policies()["pm"])
	require.Equal(t, 0, c.MaxRevisions(), "an explicit 0 is kept")
}

func TestParseErrorsNameTheField(t *testing.T) {
	t.Setenv("TROUPE_TEST_KEY", "sk-test")
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", `{"natz": {}}`, `unknown field "natz"`},
		{"bad input", `{"models": {"providers": {"bailian": {"baseUrl": "https://x", "models": [{"id": "q", "input": ["audio"]}]}}}}`,
			`models.providers.bailian.models[0].input: "audio" is not supported; use ["text"] or ["text","image"]`},
		{"unknown model", `{"models": {"default": "nope/m"}}`, `models.default: "nope/m" is not a configured model`},
		{"unknown role model", `{"roles": {"developer": {"model": "x/y"}}}`, `roles.developer.model: "x/y" is not a configured model`},
		{"unknown role", `{"roles": {"wizard": {}}}`, `roles.wizard: unknown role`},
		{"bad policy", `{"roles": {"pm": {"review": "vibes"}}}`, `roles.pm.review: "vibes" is not a policy`},
		{"bad backoff", `{"roles": {"pm": {"backoff": ["soon"]}}}`, `roles.pm.backoff[0]: "soon" is not a duration`},
		{"bad sync", `{"nats": {"sync": "never"}}`, `nats.sync: "never" is not a sync policy`},
		{"unset variable", `{"models": {"providers": {"p": {"baseUrl": "https://x", "apiKey": "${TROUPE_TEST_UNSET_VAR}", "models": [{"id": "m"}]}}}}`,
			`environment variable TROUPE_TEST_UNSET_VAR is not set`},
		{"max revisions", `{"review": {"maxRevisions": 99}}`, `review.maxRevisions: 99 is out of range`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestEnvSubstitutionAndRedaction(t *testing.T) {
	t.Setenv("TROUPE_TEST_KEY", `sk-abc"def`)
	c, err := Parse([]byte(`{"database": {"url": "postgres://troupe:hunter2@db/troupe"},
		"models": {"default": "p/m", "providers": {"p": {"baseUrl": "https://x", "apiKey": "${TROUPE_TEST_KEY}", "models": [{"id": "m", "input": ["text","image"]}]}}}}`))
	require.NoError(t, err)
	require.Equal(t, `sk-abc"def`, c.Models.Providers["p"].APIKey, "values are JSON-escaped, not spliced")
	shown, err := json.Marshal(c.Redacted())
	require.NoError(t, err)
	require.NotContains(t, string(shown), "sk-abc")
	require.NotContains(t, string(shown), "hunter2")
	require.Contains(t, string(shown), `"apiKey":"***"`)
	require.Equal(t, `sk-abc"def`, c.Models.Providers["p"].APIKey, "Redacted does not change the original")
}

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://troupe:hunter2@db:5432/troupe":            "postgres://***@db:5432/troupe",
		"nats://a:s3cret@h1:4222,nats://b:s3cret@h2:4222":     "nats://***@h1:4222,nats://***@h2:4222",
		"host=db user=troupe password=hunter2 dbname=troupe":  "host=db user=troupe password=*** dbname=troupe",
		"postgres://db/troupe?sslmode=disable&password=hunt2": "postgres://db/troupe?sslmode=disable&password=***",
		"nats://127.0.0.1:4222":                               "nats://127.0.0.1:4222",
	} {
		require.Equal(t, want, RedactDSN(in), in)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "troupe.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"roles": {"pm": {"review": "bogus"}}}`), 0o644))
	_, _, err := Load(path)
	require.Error(t, err)
	require.True(t, strings.HasPrefix(err.Error(), path+": "), err.Error())

	t.Setenv("TROUPE_CONFIG", "")
	t.Chdir(dir)
	require.NoError(t, os.WriteFile(path, []byte(`{"nats": {"prefix": "acme"}}`), 0o644))
	c, got, err := Load("")
	require.NoError(t, err)
	require.Equal(t, "troupe.json", got, "./troupe.json is read when present")
	require.Equal(t, "acme", c.NATS.Prefix)
}
