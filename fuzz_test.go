package wsauth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mosaicstack/wsauth/internal/betterauthtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The fuzz targets run their seed corpus with every `go test`; `.ci/run`
// also runs each with -fuzz for a fixed time.

const (
	fuzzCookie       = "fuzz_session"
	fuzzSessionToken = "fuzz-session-token-Q7xv9Lk2"
	fuzzHost         = "gw.example"
)

// fuzzSessions accepts exactly one session: the cookie fuzzCookie with the
// value fuzzSessionToken.
var fuzzSessions = SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
	c, err := r.Cookie(fuzzCookie)
	switch {
	case err != nil:
		return nil, ErrNoCredentials
	case c.Value == fuzzSessionToken:
		return &Identity{Subject: "u1", Name: "fuzz", SessionID: "s1"}, nil
	default:
		return nil, ErrInvalidCredentials
	}
})

// FuzzAuthenticate feeds arbitrary plugin tokens, cookies, origins, remote
// addresses, forwarding headers and one arbitrary extra header to the
// middleware, with every method on (keys, sessions, trusted loopback and a
// trusted proxy). It must never panic, never accept a request that does
// not carry a valid key, a valid session from an allowed origin, or pass
// the loopback rule, and never log a credential.
func FuzzAuthenticate(f *testing.F) {
	goodCookie := fuzzCookie + "=" + fuzzSessionToken
	for _, s := range []struct {
		tokens                                   uint8
		token, cookie, origin, remote, xff, h, v string
	}{
		{1, testKey, "", "", "192.0.2.1:1", "", "", ""},
		{1, testKeyDiscord, "", "https://evil.example", "192.0.2.1:1", "", "", ""},
		{1, testKey[:len(testKey)-1] + "x", goodCookie, "", "192.0.2.1:1", "", "", ""},
		{1, " " + testKey, "", "", "192.0.2.1:1", "", "", ""},
		{2, testKey, "", "", "192.0.2.1:1", "", "", ""},
		{1, "", goodCookie, "", "192.0.2.1:1", "", "", ""},
		{0, "", goodCookie, "", "192.0.2.1:1", "", "", ""},
		{0, "", goodCookie, "https://" + fuzzHost, "192.0.2.1:1", "", "", ""},
		{0, "", goodCookie, "https://evil.example", "192.0.2.1:1", "", "", ""},
		{0, "", goodCookie, "null", "192.0.2.1:1", "", "", ""},
		{0, "", goodCookie + "; " + fuzzCookie + "=x", "", "192.0.2.1:1", "", "", ""},
		{0, "", fuzzCookie + "=" + url.QueryEscape(fuzzSessionToken+" "), "", "192.0.2.1:1", "", "", ""},
		{0, "", "", "", "127.0.0.1:1", "", "", ""},
		{0, "", "", "", "[::1]:1", "", "", ""},
		{0, "", "", "", "[::ffff:127.0.0.1]:1", "", "", ""},
		{0, "", "", "", "127.0.0.1:1", "203.0.113.9", "", ""},
		{0, "", "", "", "127.0.0.1:1", "", "x-real-ip", "203.0.113.9"},
		{0, "", "", "", "127.0.0.1:1", "", "Forwarded", "for=203.0.113.9"},
		{0, "", "", "", "127.0.0.1:1", "", "Authorization", "Bearer x"},
		{0, "", "", "", "127.0.0.1:1", "", "Sec-Fetch-Site", "cross-site"},
		{0, "", "", "", "10.0.0.1:1", "127.0.0.1", "", ""},
		{0, "", "", "", "10.0.0.1:1", "203.0.113.9, 10.0.0.2", "X-Plugin-Token", testKey},
		{0, "", "", "", "192.0.2.1:1", "", "x-plugin-token", testKey},
		{0, "", "", "", "192.0.2.1:1", "", "Cookie", goodCookie},
		{1, testKey, "", "", "@", "", "Origin", "https://" + fuzzHost},
	} {
		f.Add(s.tokens, s.token, s.cookie, s.origin, s.remote, s.xff, s.h, s.v)
	}
	f.Fuzz(func(t *testing.T, tokens uint8, token, cookie, origin, remote, xff, name, value string) {
		var logBuf bytes.Buffer
		m, err := New(Options{
			PluginKeys:            mustKeys(t),
			Sessions:              fuzzSessions,
			InsecureTrustLoopback: true,
			TrustedProxies:        []string{"10.0.0.0/8"},
			Logger:                slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		require.NoError(t, err)
		r := &http.Request{
			Method: http.MethodGet, URL: &url.URL{Path: "/chat"}, Host: fuzzHost,
			Header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, RemoteAddr: remote,
		}
		for range tokens % 3 {
			r.Header[PluginTokenHeader] = append(r.Header[PluginTokenHeader], token)
		}
		for k, v := range map[string]string{"Cookie": cookie, "Origin": origin, "X-Forwarded-For": xff} {
			if v != "" {
				r.Header[k] = []string{v}
			}
		}
		if name != "" {
			r.Header[name] = append(r.Header[name], value)
		}

		id, err := m.Authenticate(r)
		if err != nil {
			require.Nil(t, id)
			assert.Contains(t, []int{400, 401, 403, 429, 503}, StatusCode(err), "%v", err)
			assert.True(t, strings.HasPrefix(err.Error(), "wsauth: "), err.Error())
		} else {
			require.NotNil(t, id)
			checkFuzzAccepted(t, r, id)
		}

		// Credentials never reach the log, unless the input also put
		// them where the log may quote (origin, remote address, path).
		logged := logBuf.String()
		quoted := origin + "\x00" + remote + "\x00" + xff + "\x00" + name + "\x00" + value
		for _, secret := range []string{testKey, testKeyDiscord, fuzzSessionToken} {
			if strings.Contains(token+cookie, secret) && !strings.Contains(quoted, secret) {
				assert.NotContains(t, logged, secret)
			}
		}
	})
}

// checkFuzzAccepted fails unless r deserved the identity it was given.
func checkFuzzAccepted(t *testing.T, r *http.Request, id *Identity) {
	tokens := r.Header[PluginTokenHeader]
	switch id.Kind {
	case KindPlugin:
		if len(tokens) == 0 {
			assert.Equal(t, LoopbackPluginName, id.Subject)
			// net/http sets "ip:port"; the library also reads a bare IP.
			addr, err := netip.ParseAddr(r.RemoteAddr)
			if ap, perr := netip.ParseAddrPort(r.RemoteAddr); perr == nil {
				addr, err = ap.Addr(), nil
			}
			require.NoError(t, err, "loopback identity for remote address %q", r.RemoteAddr)
			assert.True(t, addr.Unmap().IsLoopback(), r.RemoteAddr)
			assert.True(t, isWebSocketHandshake(r), "loopback identity for a request that is no handshake")
			for k := range r.Header {
				for _, banned := range []string{"origin", "cookie", "authorization", "forwarded", "via", "x-real-ip", "x-forwarded-for"} {
					assert.NotEqual(t, banned, strings.ToLower(k), "loopback identity despite %s", k)
				}
				assert.False(t, strings.HasPrefix(strings.ToLower(k), "sec-fetch-"), "loopback identity despite %s", k)
			}
			return
		}
		require.Len(t, tokens, 1)
		want := map[string]string{testKey: "telegram", testKeyDiscord: "discord"}[tokens[0]]
		require.NotEmpty(t, want, "plugin identity for a token that is no key")
		assert.Equal(t, want, id.Subject)
	case KindUser:
		assert.Empty(t, tokens, "user identity despite a plugin token")
		c, err := r.Cookie(fuzzCookie)
		require.NoError(t, err)
		assert.Equal(t, fuzzSessionToken, c.Value)
		if origins := r.Header["Origin"]; len(origins) > 0 {
			require.Len(t, origins, 1)
			assert.Contains(t, []string{"http://" + fuzzHost, "https://" + fuzzHost}, strings.ToLower(origins[0]),
				"user identity for a foreign origin")
		}
	default:
		t.Fatalf("identity of unknown kind %q", id.Kind)
	}
}

// FuzzPluginKeysFromEnv feeds arbitrary values to PLUGIN_API_KEY,
// PLUGIN_API_KEYS and a key file. It must never panic; an error must never
// quote a key; and every key the parser accepted must match under the name
// it was given.
func FuzzPluginKeysFromEnv(f *testing.F) {
	for _, s := range [][3]string{
		{testKey, "", ""},
		{"  " + testKey + "\n", "", ""},
		{"", "telegram=" + testKey + ",discord=" + testKeyDiscord, ""},
		{"", "telegram=" + testKey + ",telegram#next=" + testKeyDiscord, ""},
		{"", " telegram = " + testKey + " , ", ""},
		{"", "telegram" + testKey, ""},
		{"", "=" + testKey, ""},
		{"", "telegram=short", ""},
		{"", "", testKey + "\n"},
		{"", "", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\n"},
		{"", "", "# comment\ntelegram=" + testKey + "\n\ndiscord=" + testKeyDiscord + "\n"},
		{"", "", "telegram=" + testKey + "\n" + testKeyDiscord},
		{testKey, "discord=" + testKey, ""},
		{testKey, "tele gram=" + testKeyDiscord, "plugin=" + testKey + "\x00"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, single, list, file string) {
		if strings.ContainsRune(single+list, 0) {
			t.Skip("an environment variable cannot hold NUL")
		}
		path := ""
		if file != "" {
			path = filepath.Join(dir, "keys")
			require.NoError(t, os.WriteFile(path, []byte(file), 0o600))
		}
		t.Setenv(EnvPluginKey, single)
		t.Setenv(EnvPluginKeys, list)
		t.Setenv(EnvPluginKeyFile, path)

		keys, err := PluginKeysFromEnv()
		if err != nil {
			require.Nil(t, keys)
			msg := err.Error()
			assert.True(t, strings.HasPrefix(msg, "wsauth: "), msg)
			for _, secret := range candidateKeys(single, list, file) {
				if !strings.Contains(path, secret) && !strings.Contains(nameParts(list, file), secret) {
					assert.NotContains(t, msg, secret, "an error quotes a key")
				}
			}
			return
		}
		names := keys.Names()
		assert.Equal(t, keys.Len(), len(names))
		seen := map[string]bool{}
		for _, n := range names {
			_, err := checkKeyName(n)
			assert.NoError(t, err, n)
			assert.False(t, seen[n], "name %q twice", n)
			seen[n] = true
		}
		ks := keys.set.Load()
		if k := strings.TrimSpace(single); k != "" {
			i := ks.match(k)
			require.GreaterOrEqual(t, i, 0, "PLUGIN_API_KEY does not match")
			assert.Equal(t, DefaultPluginName, names[i])
		}
		for _, entry := range strings.Split(list, ",") {
			name, key, ok := strings.Cut(entry, "=")
			if !ok {
				continue
			}
			i := ks.match(strings.TrimSpace(key))
			require.GreaterOrEqual(t, i, 0, "a key of PLUGIN_API_KEYS does not match")
			assert.Equal(t, strings.TrimSpace(name), names[i])
		}
	})
}

// candidateKeys returns every part of the input that could be a key and
// is long enough that finding it in an error is no accident.
func candidateKeys(single, list, file string) []string {
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); len(s) >= 8 {
			out = append(out, s)
		}
	}
	add(single)
	for _, part := range append(strings.Split(list, ","), strings.Split(file, "\n")...) {
		if _, key, ok := strings.Cut(part, "="); ok {
			add(key)
		} else {
			add(part)
		}
	}
	return out
}

// nameParts returns the parts of the input before an '=', which errors
// may quote as names.
func nameParts(list, file string) string {
	var b strings.Builder
	for _, part := range append(strings.Split(list, ","), strings.Split(file, "\n")...) {
		if name, _, ok := strings.Cut(part, "="); ok {
			b.WriteString(name + "\x00")
		}
	}
	return b.String()
}

// FuzzClientAddr feeds arbitrary remote addresses and X-Forwarded-For
// headers to the client address logic. It must never panic; a peer that is
// not a trusted proxy is always counted under its own address; and the
// address found is always the peer's or one named in the header.
func FuzzClientAddr(f *testing.F) {
	for _, s := range [][2]string{
		{"203.0.113.5:4000", "198.51.100.1"},
		{"10.1.2.3:4000", "198.51.100.1"},
		{"10.1.2.3:4000", "1.1.1.1, 198.51.100.1, 10.9.9.9"},
		{"10.1.2.3:4000", "[2001:db8::1]:5555, ::ffff:10.0.0.1"},
		{"[2001:db8:ffff::1]:4000", "fe80::1%eth0"},
		{"10.1.2.3:4000", ",,, ,"},
		{"@", "198.51.100.1"},
		{"[::1]:1", "10.0.0.1"},
	} {
		f.Add(s[0], s[1])
	}
	m, err := New(Options{PluginKeys: mustKeys(f), TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}})
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{Header: http.Header{"X-Forwarded-For": strings.Split(xff, "\n")}, RemoteAddr: remote}
		got := m.clientAddr(r)
		peer := remoteAddr(r)
		if !peer.IsValid() || !m.trustedProxy(peer) {
			assert.Equal(t, peer, got, "X-Forwarded-For from an untrusted peer was believed")
			return
		}
		if got == peer {
			return
		}
		named := false
		for _, hop := range strings.FieldsFunc(xff, func(r rune) bool { return r == ',' || r == '\n' }) {
			if a, ok := parseHop(hop); ok && a == got {
				named = true
			}
		}
		assert.True(t, named, "client address %v is neither the peer nor in the header", got)
		assert.NotEmpty(t, m.throttle.key(got, remote))
	})
}

