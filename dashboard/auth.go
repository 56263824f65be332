package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/internal/telemetry"
)

const (
	sessionCookie = "troupe_session"
	sessionTTL    = 7 * 24 * time.Hour
)

// session is what the signed session cookie holds.
type session struct {
	Name   string `json:"n,omitempty"` // the reviewer's name
	Authed bool   `json:"a,omitempty"` // signed in with the token
	// Cred is the fingerprint of the token it signed in with: a session
	// outlives no change of the token.
	Cred string `json:"c,omitempty"`
	// Nonce is the session's id: the CSRF token and flash messages are
	// derived from it, and signing out revokes it.
	Nonce   string `json:"x"`
	Expires int64  `json:"e"`
}

// viewer is who makes a request.
type viewer struct {
	Name string
	CSRF string
	// CanSignOut is true when a sign-in made this session (token mode).
	CanSignOut bool
	// NameFixed is true when the name comes from basic auth.
	NameFixed bool
	session   session
}

type viewerKey struct{}

func viewerOf(r *http.Request) viewer {
	v, _ := r.Context().Value(viewerKey{}).(viewer)
	return v
}

// auth checks who a request comes from: basic-auth users, a token asked
// for at sign-in, or nobody (loopback only). Every visitor has a signed
// session cookie, whose nonce the CSRF token of each form is derived from.
// Failed sign-ins are logged, counted and limited (failures).
type auth struct {
	token    string
	users    map[string]string
	reviewer string
	key      []byte
	cred     string // the token's fingerprint (session.Cred)
	proxies  []netip.Prefix
	log      zerolog.Logger
	metrics  *telemetry.Metrics
	failures *failures
	revoked  *revocations
	now      func() time.Time
}

func newAuth(cfg Config) *auth {
	a := &auth{token: cfg.Token, users: cfg.Users, reviewer: cfg.Reviewer, proxies: cfg.TrustedProxies,
		log: cfg.Logger, metrics: cfg.Metrics, failures: newFailures(), revoked: newRevocations(), now: time.Now}
	if len(cfg.SessionKey) > 0 {
		// Shared by the replicas of review, so each accepts the others'
		// sessions and forms; at least 32 bytes (CheckSessionKey).
		sum := sha256.Sum256(append([]byte("troupe-dashboard-session\x00"), cfg.SessionKey...))
		a.key = sum[:]
	} else {
		// Never derived from the token or passwords: a signed cookie, which
		// any visitor gets, must not let anyone test guesses offline.
		a.key = make([]byte, 32)
		_, _ = rand.Read(a.key)
	}
	if a.token != "" {
		a.cred = base64.RawURLEncoding.EncodeToString(a.mac("credential:" + a.token)[:16])
	}
	return a
}

// loopbackHost reports whether a request's Host names this machine. Without
// credentials the dashboard answers only those, so a web page whose name
// was rebound to 127.0.0.1 (DNS rebinding) cannot read or post to it.
func loopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func (a *auth) sign(s session) string {
	data, _ := json.Marshal(s)
	body := base64.RawURLEncoding.EncodeToString(data)
	return body + "." + base64.RawURLEncoding.EncodeToString(a.mac("session:"+body))
}

func (a *auth) mac(msg string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func (a *auth) read(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	body, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return session{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, a.mac("session:"+body)) {
		return session{}, false
	}
	data, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return session{}, false
	}
	var s session
	if json.Unmarshal(data, &s) != nil || s.Nonce == "" || a.now().Unix() > s.Expires {
		return session{}, false
	}
	return s, true
}

// write sets the session cookie: Secure when the browser came over TLS,
// to us or to a trusted proxy.
func (a *auth) write(w http.ResponseWriter, r *http.Request, s session) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: a.sign(s), Path: "/", HttpOnly: true,
		Secure: a.overTLS(r), SameSite: http.SameSiteLaxMode, Expires: time.Unix(s.Expires, 0),
	})
}

func (a *auth) newSession() session {
	return session{Nonce: rand.Text(), Expires: a.now().Add(sessionTTL).Unix()}
}

