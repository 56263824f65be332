package dashboard

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/telemetry"
)

// stopClock makes the dashboard's clock stand still (so no failure is
// forgiven while a test runs) and returns a function that moves it on.
func stopClock(f *fixture) (advance func(time.Duration)) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	f.dash.auth.now = func() time.Time { return time.Unix(0, now.Load()) }
	return func(d time.Duration) { now.Add(int64(d)) }
}

// syncBuffer is a log a test reads while the server writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func captureLog(f *fixture) *syncBuffer {
	var buf syncBuffer
	f.dash.auth.log = zerolog.New(&buf)
	return &buf
}

func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return w.Body.String()
}

// TestSessionKeyMinimum: a session key a cookie could give away is refused
// at start, naming what is wrong.
func TestSessionKeyMinimum(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"k3y", "short-but-not-32-bytes", strings.Repeat("a", 40), strings.Repeat("ab", 20)} {
		_, err := New(Config{SessionKey: []byte(key)}, nil, nil, nil)
		require.ErrorContains(t, err, "session key", key)
		require.ErrorContains(t, err, "at least 32 bytes", key)
	}
	require.NoError(t, CheckSessionKey([]byte("9a3f0c1e77d24b58a6e1f0c3b2d49e87")))
}

// TestWeakCredentialsRefusedOffLoopback: beyond loopback a short or
// repetitive password or token is refused, naming the variable and the
// user; on loopback any will do.
func TestWeakCredentialsRefusedOffLoopback(t *testing.T) {
	t.Parallel()
	for _, pw := range []string{"x", "s3cr3t", "aaaaaaaaaaaaaaaa", "abcabcabcabcabc"} {
		err := CheckExposure("0.0.0.0:8080", "", map[string]string{"ada": pw, "bob": "Tr0ub4dor&3x!"})
		require.ErrorContains(t, err, "TROUPE_DASHBOARD_USERS: the password of ada", pw)
		require.ErrorContains(t, err, "at least 12 characters", pw)
		require.NotContains(t, err.Error(), pw, "the password is not in the error")
		require.NoError(t, CheckExposure("127.0.0.1:8080", "", map[string]string{"ada": pw}), pw)
	}
	err := CheckExposure(":8080", "0000000000000000000", nil)
	require.ErrorContains(t, err, "TROUPE_DASHBOARD_TOKEN")
	require.ErrorContains(t, err, "8 of them different")
	require.NoError(t, CheckExposure(":8080", "9f2c81d4e07ab3c6", nil))
}

