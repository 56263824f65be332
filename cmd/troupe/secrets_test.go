package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/config"
)

// TestConfigSecrets: every secret of the configuration reaches review's
// scanner: provider keys and key-like query values, NATS and database
// passwords, the dashboard's credentials.
func TestConfigSecrets(t *testing.T) {
	t.Parallel()
	cfg := config.Config{
		Models: config.Models{Providers: map[string]config.Provider{
			"a": {APIKey: "key-of-provider-a", BaseURL: "https://llm.example/v1?key=query-key-123&region=eu"},
			"b": {BaseURL: "https://llm.example/v1?x-api-key=other-query-key&access_token=tok-123456"},
		}},
		NATS:     config.NATS{URL: "nats://u:nats-url-pw@h1:4222,nats://u:nats-url-pw2@h2:4222", Password: "nats-password", Token: "nats-token-1"},
		Database: config.Database{URL: "postgres://troupe:db-password@db:5432/troupe"},
	}
	got := configSecrets(cfg, dashboardAuth{Token: "dash-token", Users: map[string]string{"ada": "ada-password"}})
	require.ElementsMatch(t, []string{
		"key-of-provider-a", "query-key-123", "other-query-key", "tok-123456",
		"nats-password", "nats-token-1", "nats-url-pw", "nats-url-pw2", "db-password", "dash-token", "ada-password",
		// A URL's user information whole, as redact masks it, beside its password.
		"u:nats-url-pw", "u:nats-url-pw2", "troupe:db-password",
	}, got)
}
