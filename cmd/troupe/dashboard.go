package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"strings"
	"syscall"

	"github.com/troupe-dev/troupe/dashboard"
)

// dashboardAuth is who may use the dashboard, from the environment (never
// from flags, which other users of the machine can read).
type dashboardAuth struct {
	Token          string
	Users          map[string]string
	Reviewer       string
	SessionKey     []byte
	TrustedProxies []netip.Prefix
}

// secrets are the credentials the process must never show.
func (a dashboardAuth) secrets() []string {
	out := []string{a.Token, string(a.SessionKey)}
	for _, pw := range a.Users {
		out = append(out, pw)
	}
	return out
}

// dashboardFlags are the dashboard's flags of troupe dev and troupe review.
type dashboardFlags struct {
	addr string
}

func (d *dashboardFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.addr, "http", "127.0.0.1:8080", "address of the dashboard; empty for none. Beyond loopback it needs TROUPE_DASHBOARD_TOKEN or TROUPE_DASHBOARD_USERS")
}

// auth reads the credentials and checks the address may be served with them.
func (d *dashboardFlags) auth() (dashboardAuth, error) {
	a := dashboardAuth{Token: os.Getenv("TROUPE_DASHBOARD_TOKEN"), Reviewer: localUser(),
		SessionKey: []byte(os.Getenv("TROUPE_DASHBOARD_SESSION_KEY"))}
	if len(a.SessionKey) > 0 {
		if err := dashboard.CheckSessionKey(a.SessionKey); err != nil {
			return a, fmt.Errorf("TROUPE_DASHBOARD_SESSION_KEY: %w", err)
		}
	}
	proxies, err := dashboard.ParseTrustedProxies(os.Getenv("TROUPE_DASHBOARD_TRUSTED_PROXIES"))
	if err != nil {
		return a, fmt.Errorf("TROUPE_DASHBOARD_TRUSTED_PROXIES: %w", err)
	}
	a.TrustedProxies = proxies
	if a.Token != "" && len(a.Token) < 16 {
		return a, fmt.Errorf("TROUPE_DASHBOARD_TOKEN: %d characters is too easy to guess; use at least 16 (openssl rand -hex 32 makes one)", len(a.Token))
	}
	if v := strings.TrimSpace(os.Getenv("TROUPE_DASHBOARD_USERS")); v != "" {
		a.Users = map[string]string{}
		for i, pair := range strings.Split(v, ",") {
			name, pw, ok := strings.Cut(strings.TrimSpace(pair), ":")
			if !ok || name == "" || pw == "" {
				return a, fmt.Errorf("TROUPE_DASHBOARD_USERS: entry %d is not name:password", i+1)
			}
			a.Users[name] = pw
		}
	}
	if d.addr == "" {
		return a, nil
	}
	return a, dashboard.CheckExposure(d.addr, a.Token, a.Users)
}

// localUser is the name a decision is recorded under on loopback when
// nobody gave one.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "local"
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