// TestFailedSignInsLimited: wrong tokens are logged (without what was
// tried) and counted; past the burst, sign-ins from that client are
// refused with 429 and Retry-After, right token or not, until time
// forgives one; another client is not held up.
func TestFailedSignInsLimited(t *testing.T) {
	t.Parallel()
	const token = "0f4c8e2a9b7d1e36"
	metrics := telemetry.NewMetrics()
	f := setup(t, Config{Token: token, Metrics: metrics, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, services{})
	advance := stopClock(f)
	logs := captureLog(f)

	b := f.browser(t)
	signIn := func(b *browser, tok string, header http.Header) reply {
		csrf := csrfToken(t, b.do(http.MethodGet, "/login", nil, header).body)
		return b.do(http.MethodPost, "/login", url.Values{"csrf": {csrf}, "name": {"Ada"}, "token": {tok}, "next": {"/"}}, header)
	}
	for i := range failureBurst {
		r := signIn(b, "wrong-guess-"+string(rune('a'+i)), nil)
		require.Equal(t, http.StatusUnauthorized, r.status, "attempt %d", i+1)
	}
	r := signIn(b, "wrong-guess-z", nil)
	require.Equal(t, http.StatusTooManyRequests, r.status)
	require.Equal(t, "6", r.header.Get("Retry-After"))
	r = signIn(b, token, nil)
	require.Equal(t, http.StatusTooManyRequests, r.status, "no guess is checked, right or wrong")

	// Bearer guesses are the same failures.
	script := f.browser(t)
	script.header.Set("Authorization", "Bearer "+token)
	require.Equal(t, http.StatusTooManyRequests, script.get("/").status)

	// Another client, behind the trusted proxy, signs in.
	other := f.browser(t)
	r = signIn(other, token, http.Header{"X-Forwarded-For": {"203.0.113.7"}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)

	// Time forgives one failure.
	advance(failureEvery)
	r = signIn(b, token, nil)
	require.Equal(t, http.StatusSeeOther, r.status, r.body)

	out := logs.String()
	require.Equal(t, failureBurst, strings.Count(out, `"message":"dashboard sign-in failed"`), out)
	require.Contains(t, out, `"reason":"wrong_token"`)
	require.Contains(t, out, `"client":"127.0.0.1"`)
	require.Contains(t, out, "too many failures")
	require.NotContains(t, out, "wrong-guess", "the secret tried is never logged")
	m := scrape(t, metrics)
	require.Contains(t, m, `troupe_dashboard_sign_in_failures_total{reason="wrong_token"} 10`)
	require.Contains(t, m, `troupe_dashboard_sign_in_failures_total{reason="rate_limited"} 3`)
}

// TestFailedPasswordsLimitedPerUser: guesses at one user's password from
// many addresses lock that user, not the others.
func TestFailedPasswordsLimitedPerUser(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{Users: map[string]string{"ada": "Tr0ub4dor&3x!", "bob": "c0rrect-h0rse-b4ttery"},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, services{})
	stopClock(f)
	logs := captureLog(f)
	as := func(user, pw, from string) int {
		b := f.browser(t)
		b.header.Set("Authorization", "Basic "+basic(user, pw))
		b.header.Set("X-Forwarded-For", from)
		return b.get("/").status
	}
	for i := range failureBurst {
		require.Equal(t, http.StatusUnauthorized, as("ada", "guess", "198.51.100."+string(rune('1'+i%9))+"0"), "attempt %d", i+1)
	}
	require.Equal(t, http.StatusTooManyRequests, as("ada", "Tr0ub4dor&3x!", "203.0.113.50"), "ada is locked from everywhere")
	require.Equal(t, http.StatusOK, as("bob", "c0rrect-h0rse-b4ttery", "203.0.113.50"), "bob is not")
	require.Contains(t, logs.String(), `"user":"ada"`)

	// A name nobody has is not logged: it may be a password typed in the
	// wrong field.
	require.Equal(t, http.StatusUnauthorized, as("hunter2-secret", "x", "203.0.113.51"))
	require.NotContains(t, logs.String(), "hunter2-secret")
	require.Contains(t, logs.String(), `"user_known":false`)
}

// signIn signs b in with the token and returns its session cookie.
func signIn(t *testing.T, f *fixture, b *browser, token string) *http.Cookie {
	t.Helper()
	csrf := csrfToken(t, b.page("/login").body)
	r := b.post("/login", url.Values{"csrf": {csrf}, "name": {"Ada"}, "token": {token}, "next": {"/"}})
	require.Equal(t, http.StatusSeeOther, r.status, r.body)
	u, err := url.Parse(f.url)
	require.NoError(t, err)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == sessionCookie {
			return c
		}
	}
	t.Fatal("no session cookie")
	return nil
}

// withCookie GETs path on base with only the cookie c.
func withCookie(t *testing.T, base, path string, c *http.Cookie) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	require.NoError(t, err)
	req.AddCookie(c)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestSignOutRevokesTheSession: a copy of a signed-out session's cookie
// is refused; another session of the same person is not signed out.
func TestSignOutRevokesTheSession(t *testing.T) {
	t.Parallel()
	const token = "0f4c8e2a9b7d1e36"
	f := setup(t, Config{Token: token}, services{})
	b, other := f.browser(t), f.browser(t)
	stolen := signIn(t, f, b, token)
	kept := signIn(t, f, other, token)
	require.Equal(t, http.StatusOK, withCookie(t, f.url, "/", stolen))

	p := b.page("/")
	r := b.post("/logout", url.Values{"csrf": {csrfToken(t, p.body)}})
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, http.StatusSeeOther, withCookie(t, f.url, "/", stolen), "the signed-out cookie, replayed, is sent to sign in")
	require.Equal(t, http.StatusOK, withCookie(t, f.url, "/", kept))
}

// TestTokenChangeEndsSessions: replicas sharing the session key accept
// each other's sessions, but not once the token changed: every session
// signed in with the old token is over.
func TestTokenChangeEndsSessions(t *testing.T) {
	t.Parallel()
	key := []byte("7c1d9e0b4a6f23c85e7d1b0a9f4c2e68")
	f := setup(t, Config{Token: "0f4c8e2a9b7d1e36", SessionKey: key}, services{})
	c := signIn(t, f, f.browser(t), "0f4c8e2a9b7d1e36")

	serve := func(token string) string {
		d, err := New(Config{Token: token, SessionKey: key}, f.store, f.nc, f.js)
		require.NoError(t, err)
		hs := httptest.NewServer(d.Handler())
		t.Cleanup(hs.Close)
		t.Cleanup(func() { _ = d.Close(t.Context()) })
		return hs.URL
	}
	require.Equal(t, http.StatusOK, withCookie(t, serve("0f4c8e2a9b7d1e36"), "/", c), "a replica with the same token")
	require.Equal(t, http.StatusSeeOther, withCookie(t, serve("3b8e6a0d2f9c4e17"), "/", c), "the token changed")
}

