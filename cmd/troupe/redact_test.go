package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/redact"
)

// TestCLIErrorsAreMasked: an error the CLI prints is masked like a log
// line: a credential typed into the wrong field of the configuration is
// not echoed by config check.
func TestCLIErrorsAreMasked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "troupe.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"roles": {"pm": {"review": "api_key=sk-typed-in-4f9a2b7c"}}}`), 0o600))
	var out, errb bytes.Buffer
	require.Equal(t, 1, Run(context.Background(), []string{"config", "check", "--config", path}, strings.NewReader(""), &out, &errb))
	require.Contains(t, errb.String(), `roles.pm.review: "api_key=***" is not a policy`)
	require.NotContains(t, errb.String(), "sk-typed-in")
}

// TestDashboardSecretsAreMasked: the dashboard's token, session key and
// passwords are among what the process masks.
func TestDashboardSecretsAreMasked(t *testing.T) {
	t.Parallel()
	a := dashboardAuth{Token: "dash-token-0123456789abcdef", SessionKey: []byte("session-key-0123456789abcdef"),
		Users: map[string]string{"ada": "ada-password-42"}}
	redact.Add(a.secrets()...)
	for _, s := range []string{a.Token, string(a.SessionKey), "ada-password-42"} {
		require.Equal(t, "saw ***", redact.String("saw "+s))
	}
}