// signedIn reports whether s was signed in with the token in use, and not
// signed out since.
func (a *auth) signedIn(s session) bool {
	return s.Authed && a.token != "" && subtle.ConstantTimeCompare([]byte(s.Cred), []byte(a.cred)) == 1 && !a.revoked.has(s.Nonce)
}

func (a *auth) csrf(s session) string {
	return base64.RawURLEncoding.EncodeToString(a.mac("csrf:" + s.Nonce))
}

// checkCSRF reports whether a state-changing request carries the CSRF
// token of its session.
func (a *auth) checkCSRF(r *http.Request) bool {
	s, ok := a.read(r)
	if !ok {
		return false
	}
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(a.csrf(s))) == 1
}

// flashQuery is the query that carries a flash message to the next page
// of the session s: the text and its signature, so that only the server
// can put words in the banner.
func (a *auth) flashQuery(s session, text string) string {
	return "flash=" + url.QueryEscape(text) + "&fs=" + base64.RawURLEncoding.EncodeToString(a.mac("flash:"+s.Nonce+"\x00"+text))
}

// flash is the flash message of r's query when the server signed it for
// the session s; "" otherwise.
func (a *auth) flash(r *http.Request, s session) string {
	q := r.URL.Query()
	text, sig := q.Get("flash"), q.Get("fs")
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if text == "" || err != nil || s.Nonce == "" || !hmac.Equal(got, a.mac("flash:"+s.Nonce+"\x00"+text)) {
		return ""
	}
	return text
}

// failed logs and counts a failed sign-in (never the secret tried) and
// spends one failure of the client's address and, when given, the user's.
func (a *auth) failed(r *http.Request, reason, user string) {
	ip := a.clientAddr(r)
	keys := []string{addrKey(ip)}
	ev := a.log.Warn().Str("client", ip.String()).Str("reason", reason).Str("path", r.URL.Path)
	if user != "" {
		keys = append(keys, "user:"+user)
		if _, known := a.users[user]; known {
			ev = ev.Str("user", user)
		} else {
			// What was typed as a name may be a password.
			ev = ev.Bool("user_known", false)
		}
	}
	a.failures.fail(a.now(), keys...)
	a.metrics.DashboardSignInFailure(reason)
	ev.Msg("dashboard sign-in failed")
}

// limited refuses, with 429 and Retry-After, a sign-in from a client (or
// for a user, when given) that failed too often; it reports whether it did.
func (a *auth) limited(w http.ResponseWriter, r *http.Request, user string) bool {
	ip := a.clientAddr(r)
	keys := []string{addrKey(ip)}
	if user != "" {
		keys = append(keys, "user:"+user)
	}
	wait := a.failures.wait(a.now(), keys...)
	if wait <= 0 {
		return false
	}
	a.metrics.DashboardSignInFailure("rate_limited")
	a.log.Warn().Str("client", ip.String()).Str("path", r.URL.Path).Dur("retry_after", wait).
		Msg("dashboard sign-in refused: too many failures")
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	http.Error(w, fmt.Sprintf("too many failed sign-ins; try again in %d s", secs), http.StatusTooManyRequests)
	return true
}

// basicUser checks the request's basic-auth credentials: ok when they are
// a user's, refused (answered) when too many failed.
func (a *auth) basicUser(w http.ResponseWriter, r *http.Request) (name string, ok, answered bool) {
	name, pw, given := r.BasicAuth()
	if !given {
		return "", false, false
	}
	if a.limited(w, r, name) {
		return name, false, true
	}
	want, known := a.users[name]
	// Compare even for unknown names, so timing does not tell them apart.
	match := subtle.ConstantTimeCompare([]byte(pw), []byte(want)) == 1
	if !known || !match {
		a.failed(r, "wrong_password", name)
		return name, false, false
	}
	return name, true, false
}

