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
	require.True(t, c.NATS.UseAtomicBatches())
	require.Equal(t, 2, c.MaxRevisions())
	require.Equal(t, 4, c.Roles["developer"].Concurrency)
	require.Equal(t, PolicyRules, c.Roles["developer"].Review)
	require.Len(t, c.Roles, 6)
}

func TestAtomicBatches(t *testing.T) {
	t.Parallel()
	for doc, want := range map[string]bool{
		`{"nats": {"sync": "periodic"}}`:                        false,
		`{"nats": {"sync": "periodic", "atomicBatches": true}}`: true,
		`{"nats": {"atomicBatches": false}}`:                    false,
		`{"nats": {"url": "nats://elsewhere:4222"}}`:            true,
	} {
		c, err := Parse([]byte(doc))
		require.NoError(t, err, doc)
		require.Equal(t, want, c.NATS.UseAtomicBatches(), doc)
	}
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
		{"negative image bytes", `{"models": {"maxImageBytes": -1}}`, `models.maxImageBytes: must not be negative`},
		{"negative image decodes", `{"models": {"imageDecodes": -2}}`, `models.imageDecodes: must not be negative`},
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

func TestNATSFromEnvironment(t *testing.T) {
	t.Parallel()
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }
	file := NATS{User: "from-file", Token: "file-token", TLS: TLS{CAFile: "/file/ca.pem"}}

	n := file.WithEnv(env(map[string]string{
		"TROUPE_NATS_USER": "worker-developer", "TROUPE_NATS_PASSWORD": "pw", "TROUPE_NATS_INBOX_PREFIX": "_INBOX.worker-developer",
		"TROUPE_NATS_TLS_CERT": "/c.pem", "TROUPE_NATS_TLS_KEY": "/k.pem",
	}))
	require.Equal(t, NATS{User: "worker-developer", Password: "pw", InboxPrefix: "_INBOX.worker-developer",
		TLS: TLS{CAFile: "/file/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}}, n, "the environment's user replaces the file's token")
	require.NoError(t, n.Validate())

	// A password from the environment goes with the file's user.
	n = NATS{User: "review"}.WithEnv(env(map[string]string{"TROUPE_NATS_PASSWORD": "pw"}))
	require.Equal(t, NATS{User: "review", Password: "pw"}, n)

	n = file.WithEnv(env(map[string]string{"TROUPE_NATS_CREDS": "/run/secrets/troupe.creds"}))
	require.Equal(t, NATS{CredsFile: "/run/secrets/troupe.creds", TLS: file.TLS}, n)
	n = NATS{}.WithEnv(env(map[string]string{"TROUPE_NATS_NKEY": "/seed.nk", "TROUPE_NATS_TLS_CA": "/ca.pem"}))
	require.Equal(t, NATS{NKeyFile: "/seed.nk", TLS: TLS{CAFile: "/ca.pem"}}, n)
	require.Equal(t, file, file.WithEnv(env(nil)), "nothing set, nothing changed")
}

func TestNATSValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		n    NATS
		want string
	}{
		{NATS{User: "u", Token: "t"}, "nats: user and password, token are set; authenticate one way only"},
		{NATS{CredsFile: "a", NKeyFile: "b"}, "credsFile, nkeyFile are set"},
		{NATS{User: "u"}, "nats.password: is required with nats.user (set TROUPE_NATS_PASSWORD)"},
		{NATS{Password: "p"}, "nats.user: is required with nats.password"},
		{NATS{TLS: TLS{CertFile: "c"}}, "nats.tls: certFile and keyFile go together"},
		{NATS{InboxPrefix: "_INBOX.>"}, `nats.inboxPrefix: "_INBOX.>" is not a subject without wildcards`},
		{NATS{InboxPrefix: "_INBOX."}, `nats.inboxPrefix: "_INBOX."`},
		{NATS{ReplyPrefixes: []string{"_INBOX.", "a.*"}}, `nats.replyPrefixes[1]: "a.*" is not a subject prefix`},
		{NATS{InboxPrefix: "replies.ada"}, `nats.inboxPrefix: "replies.ada" is not under a reply prefix (_INBOX.): the services would not answer it`},
		{NATS{InboxPrefix: "_INBOXES.ada"}, `nats.inboxPrefix: "_INBOXES.ada" is not under a reply prefix`},
		{NATS{Streams: map[string]StreamLimits{"TROUPE_TASK": {MaxMsgs: 1}}}, `nats.streams: "TROUPE_TASK" is not a stream; the streams are TROUPE_TASKS,`},
		{NATS{Streams: map[string]StreamLimits{"TROUPE_DLQ": {MaxBytes: -1}}}, `nats.streams.TROUPE_DLQ: limits are positive numbers`},
	} {
		err := tt.n.Validate()
		require.Error(t, err, "%+v", tt.n)
		require.Contains(t, err.Error(), tt.want)
	}
	require.NoError(t, NATS{User: "u", Password: "p", InboxPrefix: "_INBOX.u", TLS: TLS{CAFile: "ca", CertFile: "c", KeyFile: "k"}}.Validate())
	require.NoError(t, NATS{InboxPrefix: "replies.ada", ReplyPrefixes: []string{"_INBOX.", "replies"}}.Validate())
	_, err := Parse([]byte(`{"nats": {"user": "u", "token": "t"}}`))
	require.ErrorContains(t, err, "authenticate one way only", "Parse checks the section too")
}

func TestNATSSecretsRedacted(t *testing.T) {
	t.Parallel()
	c := Config{NATS: NATS{URL: "nats://u:url-secret@nats:4222", User: "u", Password: "pw-secret", Token: "tok-secret",
		CredsFile: "/run/u.creds", TLS: TLS{CAFile: "/ca.pem"}}}
	shown, err := json.Marshal(c.Redacted())
	require.NoError(t, err)
	for _, secret := range []string{"url-secret", "pw-secret", "tok-secret"} {
		require.NotContains(t, string(shown), secret)
	}
	require.Contains(t, string(shown), `"credsFile":"/run/u.creds"`)
	require.Contains(t, string(shown), `"tls":{"caFile":"/ca.pem"}`)
	shown, err = json.Marshal(Config{}.Redacted())
	require.NoError(t, err)
	require.NotContains(t, string(shown), `"tls"`, "no TLS, no tls object")
}

// TestRedactedURLCredentials: config check and the logged changes mask a
// key in a provider's base URL whatever its parameter is called, and the
// key wherever else it appears.
func TestRedactedURLCredentials(t *testing.T) {
	t.Parallel()
	for _, param := range []string{"key", "api_key", "apikey", "access_token", "x-api-key", "token", "sig", "client_secret"} {
		secret := "Q9v" + strings.ReplaceAll(param, "_", "") + "7kLmN2pX"
		c := Config{Models: Models{Providers: map[string]Provider{"p": {
			BaseURL: "https://gw.example.com/v1?api-version=2024-06-01&" + param + "=" + secret,
			Models:  []Model{{ID: "m", Name: "mirror of " + secret}},
		}}}}
		shown, err := json.Marshal(c.Redacted())
		require.NoError(t, err)
		require.NotContains(t, string(shown), secret, param)
		require.Equal(t, "https://gw.example.com/v1?api-version=2024-06-01&"+param+"=***", c.Redacted().Models.Providers["p"].BaseURL, param)
		require.Contains(t, c.Secrets(), secret, param)

		next := c
		next.Models.Providers = map[string]Provider{"p": {BaseURL: "https://gw.example.com/v2?" + param + "=" + secret, Models: c.Models.Providers["p"].Models}}
		for _, ch := range Diff(c, next) {
			require.NotContains(t, ch.String(), secret, param)
		}
	}
}

// TestValidationHidesSubstitutedValues: a value that came from ${VAR} is
// shown as ${VAR} in a validation error, never as itself: a key set in the
// wrong field is not printed.
func TestValidationHidesSubstitutedValues(t *testing.T) {
	t.Setenv("TROUPE_TEST_PM_REVIEW", "sk-test-5f1d0c9a7b3e42d8")
	t.Setenv("TROUPE_TEST_REPLICAS", "9")
	t.Setenv("TROUPE_TEST_HOST", "gw.example.com")
	_, err := Parse([]byte(`{"roles": {"pm": {"review": "${TROUPE_TEST_PM_REVIEW}"}},
		"nats": {"replicas": ${TROUPE_TEST_REPLICAS}},
		"models": {"default": "p/${TROUPE_TEST_PM_REVIEW}", "providers": {"p": {"baseUrl": "https://${TROUPE_TEST_HOST}", "models": [{"id": "m"}]}}}}`))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "sk-test-5f1d0c9a7b3e42d8")
	require.Contains(t, err.Error(), `roles.pm.review: "${TROUPE_TEST_PM_REVIEW}" is not a policy`)
	require.Contains(t, err.Error(), `models.default: "p/${TROUPE_TEST_PM_REVIEW}" is not a configured model`)
	require.Contains(t, err.Error(), `nats.replicas: ${TROUPE_TEST_REPLICAS} is out of range 1..5`)
}

// TestSecretsFromEnvironment: a value substituted for a variable named
// like a credential is a secret wherever it was put; other substituted
// values are not (masking a host name or a number everywhere would blank
// the logs).
func TestSecretsFromEnvironment(t *testing.T) {
	t.Setenv("TROUPE_TEST_GATEWAY_TOKEN", "gateway-token-value-77")
	t.Setenv("TROUPE_TEST_MODEL_NAME", "Friendly Name")
	c, err := Parse([]byte(`{"models": {"default": "p/m", "providers": {"p": {"baseUrl": "https://gw.example.com/${TROUPE_TEST_GATEWAY_TOKEN}/v1",
		"models": [{"id": "m", "name": "${TROUPE_TEST_MODEL_NAME}"}]}}}}`))
	require.NoError(t, err)
	require.Contains(t, c.Secrets(), "gateway-token-value-77")
	require.NotContains(t, c.Secrets(), "Friendly Name")
	shown, err := json.Marshal(c.Redacted())
	require.NoError(t, err)
	require.NotContains(t, string(shown), "gateway-token-value-77")
	require.Contains(t, string(shown), `"baseUrl":"https://gw.example.com/***/v1"`)
	require.Contains(t, string(shown), "Friendly Name")
}
