package wsauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	baCookie       = "better-auth.session_token"
	baSecret       = "test-better-auth-secret-0123456789abcdef"
	baOldSecret    = "old-better-auth-secret-0123456789abcdef"
	sessionJSONFmt = `{"session":{"id":"sess-%s","token":"TOKEN-NEVER-LOGGED","userId":"user-%s","expiresAt":%q},"user":{"id":"user-%s","name":"%s","email":"%s@example.com"}}`
)

// fakeBetterAuth speaks the get-session contract. The token part of the
// session cookie (or of the bearer token) selects the answer.
type fakeBetterAuth struct {
	srv     *httptest.Server
	calls   atomic.Int64
	latency atomic.Int64 // nanoseconds every answer waits, as across a network
	mu      sync.Mutex
	last    *http.Request
}

func newFakeBetterAuth(t testing.TB) *fakeBetterAuth {
	t.Helper()
	f := &fakeBetterAuth{}
	mux := http.NewServeMux()
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		t.Error("a redirect was followed")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		if d := f.latency.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		f.mu.Lock()
		f.last = r.Clone(context.Background())
		f.mu.Unlock()
		token := ""
		for _, name := range []string{baCookie, "__Secure-" + baCookie, "custom.session_token"} {
			if c, err := r.Cookie(name); err == nil {
				v, _ := url.PathUnescape(c.Value)
				token, _, _ = strings.Cut(v, ".")
			}
		}
		if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			token, _, _ = strings.Cut(b, ".")
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasPrefix(token, "good-"):
			user := strings.TrimPrefix(token, "good-")
			fmt.Fprintf(w, sessionJSONFmt, user, user, time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano), user, user, user)
		case token == "noname":
			fmt.Fprintf(w, sessionJSONFmt, "x", "x", time.Now().Add(time.Hour).Format(time.RFC3339), "x", "", "x")
		case token == "expired":
			fmt.Fprintf(w, sessionJSONFmt, "x", "x", time.Now().Add(-time.Minute).Format(time.RFC3339), "x", "x", "x")
		case token == "status401":
			w.WriteHeader(http.StatusUnauthorized)
		case token == "status403":
			w.WriteHeader(http.StatusForbidden)
		case token == "status404":
			w.WriteHeader(http.StatusNotFound)
		case token == "status500":
			w.WriteHeader(http.StatusInternalServerError)
		case token == "status503":
			w.Header().Set("Retry-After", "9")
			w.WriteHeader(http.StatusServiceUnavailable)
		case token == "status503-day":
			w.Header().Set("Retry-After", "86400")
			w.WriteHeader(http.StatusServiceUnavailable)
		case token == "status503-overflow":
			w.Header().Set("Retry-After", "99999999999")
			w.WriteHeader(http.StatusServiceUnavailable)
		case token == "redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case token == "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		case token == "oversized":
			fmt.Fprintf(w, `{"session":{"id":"s","userId":"u","expiresAt":"2999-01-01T00:00:00Z","pad":"%s"},"user":{"id":"u","name":"n"}}`, strings.Repeat("x", 100<<10))
		case token == "html":
			fmt.Fprint(w, "<html>Bad gateway</html>")
		case token == "empty-object":
			fmt.Fprint(w, "{}")
		case token == "no-expiry":
			fmt.Fprint(w, `{"session":{"id":"s","userId":"u"},"user":{"id":"u","name":"n"}}`)
		case token == "other-user":
			fmt.Fprint(w, `{"session":{"id":"s","userId":"u1","expiresAt":"2999-01-01T00:00:00Z"},"user":{"id":"u2","name":"n"}}`)
		case token == "bad-date":
			fmt.Fprint(w, `{"session":{"id":"s","userId":"u","expiresAt":"tomorrow"},"user":{"id":"u","name":"n"}}`)
		default:
			fmt.Fprint(w, "null")
		}
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBetterAuth) lastRequest() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func newBetterAuthFor(t testing.TB, f *fakeBetterAuth, opts BetterAuthOptions) SessionValidator {
	t.Helper()
	opts.BaseURL = f.srv.URL
	if opts.Timeout == 0 {
		opts.Timeout = 300 * time.Millisecond
	}
	v, err := NewBetterAuth(opts)
	require.NoError(t, err)
	return v
}