// bearer checks a request's Bearer token: ok when it is the dashboard's,
// refused (answered) when too many failed.
func (a *auth) bearer(w http.ResponseWriter, r *http.Request) (ok, answered bool) {
	tok, given := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !given {
		return false, false
	}
	if a.limited(w, r, "") {
		return false, true
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) != 1 {
		a.failed(r, "wrong_token", "")
		return false, false
	}
	return true, false
}

// middleware lets a request through when its sender is known, gives every
// visitor a session, checks the CSRF token of every POST and puts the
// viewer in the request's context.
func (a *auth) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.token == "" && len(a.users) == 0 && !loopbackHost(r.Host) {
			http.Error(w, "this dashboard has no credentials and answers only on localhost or 127.0.0.1", http.StatusMisdirectedRequest)
			return
		}
		public := strings.HasPrefix(r.URL.Path, "/static/") || r.URL.Path == "/login"
		s, ok := a.read(r)
		if !ok {
			s = a.newSession()
			a.write(w, r, s)
		}
		v := viewer{Name: s.Name, CSRF: a.csrf(s), session: s}
		switch {
		case len(a.users) > 0:
			name, ok, answered := a.basicUser(w, r)
			if answered {
				return
			}
			if !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="troupe", charset="UTF-8"`)
				http.Error(w, "sign in with a dashboard user (TROUPE_DASHBOARD_USERS)", http.StatusUnauthorized)
				return
			}
			v.Name, v.NameFixed = name, true
		case a.token != "":
			signedIn := a.signedIn(s)
			if !signedIn && !public {
				ok, answered := a.bearer(w, r)
				if answered {
					return
				}
				if !ok {
					if r.Method == http.MethodGet && r.URL.Path != "/events" {
						http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					} else {
						http.Error(w, "sign in first", http.StatusUnauthorized)
					}
					return
				}
			}
			v.CanSignOut = signedIn
			if !signedIn {
				v.Name = ""
			}
		}
		if v.Name == "" {
			v.Name = a.reviewer
		}
		if r.Method == http.MethodPost && !a.checkCSRF(r) {
			http.Error(w, "the form's CSRF token is missing or stale: reload the page and try again", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)))
	})
}

// loginPage asks for the reviewer's name, and the token when one is set.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "login", "Sign in", map[string]any{
		"NeedToken": s.cfg.Token != "", "Next": safeNext(r.URL.Query().Get("next")), "Error": "",
	})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	name := strings.TrimSpace(r.PostFormValue("name"))
	fail := func(msg string) {
		s.renderPage(w, r, "login", page{Title: "Sign in", Status: http.StatusUnauthorized,
			Data: map[string]any{"NeedToken": s.cfg.Token != "", "Next": next, "Error": msg}})
	}
	if len(name) > 64 {
		fail("name: at most 64 characters")
		return
	}
	sess, _ := s.auth.read(r)
	if s.cfg.Token != "" {
		if s.auth.limited(w, r, "") {
			return
		}
		tok := r.PostFormValue("token")
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
			s.auth.failed(r, "wrong_token", "")
			fail("that token is not the dashboard's token")
			return
		}
		if name == "" {
			fail("name: say who you are; it is recorded with each decision")
			return
		}
		sess = s.auth.newSession() // a new nonce on every sign-in
		sess.Authed, sess.Cred = true, s.auth.cred
	}
	sess.Name = name
	if sess.Nonce == "" {
		sess = s.auth.newSession()
		sess.Name = name
	}
	s.auth.write(w, r, sess)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout revokes the session it signs out, here and in the other
// replicas (shareRevocations), so a copy of its cookie is refused too, and
// clears the cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if sess := viewerOf(r).session; sess.Authed {
		s.auth.revoked.add(sess.Nonce, sess.Expires, s.auth.now())
		s.publishRevocation(revocation{Nonce: sess.Nonce, Expires: sess.Expires})
		s.log.Info().Str("reviewer", sess.Name).Msg("dashboard sign-out")
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.auth.overTLS(r)})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// safeNext keeps a redirect target on this site: browsers read \ as / and
// drop tabs and newlines, so neither may turn a path into //host.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\t\r\n") {
		return "/"
	}
	return next
}