// fuzzUpstream is a stand-in Better Auth server that takes every session it
// is asked about for a valid one, the worst case for a pre-check that lets
// a cookie through, and records the Cookie headers it was sent.
type fuzzUpstream struct {
	mu      sync.Mutex
	cookies []string
	leaked  []string // headers that must never reach it
}

func (u *fuzzUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	u.mu.Lock()
	u.cookies = append(u.cookies, r.Header.Get("Cookie"))
	for _, h := range []string{PluginTokenHeader, "X-Other"} {
		if r.Header.Get(h) != "" {
			u.leaked = append(u.leaked, h)
		}
	}
	u.mu.Unlock()
	body := `{"session":{"id":"s1","userId":"u1","expiresAt":"2999-01-01T00:00:00Z"},"user":{"id":"u1","name":"fuzz"}}`
	return &http.Response{
		StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: r,
	}, nil
}

// calls returns and forgets the Cookie headers sent since the last call,
// and the headers that should not have been sent.
func (u *fuzzUpstream) calls() (cookies, leaked []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	cookies, leaked = u.cookies, u.leaked
	u.cookies, u.leaked = nil, nil
	return cookies, leaked
}

// signatureVerifies is the test's own statement of Better Auth's cookie
// signature: the value, URL-decoded, is TOKEN.SIG with a non-empty TOKEN
// and SIG the base64 of HMAC-SHA256(secret, TOKEN) for one of the secrets.
func signatureVerifies(value string, secrets []string) bool {
	v, err := url.PathUnescape(value)
	if err != nil {
		return false
	}
	dot := strings.LastIndexByte(v, '.')
	if dot < 1 {
		return false
	}
	sig, err := base64.StdEncoding.DecodeString(v[dot+1:])
	if err != nil {
		return false
	}
	for _, s := range secrets {
		mac := hmac.New(sha256.New, []byte(s))
		mac.Write([]byte(v[:dot]))
		if hmac.Equal(sig, mac.Sum(nil)) {
			return true
		}
	}
	return false
}

