// Package dashboard is Troupe's web UI: the review queue, jobs with their
// task graphs, MEMORY, dead letters and workers, rendered on the server
// with html/template and kept live by server-sent events from
// TROUPE_EVENTS. It reads the store directly and changes state only
// through the NATS API (reviews.decide, dlq.replay, dlq.discard), so a
// decision made here is the same as one made with the CLI.
//
// Model output is untrusted: markdown is rendered and then sanitised,
// code is highlighted from escaped tokens, and a Content-Security-Policy
// that allows only the embedded script backs both up.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/internal/telemetry"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config configures a dashboard.
type Config struct {
	// Prefix of every subject. Defaults to "troupe".
	Prefix string
	// Roles are the roles shown; defaults to every role.
	Roles []string
	// Token, when set, is asked for at sign-in (or as a Bearer header).
	Token string
	// Users, when set, are the basic-auth users and their passwords.
	Users map[string]string
	// SessionKey signs session cookies, CSRF tokens and flash messages:
	// at least 32 bytes (CheckSessionKey). Replicas that share it accept
	// each other's sessions; without it each process makes a random one.
	SessionKey []byte
	// TrustedProxies are the reverse proxies whose X-Forwarded-For (the
	// client's address, for the limits on failed sign-ins) and
	// X-Forwarded-Proto (https: the session cookie is Secure) are
	// believed. Defaults to none: the peer is the client.
	TrustedProxies []netip.Prefix
	// Metrics counts failed sign-ins; nil for none.
	Metrics *telemetry.Metrics
	// Replies are the reply subjects the dashboard answers the other
	// replicas' requests on (inboxes); defaults to "_INBOX.".
	Replies bus.Replies
	// Reviewer is the name decisions are recorded under when nobody
	// signed in with a name (loopback without credentials).
	Reviewer string
	// Prices turn tokens into cost, by model reference.
	Prices map[string]config.Price
	// Limits are the rule checks' limits, shown beside an output.
	Limits review.Limits
	// Timeout bounds each API request the dashboard makes. Defaults to 10s.
	Timeout time.Duration
	Logger  zerolog.Logger
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = bus.DefaultPrefix
	}
	if len(c.Roles) == 0 {
		c.Roles = schemas.Roles
	}
	if c.Reviewer == "" {
		c.Reviewer = "local"
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

// Server serves the dashboard.
type Server struct {
	cfg   Config
	log   zerolog.Logger
	store store.Store
	nc    *nats.Conn
	js    jetstream.JetStream
	subj  bus.Subjects
	pages pages
	auth  *auth
	live  *live
	http  *http.Server
	stats roleStatsCache
	subs  []*nats.Subscription // shareRevocations'
}

// New returns a dashboard over the store and the NATS connection.
func New(cfg Config, st store.Store, nc *nats.Conn, js jetstream.JetStream) (*Server, error) {
	cfg = cfg.withDefaults()
	if len(cfg.SessionKey) > 0 {
		if err := CheckSessionKey(cfg.SessionKey); err != nil {
			return nil, fmt.Errorf("dashboard session key: %w", err)
		}
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With().Str("service", "dashboard").Logger(),
		store: st, nc: nc, js: js, subj: bus.Subjects{Prefix: cfg.Prefix}, pages: p,
		auth: newAuth(cfg),
	}
	s.auth.log = s.log
	s.live = newLive(nc, s.subj)
	if err := s.shareRevocations(); err != nil {
		s.unsubscribe()
		return nil, fmt.Errorf("dashboard: sharing sign-outs: %w", err)
	}
	return s, nil
}

// Minimum strengths of the dashboard's secrets. Every one needs at least
// minDistinct different characters besides its length, so that neither
// "aaaa…" nor "abab…" passes.
const (
	MinSessionKeyBytes = 32
	MinTokenChars      = 16
	MinPasswordChars   = 12
	minDistinct        = 8
)

// CheckSessionKey refuses a session key that could be guessed from a
// cookie: one is given to every visitor, so guesses can be tested offline.
func CheckSessionKey(key []byte) error {
	return checkStrength(string(key), MinSessionKeyBytes, "bytes", "openssl rand -hex 32 makes one")
}

func checkStrength(secret string, min int, unit, hint string) error {
	distinct := map[rune]bool{}
	for _, r := range secret {
		distinct[r] = true
	}
	if len(secret) < min || len(distinct) < minDistinct {
		return fmt.Errorf("%d %s with %d different characters is too easy to guess: use at least %d %s, at least %d of them different (%s)",
			len(secret), unit, len(distinct), min, unit, minDistinct, hint)
	}
	return nil
}

// CheckExposure refuses to serve on anything but loopback without a token
// or basic-auth users, or with a token or password too weak to face the
// network: a token of fewer than MinTokenChars characters, a password of
// fewer than MinPasswordChars, or either with fewer than 8 different
// characters. On loopback any credentials will do.
func CheckExposure(addr, token string, users map[string]string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dashboard address %q: %w", addr, err)
	}
	if loopbackHost(host) {
		return nil
	}
	where := addr
	if host == "" {
		where += " (every interface)"
	}
	if token != "" {
		if err := checkStrength(token, MinTokenChars, "characters", "openssl rand -hex 32 makes one"); err != nil {
			return fmt.Errorf("TROUPE_DASHBOARD_TOKEN: %w, to serve the dashboard on %s", err, where)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(users)) {
		if err := checkStrength(users[name], MinPasswordChars, "characters", "openssl rand -base64 18 makes one"); err != nil {
			return fmt.Errorf("TROUPE_DASHBOARD_USERS: the password of %s: %w, to serve the dashboard on %s", name, err, where)
		}
	}
	if token != "" || len(users) > 0 {
		return nil
	}
	return fmt.Errorf("dashboard on %s is reachable beyond this machine: set TROUPE_DASHBOARD_TOKEN, or TROUPE_DASHBOARD_USERS=name:password[,name:password], or bind it to 127.0.0.1", where)
}

// Handler is the dashboard's HTTP handler, with authentication, CSRF
// checks and security headers.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(time.Hour, http.FileServerFS(static))))
	mux.HandleFunc("GET /static/chroma.css", s.chromaCSS)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)

	mux.HandleFunc("GET /{$}", s.overview)
	mux.HandleFunc("GET /jobs", s.jobs)
	mux.HandleFunc("GET /jobs/{id}", s.job)
	mux.HandleFunc("GET /reviews", s.reviews)
	mux.HandleFunc("GET /reviews/{id}", s.review)
	mux.HandleFunc("POST /reviews/{id}", s.decide)
	mux.HandleFunc("GET /memory", s.memory)
	mux.HandleFunc("GET /memory/MEMORY.md", s.memoryFile)
	mux.HandleFunc("GET /deadletters", s.deadLetters)
	mux.HandleFunc("GET /deadletters/{id}", s.deadLetter)
	mux.HandleFunc("POST /deadletters", s.actOnDeadLetters)
	mux.HandleFunc("GET /workers", s.workers)
	mux.HandleFunc("GET /events", s.events)

	cop := http.NewCrossOriginProtection()
	return securityHeaders(cop.Handler(s.auth.middleware(refuseNUL(mux))))
}