func signed(secret, token string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(token))
	return url.QueryEscape(token + "." + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
}

func requestWith(header http.Header) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/chat", nil)
	for k, vs := range header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	return r
}

func TestBetterAuthAnswers(t *testing.T) {
	type want struct {
		err   error  // nil: an identity
		name  string // when valid
		calls int64
		retry time.Duration
	}
	cases := []struct {
		group, name string
		header      http.Header
		want        want
	}{
		{"valid", "session cookie", hdr("Cookie", baCookie+"=good-alice.sig"), want{name: "alice", calls: 1}},
		{"valid", "__Secure- session cookie", hdr("Cookie", "__Secure-"+baCookie+"=good-bob.sig"), want{name: "bob", calls: 1}},
		{"valid", "among other cookies", hdr("Cookie", "theme=dark; "+baCookie+"=good-carol.sig; other=1"), want{name: "carol", calls: 1}},
		{"valid", "bearer token", hdr("Authorization", "Bearer good-dave.sig"), want{name: "dave", calls: 1}},
		{"valid", "user without a name: named by id", hdr("Cookie", baCookie+"=noname.sig"), want{name: "user-x", calls: 1}},

		{"no session", "no cookie at all", nil, want{err: ErrNoCredentials}},
		{"no session", "only unrelated cookies", hdr("Cookie", "theme=dark; better-auth.session_data=abc"), want{err: ErrNoCredentials}},
		{"no session", "empty session cookie", hdr("Cookie", baCookie+"="), want{err: ErrNoCredentials}},
		{"no session", "basic authorization is not a session", hdr("Authorization", "Basic dXNlcjpwYXNz"), want{err: ErrNoCredentials}},
		{"no session", "look-alike cookie name", hdr("Cookie", "x"+baCookie+"=good-eve.sig"), want{err: ErrNoCredentials}},

		{"forged or revoked", "200 null", hdr("Cookie", baCookie+"=forged.sig"), want{err: ErrInvalidCredentials, calls: 1}},
		{"forged or revoked", "401", hdr("Cookie", baCookie+"=status401.sig"), want{err: ErrInvalidCredentials, calls: 1}},
		{"forged or revoked", "403", hdr("Cookie", baCookie+"=status403.sig"), want{err: ErrInvalidCredentials, calls: 1}},
		{"forged or revoked", "expiresAt in the past", hdr("Cookie", baCookie+"=expired.sig"), want{err: ErrInvalidCredentials, calls: 1}},

		{"could not decide", "500", hdr("Cookie", baCookie+"=status500.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "503 with Retry-After", hdr("Cookie", baCookie+"=status503.sig"), want{err: ErrUnavailable, calls: 1, retry: 9 * time.Second}},
		{"could not decide", "503 with a Retry-After of a day: capped", hdr("Cookie", baCookie+"=status503-day.sig"), want{err: ErrUnavailable, calls: 1, retry: 5 * time.Minute}},
		{"could not decide", "503 with a Retry-After that overflows: capped", hdr("Cookie", baCookie+"=status503-overflow.sig"), want{err: ErrUnavailable, calls: 1, retry: 5 * time.Minute}},
		{"could not decide", "404: wrong path", hdr("Cookie", baCookie+"=status404.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "redirect is not followed", hdr("Cookie", baCookie+"=redirect.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "slow answer", hdr("Cookie", baCookie+"=slow.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "oversized body", hdr("Cookie", baCookie+"=oversized.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "HTML instead of JSON", hdr("Cookie", baCookie+"=html.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "empty object", hdr("Cookie", baCookie+"=empty-object.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "session without expiry", hdr("Cookie", baCookie+"=no-expiry.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "session of another user", hdr("Cookie", baCookie+"=other-user.sig"), want{err: ErrUnavailable, calls: 1}},
		{"could not decide", "unparsable date", hdr("Cookie", baCookie+"=bad-date.sig"), want{err: ErrUnavailable, calls: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.group+"/"+tc.name, func(t *testing.T) {
			f := newFakeBetterAuth(t)
			v := newBetterAuthFor(t, f, BetterAuthOptions{MaxBodyBytes: 8 << 10})
			start := time.Now()
			id, err := v.ValidateSession(context.Background(), requestWith(tc.header))
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.Equal(t, tc.want.calls, f.calls.Load(), "upstream calls")
			if tc.want.err == nil {
				require.NoError(t, err)
				assert.Equal(t, KindUser, id.Kind)
				assert.Equal(t, tc.want.name, id.Name)
				assert.NotEmpty(t, id.Subject)
				assert.Regexp(t, "^sess-", id.SessionID)
				assert.NotContains(t, id.SessionID, "TOKEN")
				assert.WithinDuration(t, time.Now().Add(time.Hour), id.Expires, 5*time.Minute)
				return
			}
			require.ErrorIs(t, err, tc.want.err)
			assert.Nil(t, id)
			assert.Regexp(t, "^wsauth: ", err.Error())
			assert.NotContains(t, err.Error(), ".sig", "the error quotes the credential")
			assert.NotContains(t, err.Error(), "TOKEN-NEVER-LOGGED")
			after, ok := RetryAfter(err)
			assert.Equal(t, tc.want.retry != 0, ok)
			assert.Equal(t, tc.want.retry, after)
		})
	}
}

func TestBetterAuthForwardsOnlyTheSession(t *testing.T) {
	f := newFakeBetterAuth(t)
	v := newBetterAuthFor(t, f, BetterAuthOptions{})
	r := requestWith(hdr(
		"Cookie", "theme=dark; "+baCookie+"=good-alice.sig; better-auth.session_data=cached",
		"Authorization", "Bearer good-alice.sig",
		PluginTokenHeader, testKey,
		"X-Forwarded-For", "203.0.113.7",
	))
	_, err := v.ValidateSession(context.Background(), r)
	require.NoError(t, err)
	up := f.lastRequest()
	require.NotNil(t, up)
	assert.Equal(t, DefaultBetterAuthPath, up.URL.Path)
	assert.Equal(t, "true", up.URL.Query().Get("disableRefresh"), "a check must not extend or rotate the session")
	assert.Equal(t, "true", up.URL.Query().Get("disableCookieCache"), "a cookie cache would hide a sign-out")
	assert.Equal(t, []string{baCookie + "=good-alice.sig"}, up.Header.Values("Cookie"))
	assert.Equal(t, "Bearer good-alice.sig", up.Header.Get("Authorization"))
	assert.Empty(t, up.Header.Values(PluginTokenHeader), "the plugin key must never reach the auth service")
	assert.Empty(t, up.Header.Values("X-Forwarded-For"))
	assert.Equal(t, hdr(
		"Cookie", "theme=dark; "+baCookie+"=good-alice.sig; better-auth.session_data=cached",
		"Authorization", "Bearer good-alice.sig",
		PluginTokenHeader, testKey,
		"X-Forwarded-For", "203.0.113.7",
	), r.Header, "the request must not be modified")
}

func TestBetterAuthCustomPrefixAndPath(t *testing.T) {
	f := newFakeBetterAuth(t)
	v, err := NewBetterAuth(BetterAuthOptions{BaseURL: f.srv.URL + "/auth/", Path: "/custom/get-session", CookiePrefix: "custom"})
	require.NoError(t, err)
	id, err := v.ValidateSession(context.Background(), requestWith(hdr("Cookie", "custom.session_token=good-zoe.sig")))
	require.NoError(t, err)
	assert.Equal(t, "zoe", id.Name)
	assert.Equal(t, "/auth/custom/get-session", f.lastRequest().URL.Path)

	// The default name is not the custom one.
	_, err = v.ValidateSession(context.Background(), requestWith(hdr("Cookie", baCookie+"=good-zoe.sig")))
	assert.ErrorIs(t, err, ErrNoCredentials)
}

func TestBetterAuthConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	v, err := NewBetterAuth(BetterAuthOptions{BaseURL: "http://" + addr})
	require.NoError(t, err)
	_, err = v.ValidateSession(context.Background(), requestWith(hdr("Cookie", baCookie+"=good-alice.sig")))
	require.ErrorIs(t, err, ErrUnavailable)
	assert.NotContains(t, err.Error(), "good-alice")
}

func TestBetterAuthPreCheck(t *testing.T) {
	cases := []struct {
		group, name string
		cookie      string
		wantErr     error
		wantCalls   int64
	}{
		{"signed", "current secret", signed(baSecret, "good-alice"), nil, 1},
		{"signed", "old secret during a rotation", signed(baOldSecret, "good-alice"), nil, 1},
		{"signed", "not URL-encoded", strings.ReplaceAll(mustUnescape(signed(baSecret, "good-alice")), "%", ""), nil, 1},
		{"signed", "signed, but revoked upstream", signed(baSecret, "revoked"), ErrInvalidCredentials, 1},

		{"forged", "signed with another secret", signed("some-other-secret-0123456789abcdefgh", "good-alice"), ErrInvalidCredentials, 0},
		{"forged", "token changed after signing", strings.Replace(signed(baSecret, "good-alice"), "alice", "mallo", 1), ErrInvalidCredentials, 0},
		{"forged", "no signature", "good-alice", ErrInvalidCredentials, 0},
		{"forged", "empty signature", "good-alice.", ErrInvalidCredentials, 0},
		{"forged", "signature not base64", "good-alice." + strings.Repeat("!", 44), ErrInvalidCredentials, 0},
		{"forged", "short signature", "good-alice.c2ln", ErrInvalidCredentials, 0},
		{"forged", "bad URL encoding", "good-alice.%zz", ErrInvalidCredentials, 0},
	}
	for _, tc := range cases {
		t.Run(tc.group+"/"+tc.name, func(t *testing.T) {
			f := newFakeBetterAuth(t)
			v := newBetterAuthFor(t, f, BetterAuthOptions{Secrets: []string{baSecret, baOldSecret}})
			id, err := v.ValidateSession(context.Background(), requestWith(hdr("Cookie", baCookie+"="+tc.cookie)))
			assert.Equal(t, tc.wantCalls, f.calls.Load(), "upstream calls")
			if tc.wantErr == nil {
				require.NoError(t, err)
				assert.Equal(t, "alice", id.Name)
				return
			}
			require.ErrorIs(t, err, tc.wantErr)
			assert.NotContains(t, err.Error(), "alice")
		})
	}

	t.Run("a forged cookie beside a genuine one is dropped, not final", func(t *testing.T) {
		// A sibling subdomain can plant a cookie under the plain name
		// next to the genuine __Secure- one.
		for name, cookies := range map[string]string{
			"forged plain, genuine __Secure-": baCookie + "=good-mallory.forged; __Secure-" + baCookie + "=" + signed(baSecret, "good-alice"),
			"genuine plain, forged __Secure-": baCookie + "=" + signed(baSecret, "good-alice") + "; __Secure-" + baCookie + "=good-mallory.forged",
			"forged and genuine, same name":   baCookie + "=good-mallory.forged; " + baCookie + "=" + signed(baSecret, "good-alice"),
		} {
			t.Run(name, func(t *testing.T) {
				f := newFakeBetterAuth(t)
				v := newBetterAuthFor(t, f, BetterAuthOptions{Secrets: []string{baSecret}})
				id, err := v.ValidateSession(context.Background(), requestWith(hdr("Cookie", cookies)))
				require.NoError(t, err)
				assert.Equal(t, "alice", id.Name)
				up := f.lastRequest()
				require.NotNil(t, up)
				assert.NotContains(t, up.Header.Get("Cookie"), "mallory", "a forged cookie was forwarded")
			})
		}
	})

	t.Run("forged cookies and a bearer token: the bearer token is checked", func(t *testing.T) {
		f := newFakeBetterAuth(t)
		v := newBetterAuthFor(t, f, BetterAuthOptions{Secrets: []string{baSecret}})
		id, err := v.ValidateSession(context.Background(), requestWith(hdr("Cookie", baCookie+"=good-mallory.forged", "Authorization", "Bearer good-alice")))
		require.NoError(t, err)
		assert.Equal(t, "alice", id.Name)
		assert.Empty(t, f.lastRequest().Header.Get("Cookie"))
	})

	t.Run("only forged cookies: refused without a call", func(t *testing.T) {
		f := newFakeBetterAuth(t)
		v := newBetterAuthFor(t, f, BetterAuthOptions{Secrets: []string{baSecret}})
		_, err := v.ValidateSession(context.Background(), requestWith(hdr("Cookie", baCookie+"=good-mallory.forged; __Secure-"+baCookie+"=good-eve.forged")))
		require.ErrorIs(t, err, ErrInvalidCredentials)
		assert.Zero(t, f.calls.Load())
	})

	t.Run("bearer tokens are left to the auth service", func(t *testing.T) {
		f := newFakeBetterAuth(t)
		v := newBetterAuthFor(t, f, BetterAuthOptions{Secrets: []string{baSecret}})
		id, err := v.ValidateSession(context.Background(), requestWith(hdr("Authorization", "Bearer good-alice")))
		require.NoError(t, err)
		assert.Equal(t, "alice", id.Name)
	})
}

func mustUnescape(s string) string {
	v, err := url.QueryUnescape(s)
	if err != nil {
		panic(err)
	}
	return v
}

func TestNewBetterAuthRefusesBadOptions(t *testing.T) {
	for name, opts := range map[string]BetterAuthOptions{
		"no base URL":             {},
		"not a URL":               {BaseURL: "://nope"},
		"relative URL":            {BaseURL: "/api/auth"},
		"other scheme":            {BaseURL: "ftp://auth.example.com"},
		"credentials in URL":      {BaseURL: "https://user:hunter2secret@auth.example.com"},
		"query in URL":            {BaseURL: "https://auth.example.com/?x=1"},
		"path without slash":      {BaseURL: "https://auth.example.com", Path: "api/auth/get-session"},
		"path with query":         {BaseURL: "https://auth.example.com", Path: "/get-session?x=1"},
		"cookie prefix with =":    {BaseURL: "https://auth.example.com", CookiePrefix: "a=b"},
		"cookie prefix with (":    {BaseURL: "https://auth.example.com", CookiePrefix: "a(b"},
		"cookie prefix not ASCII": {BaseURL: "https://auth.example.com", CookiePrefix: "café"},
		"empty secret":            {BaseURL: "https://auth.example.com", Secrets: []string{baSecret, ""}},
		"negative timeout":        {BaseURL: "https://auth.example.com", Timeout: -time.Second},
		"negative body limit":     {BaseURL: "https://auth.example.com", MaxBodyBytes: -1},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := NewBetterAuth(opts)
			require.Error(t, err)
			assert.Nil(t, v)
			assert.Regexp(t, "^wsauth: ", err.Error())
			assert.NotContains(t, err.Error(), "hunter2secret")
		})
	}
}

func TestBetterAuthThroughTheMiddleware(t *testing.T) {
	f := newFakeBetterAuth(t)
	h := newHarness(t, Options{Sessions: newBetterAuthFor(t, f, BetterAuthOptions{}), ValidatorTimeout: 5 * time.Second})
	got, _ := h.dial(t, "", hdr("Cookie", baCookie+"=good-alice.sig"))
	require.NotNil(t, got)
	assert.Equal(t, seen{Kind: KindUser, Subject: "user-alice", Name: "alice", SessionID: "sess-alice"}, *got)

	for cookie, status := range map[string]int{"forged.sig": 401, "status500.sig": 503} {
		_, resp := h.dial(t, "", hdr("Cookie", baCookie+"="+cookie))
		require.NotNil(t, resp)
		assert.Equal(t, status, resp.StatusCode, cookie)
	}
}

// TestBetterAuthIgnoresTheClientsCookieJar: a cookie that the auth service
// sets while it checks one user's session is never sent with the check of
// another's, even if the given client has a cookie jar.
func TestBetterAuthIgnoresTheClientsCookieJar(t *testing.T) {
	var mu sync.Mutex
	var seenCookies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seenCookies = append(seenCookies, r.Header.Get("Cookie"))
		mu.Unlock()
		// Better Auth refreshes a session by setting its cookie again.
		http.SetCookie(w, &http.Cookie{Name: baCookie, Value: "alice-refreshed.sig", Path: "/"})
		fmt.Fprintf(w, sessionJSONFmt, "a", "a", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "a", "a", "a")
	}))
	defer srv.Close()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	v, err := NewBetterAuth(BetterAuthOptions{BaseURL: srv.URL, Client: client})
	require.NoError(t, err)

	_, err = v.ValidateSession(context.Background(), requestWith(hdr("Cookie", baCookie+"=good-alice.sig")))
	require.NoError(t, err)
	_, err = v.ValidateSession(context.Background(), requestWith(hdr("Authorization", "Bearer good-bob.sig")))
	require.NoError(t, err)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seenCookies, 2)
	assert.Empty(t, seenCookies[1], "bob's check carried a cookie set during alice's")
	assert.Same(t, jar, client.Jar, "the caller's client is not modified")
}
