package main

import (
	"net/url"
	"strings"

	"github.com/troupe-dev/troupe/internal/config"
)

// configSecrets are the secrets of the configuration in force: every
// provider's API key and the key-like values of its baseUrl's query, the
// NATS password and token and the passwords in the NATS and database URLs,
// and the dashboard's token, passwords and session key. Review's
// no_secrets looks for each of them literally, whatever its rules say, and
// masks them in what it shows.
func configSecrets(cfg config.Config, dash dashboardAuth) []string {
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	for _, p := range cfg.Models.Providers {
		add(p.APIKey)
		urlSecrets(p.BaseURL, add)
	}
	add(cfg.NATS.Password)
	add(cfg.NATS.Token)
	for _, u := range strings.Split(cfg.NATS.URL, ",") {
		urlSecrets(u, add)
	}
	urlSecrets(cfg.Database.URL, add)
	add(dash.Token)
	for _, pw := range dash.Users {
		add(pw)
	}
	add(string(dash.SessionKey))
	return out
}

// urlSecrets passes on the password of a URL's user information and the
// values of its query parameters named like secrets (key, api_key,
// access_token, x-api-key, password, …).
func urlSecrets(raw string, add func(string)) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return
	}
	if pw, ok := u.User.Password(); ok {
		add(pw)
	}
	for name, values := range u.Query() {
		n := strings.ToLower(name)
		if strings.Contains(n, "key") || strings.Contains(n, "token") || strings.Contains(n, "secret") ||
			strings.Contains(n, "password") || n == "pass" || n == "pwd" || n == "sig" || n == "signature" {
			for _, v := range values {
				add(v)
			}
		}
	}
}