// Flags of FuzzBetterAuthCookie's last argument, for the correctly signed
// cookie it adds to the arbitrary Cookie header.
const (
	fuzzSignedSecure    = 1 << iota // under the "__Secure-" name
	fuzzSignedRaw                   // not URL-encoded
	fuzzSignedOldSecret             // signed with the old secret
)

// FuzzBetterAuthCookie feeds arbitrary Cookie headers (split into several
// header lines at '\n'), secrets and cookie prefixes to the Better Auth
// validator, whose upstream accepts any session it is asked about. It must
// never panic, and:
//
//   - with secrets configured, a session cookie whose signature does not
//     verify never reaches the upstream, and a request none of whose
//     session cookies verifies never reaches it and never yields an
//     identity;
//   - a request with a session cookie that verifies (or, without secrets,
//     any session cookie) is passed upstream once, with exactly the
//     session cookies that verify and nothing else;
//   - a correctly signed cookie for a token of the input, signed with the
//     harness's algorithm (URL-encoded or not, current or old secret, plain
//     or "__Secure-" name), added to an otherwise cookie-free request, is
//     passed upstream and yields an identity.
func FuzzBetterAuthCookie(f *testing.F) {
	const (
		secret = "fuzz-better-auth-secret-0123456789abcdef"
		old    = "fuzz-better-auth-old-secret-0123456789ab"
		token  = "Q7xv9Lk2mP4rT8wY1zA6bC3dE5fG0h05" // signed under secret: "c7+2…/…="
		name   = "better-auth.session_token"
		secure = "__Secure-" + name
	)
	good := betterauthtest.SignCookieValue(secret, token)
	raw, err := url.QueryUnescape(good)
	require.NoError(f, err)
	byOld := betterauthtest.SignCookieValue(old, token)
	other := betterauthtest.SignCookieValue("another-secret-altogether-0123456789ab", token)
	for _, s := range []struct {
		header, secret, old, prefix, token string
		flags                              uint8
	}{
		{name + "=" + good, secret, old, "", token, 0},
		{name + "=" + raw, secret, "", "", token, fuzzSignedRaw},
		{secure + "=" + good, secret, old, "", token, fuzzSignedSecure},
		{name + "=" + byOld, secret, old, "", "", fuzzSignedOldSecret},
		{"custom.session_token=" + good + "; " + name + "=" + good, secret, "", "custom", token, 0},
		{"__Secure-my-app.session_token=" + good, secret, "", "my-app", token, fuzzSignedSecure | fuzzSignedRaw},
		{name + "=" + good + "; " + name + "=" + good, secret, old, "", token, 0},
		{name + "=" + good + "; " + name + "=" + other, secret, old, "", token, 0},
		{name + "=" + other + "; " + secure + "=" + good, secret, "", "", token, fuzzSignedSecure},
		{name + "=" + good + "\n" + secure + "=" + token + ".", secret, "", "", token, 0},
		{name + "=" + other, secret, old, "", "a b+c%2F.d", fuzzSignedRaw},
		{name + "=" + strings.Replace(good, ".", "%2e", 1), secret, "", "", token, 0},
		{name + "=" + strings.ReplaceAll(good, "%", "%25"), secret, "", "", token, 0},
		{name + "=" + strings.ToLower(good), secret, "", "", token, 0},
		{name + `="` + good + `"`, secret, "", "", token, 0},
		{" " + name + " = " + good + " ;;; theme=dark", secret, "", "", token, 0},
		{name + "=" + good + "%zz", secret, "", "", token, 0},
		{name + "=" + token + "." + strings.Repeat("A", 43) + "=", secret, "", "", token, 0},
		{name + "=.", secret, "", "", ".", 0},
		{name + "=; " + secure + "=", secret, "", "", token, 0},
		{"theme=dark; other.session_token=" + good, secret, "", "", token, 0},
		{name + "=" + good, "", "", "", token, 0},
		{name + "=" + good, secret, old, "a(b", token, 0},
		{name + "=" + good, secret, old, "é", token, 0},
	} {
		f.Add(s.header, s.secret, s.old, s.prefix, s.token, s.flags)
	}
	upstream := &fuzzUpstream{}
	client := &http.Client{Transport: upstream}
	f.Fuzz(func(t *testing.T, header, secret, old, prefix, token string, flags uint8) {
		var secrets []string
		for _, s := range []string{secret, old} {
			if s != "" {
				secrets = append(secrets, s)
			}
		}
		v, err := NewBetterAuth(BetterAuthOptions{BaseURL: "http://auth.example", CookiePrefix: prefix, Secrets: secrets, Client: client})
		if err != nil {
			assert.Nil(t, v)
			assert.True(t, strings.HasPrefix(err.Error(), "wsauth: "), err.Error())
			assert.NotEmpty(t, prefix, "only a cookie prefix can be refused here")
			return
		}
		if prefix == "" {
			prefix = DefaultBetterAuthCookiePrefix
		}
		names := []string{prefix + ".session_token", "__Secure-" + prefix + ".session_token"}

		// The arbitrary header.
		r := requestWith(http.Header{"Cookie": strings.Split(header, "\n"), PluginTokenHeader: {testKey}, "X-Other": {"x"}})
		checkBetterAuthCookies(t, v, upstream, r, names, secrets)

		// A correctly signed cookie, with nothing else.
		if token == "" || secret == "" {
			return
		}
		key := secret
		if flags&fuzzSignedOldSecret != 0 && old != "" {
			key = old
		}
		// The harness encodes like a form ('+' for a space), Better Auth
		// like encodeURIComponent ("%20"), which the validator decodes
		// as a path: a space is encoded the way Better Auth does.
		value := strings.ReplaceAll(betterauthtest.SignCookieValue(key, token), "+", "%20")
		if flags&fuzzSignedRaw != 0 {
			// Unencoded, as Better Auth also accepts it, where that is
			// a cookie value that decodes to itself.
			unescaped, err := url.QueryUnescape(value)
			if err == nil && !strings.ContainsAny(unescaped, "% ") && (&http.Cookie{Name: "n", Value: unescaped}).Valid() == nil {
				value = unescaped
			}
		}
		require.True(t, signatureVerifies(value, secrets), "the harness's signature does not verify: %q", value)
		cookieName := names[0]
		if flags&fuzzSignedSecure != 0 {
			cookieName = names[1]
		}
		if (&http.Cookie{Name: cookieName, Value: "x"}).Valid() != nil {
			t.Fatalf("NewBetterAuth took the cookie prefix %q, which cannot be part of a cookie name", prefix)
		}
		id, err := v.ValidateSession(context.Background(), requestWith(http.Header{"Cookie": {cookieName + "=" + value}}))
		sent, _ := upstream.calls()
		require.NoError(t, err, "a correctly signed cookie was refused")
		require.NotNil(t, id)
		assert.Equal(t, []string{cookieName + "=" + value}, sent)
	})
}