// Listen serves the dashboard on addr and returns the address it listens on.
func (s *Server) Listen(addr string) (string, error) {
	if err := CheckExposure(addr, s.cfg.Token, s.cfg.Users); err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("dashboard: %w", err)
	}
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("dashboard stopped")
		}
	}()
	return ln.Addr().String(), nil
}

// Close stops serving: live streams end at once, other requests may finish
// within ctx.
func (s *Server) Close(ctx context.Context) error {
	s.live.close()
	s.unsubscribe()
	if s.http == nil {
		return nil
	}
	return s.http.Shutdown(ctx)
}

func (s *Server) unsubscribe() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.subs = nil
}

// securityHeaders forbids every script but the dashboard's own, framing
// and content sniffing: even markup that escaped the sanitiser stays inert.
func securityHeaders(next http.Handler) http.Handler {
	const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

func cacheFor(d time.Duration, next http.Handler) http.Handler {
	v := fmt.Sprintf("public, max-age=%d", int(d.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", v)
		next.ServeHTTP(w, r)
	})
}

// call makes an API request and returns an error a person can read.
func (s *Server) call(ctx context.Context, endpoint string, req, out any) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	// Decisions and dead-letter actions go on <endpoint>.<user>: the
	// services record the person signed in here only from the review
	// service's user (bus.Delegate).
	err := bus.Request(ctx, s.nc, s.subj.APIAs(endpoint, bus.UserOf(s.nc)), req, out)
	var apiErr *bus.APIError
	switch {
	case err == nil || errors.As(err, &apiErr):
		return err
	case bus.IsNoResponders(err):
		service := "the orchestrator"
		if strings.HasPrefix(endpoint, "reviews.") {
			service = "the review service"
		}
		return fmt.Errorf("nothing answers %s: is %s running?", s.subj.API(endpoint), service)
	default:
		return fmt.Errorf("%s: %w", endpoint, err)
	}
}
