package main

import (
	"slices"

	"github.com/troupe-dev/troupe/internal/config"
)

// configSecrets are the secrets of the configuration in force
// (config.Config.Secrets: provider keys and the credentials in their base
// URLs, the NATS and database credentials, values of ${VAR}s named like a
// credential) and the dashboard's token, passwords and session key. Review's
// no_secrets looks for each of them literally, whatever its rules say, and
// masks them in what it shows; redact masks the same set everywhere else.
func configSecrets(cfg config.Config, dash dashboardAuth) []string {
	return slices.DeleteFunc(append(cfg.Secrets(), dash.secrets()...), func(s string) bool { return s == "" })
}