// TestSecureCookieBehindTLSProxy: the session cookie is Secure when the
// browser came over TLS to a trusted proxy (X-Forwarded-Proto: https);
// the header from anyone else is ignored.
func TestSecureCookieBehindTLSProxy(t *testing.T) {
	t.Parallel()
	secure := func(proxies []netip.Prefix, proto string) bool {
		a := newAuth(Config{Token: "0f4c8e2a9b7d1e36", TrustedProxies: proxies})
		r := httptest.NewRequest(http.MethodGet, "/login", nil)
		r.RemoteAddr = "10.0.0.2:41000"
		if proto != "" {
			r.Header.Set("X-Forwarded-Proto", proto)
		}
		w := httptest.NewRecorder()
		a.middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, r)
		cookies := w.Result().Cookies()
		require.Len(t, cookies, 1)
		return cookies[0].Secure
	}
	proxy := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	require.True(t, secure(proxy, "https"))
	require.True(t, secure(proxy, "http, https"), "the nearest proxy's word counts")
	require.False(t, secure(proxy, "http"))
	require.False(t, secure(nil, "https"), "an untrusted peer's header is ignored")
	require.False(t, secure([]netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}, "https"))

	tls := httptest.NewRequest(http.MethodGet, "https://troupe.example/login", nil)
	w := httptest.NewRecorder()
	newAuth(Config{Token: "0f4c8e2a9b7d1e36"}).middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(w, tls)
	require.True(t, w.Result().Cookies()[0].Secure, "TLS to us")
}

// TestFlashOnlyFromServer: ?flash= in a link puts nothing in the banner;
// a flash the server signed shows, for its session only.
func TestFlashOnlyFromServer(t *testing.T) {
	t.Parallel()
	f := setup(t, Config{}, services{})
	b := f.browser(t)
	forged := "/?flash=" + url.QueryEscape("Your session expired: sign in at evil.example")
	require.Empty(t, flash(t, b.page(forged).body))
	require.Empty(t, flash(t, b.page(forged+"&fs=AAAA").body))

	// Another session's signed flash (say, the attacker's own) does not
	// show either.
	mallory := f.browser(t)
	p := mallory.page("/deadletters")
	r := mallory.post("/deadletters", url.Values{"csrf": {csrfToken(t, p.body)}, "action": {"replay"}})
	require.Equal(t, http.StatusSeeOther, r.status)
	require.Equal(t, "choose at least one dead letter", flash(t, mallory.page(r.location()).body))
	require.Empty(t, flash(t, b.page(r.location()).body))
}

// TestSignOutReachesEveryReplica: replicas sharing the session key learn
// each other's sign-outs, and one that starts later asks for them.
func TestSignOutReachesEveryReplica(t *testing.T) {
	t.Parallel()
	const token = "0f4c8e2a9b7d1e36"
	cfg := Config{Token: token, SessionKey: []byte("7c1d9e0b4a6f23c85e7d1b0a9f4c2e68")}
	f := setup(t, cfg, services{})
	replica := func() string {
		d, err := New(cfg, f.store, f.nc, f.js)
		require.NoError(t, err)
		hs := httptest.NewServer(d.Handler())
		t.Cleanup(hs.Close)
		t.Cleanup(func() { _ = d.Close(t.Context()) })
		return hs.URL
	}
	other := replica()
	b := f.browser(t)
	c := signIn(t, f, b, token)
	require.Equal(t, http.StatusOK, withCookie(t, other, "/", c))

	p := b.page("/")
	require.Equal(t, http.StatusSeeOther, b.post("/logout", url.Values{"csrf": {csrfToken(t, p.body)}}).status)
	require.Eventually(t, func() bool { return withCookie(t, other, "/", c) == http.StatusSeeOther },
		10*time.Second, 10*time.Millisecond, "the other replica hears of the sign-out")
	require.Equal(t, http.StatusSeeOther, withCookie(t, replica(), "/", c), "a replica started since asks for it")
}