// checkBetterAuthCookies checks what the validator v does with r, whose
// session cookies are those named by names.
func checkBetterAuthCookies(t *testing.T, v SessionValidator, upstream *fuzzUpstream, r *http.Request, names, secrets []string) {
	t.Helper()
	var carried, verified []string
	for _, n := range names {
		for _, c := range r.CookiesNamed(n) {
			if c.Value == "" {
				continue
			}
			carried = append(carried, c.Name+"="+c.Value)
			if secrets == nil || signatureVerifies(c.Value, secrets) {
				verified = append(verified, c.Name+"="+c.Value)
			}
		}
	}
	id, err := v.ValidateSession(context.Background(), r)
	sent, leaked := upstream.calls()
	assert.Empty(t, leaked, "headers other than the session's reached the auth service")
	switch {
	case len(carried) == 0:
		require.ErrorIs(t, err, ErrNoCredentials)
		assert.Empty(t, sent, "a request without a session cookie reached the auth service")
	case len(verified) == 0:
		require.ErrorIs(t, err, ErrInvalidCredentials)
		assert.Nil(t, id, "an identity for cookies whose signatures do not verify")
		assert.Empty(t, sent, "a cookie whose signature does not verify reached the auth service")
	default:
		require.NoError(t, err)
		require.NotNil(t, id)
		require.Len(t, sent, 1, "what reached the auth service")
		// In the order they were sent, which may mix the two names.
		assert.ElementsMatch(t, verified, strings.Split(sent[0], "; "), "what reached the auth service")
	}
	if err != nil {
		assert.Nil(t, id)
	}
}
