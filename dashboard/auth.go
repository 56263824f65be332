package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	sessionCookie = "troupe_session"
	sessionTTL    = 7 * 24 * time.Hour
)

// session is what the signed session cookie holds.
type session struct {
	Name    string `json:"n,omitempty"` // the reviewer's name
	Authed  bool   `json:"a,omitempty"` // signed in with the token
	Nonce   string `json:"x"`           // the CSRF token is derived from it
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
}

type viewerKey struct{}

func viewerOf(r *http.Request) viewer {
	v, _ := r.Context().Value(viewerKey{}).(viewer)
	return v
}

// auth checks who a request comes from: basic-auth users, a token asked
// for at sign-in, or nobody (loopback only). Every visitor has a signed
// session cookie, whose nonce the CSRF token of each form is derived from.
type auth struct {
	token    string
	users    map[string]string
	reviewer string
	key      []byte
}

func newAuth(token string, users map[string]string, reviewer string, key []byte) *auth {
	a := &auth{token: token, users: users, reviewer: reviewer}
	if len(key) > 0 {
		// Shared by the replicas of review, so each accepts the others'
		// sessions and forms. Hashed: any length of secret will do.
		sum := sha256.Sum256(append([]byte("troupe-dashboard-session\x00"), key...))
		a.key = sum[:]
	} else {
		// Never derived from the token or passwords: a signed cookie, which
		// any visitor gets, must not let anyone test guesses offline.
		a.key = make([]byte, 32)
		_, _ = rand.Read(a.key)
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
	if json.Unmarshal(data, &s) != nil || s.Nonce == "" || time.Now().Unix() > s.Expires {
		return session{}, false
	}
	return s, true
}

func (a *auth) write(w http.ResponseWriter, r *http.Request, s session) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: a.sign(s), Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode, Expires: time.Unix(s.Expires, 0),
	})
}

func newSession() session {
	return session{Nonce: rand.Text(), Expires: time.Now().Add(sessionTTL).Unix()}
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

func (a *auth) basicUser(r *http.Request) (string, bool) {
	name, pw, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := a.users[name]
	// Compare even for unknown names, so timing does not tell them apart.
	match := subtle.ConstantTimeCompare([]byte(pw), []byte(want)) == 1
	return name, known && match
}

func (a *auth) bearer(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(a.token)) == 1
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
			s = newSession()
			a.write(w, r, s)
		}
		v := viewer{Name: s.Name, CSRF: a.csrf(s)}
		switch {
		case len(a.users) > 0:
			name, ok := a.basicUser(r)
			if !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="troupe", charset="UTF-8"`)
				http.Error(w, "sign in with a dashboard user (TROUPE_DASHBOARD_USERS)", http.StatusUnauthorized)
				return
			}
			v.Name, v.NameFixed = name, true
		case a.token != "":
			if !s.Authed && !a.bearer(r) && !public {
				if r.Method == http.MethodGet && r.URL.Path != "/events" {
					http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				} else {
					http.Error(w, "sign in first", http.StatusUnauthorized)
				}
				return
			}
			v.CanSignOut = s.Authed
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
		tok := r.PostFormValue("token")
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) != 1 {
			s.log.Warn().Str("remote", r.RemoteAddr).Msg("dashboard sign-in with a wrong token")
			fail("that token is not the dashboard's token")
			return
		}
		if name == "" {
			fail("name: say who you are; it is recorded with each decision")
			return
		}
		sess = newSession() // a new nonce on every sign-in
		sess.Authed = true
	}
	sess.Name = name
	if sess.Nonce == "" {
		sess = newSession()
		sess.Name = name
	}
	s.auth.write(w, r, sess)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
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
