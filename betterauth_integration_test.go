//go:build integration

package wsauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/mosaicstack/wsauth/internal/betterauthtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realGateway is a gateway in front of a real Better Auth server: the
// validator behind a cache, Accept in the handler, which greets each client
// with the identity it saw and then reads until the connection ends.
type realGateway struct {
	m        *Middleware
	srv      *httptest.Server
	accepted atomic.Int64
}

func newRealGateway(t *testing.T, auth *betterauthtest.Server, interval time.Duration) *realGateway {
	t.Helper()
	ba, err := NewBetterAuth(BetterAuthOptions{BaseURL: auth.URL, Secrets: []string{auth.Secret}, Timeout: 10 * time.Second})
	require.NoError(t, err)
	cache, err := NewSessionCache(ba, SessionCacheOptions{})
	require.NoError(t, err)
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys, Sessions: cache, RevalidateInterval: interval, ValidatorTimeout: 15 * time.Second, RetryAfter: 2 * time.Second})
	require.NoError(t, err)
	g := &realGateway{m: m}
	g.srv = httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ctx, err := m.Accept(w, r, nil)
		if err != nil {
			return
		}
		g.accepted.Add(1)
		defer c.CloseNow()
		id, _ := FromContext(ctx)
		if err := wsjson.Write(ctx, c, seen{Kind: id.Kind, Subject: id.Subject, Name: id.Name, SessionID: id.SessionID}); err != nil {
			return
		}
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	})))
	t.Cleanup(g.srv.Close)
	return g
}

// dial connects with the given headers and returns the connection with the
// identity the gateway greeted it with, or the refusal's status.
func (g *realGateway) dial(t *testing.T, header http.Header) (*websocket.Conn, *seen, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.srv.URL, "http"), &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		require.NotNil(t, resp, "dial: %v", err)
		return nil, nil, resp.StatusCode
	}
	t.Cleanup(func() { c.CloseNow() })
	var s seen
	require.NoError(t, wsjson.Read(ctx, c, &s))
	return c, &s, http.StatusSwitchingProtocols
}

// forgeCookie changes one character of the token of a session cookie and
// keeps its (now wrong) signature.
func forgeCookie(cookie string) string {
	name, value, _ := strings.Cut(cookie, "=")
	b := []byte(value)
	if b[0] == 'a' {
		b[0] = 'b'
	} else {
		b[0] = 'a'
	}
	return name + "=" + string(b)
}

func TestIntegrationBetterAuthSessions(t *testing.T) {
	t.Parallel()
	auth := betterauthtest.Start(t, betterauthtest.Options{})
	const interval = time.Second
	g := newRealGateway(t, auth, interval)
	alice := auth.SignUp(t, "alice@example.com", "correct-horse-battery", "Alice Liddell")

	t.Run("a real session opens a socket with the user's identity", func(t *testing.T) {
		c, got, status := g.dial(t, hdr("Cookie", alice.Cookie))
		require.Equal(t, http.StatusSwitchingProtocols, status)
		assert.Equal(t, KindUser, got.Kind)
		assert.Equal(t, "Alice Liddell", got.Name)
		assert.Equal(t, alice.UserID, got.Subject)
		assert.NotEmpty(t, got.SessionID)
		assert.NotEqual(t, alice.Token, got.SessionID, "the session ID must not be the token")
		c.CloseNow()
	})

	t.Run("refused without a socket", func(t *testing.T) {
		for name, header := range map[string]http.Header{
			"forged cookie (signature does not verify)":      hdr("Cookie", forgeCookie(alice.Cookie)),
			"correctly signed token the server never issued": hdr("Cookie", auth.CookieName+"="+auth.SignedCookieValue(strings.Repeat("x", 32))),
			"no cookie":                          nil,
			"foreign Origin with a valid cookie": hdr("Cookie", alice.Cookie, "Origin", "https://evil.example"),
		} {
			t.Run(name, func(t *testing.T) {
				c, _, status := g.dial(t, header)
				assert.Nil(t, c)
				want := http.StatusUnauthorized
				if strings.HasPrefix(name, "foreign") {
					want = http.StatusForbidden
				}
				assert.Equal(t, want, status)
			})
		}
	})

	t.Run("sign-out closes the open socket with 4401 within the interval", func(t *testing.T) {
		bob := auth.SignUp(t, "bob@example.com", "correct-horse-battery", "Bob")
		c, got, status := g.dial(t, hdr("Cookie", bob.Cookie))
		require.Equal(t, http.StatusSwitchingProtocols, status)
		require.Equal(t, "Bob", got.Name)
		// A second socket of the same session closes too.
		c2, _, _ := g.dial(t, hdr("Cookie", bob.Cookie))

		auth.SignOut(t, bob)
		signedOut := time.Now()
		for _, conn := range []*websocket.Conn{c, c2} {
			ce := waitClosed(t, conn, interval+20*time.Second)
			assert.Equal(t, StatusSessionEnded, ce.Code)
			assert.Equal(t, "session revoked", ce.Reason)
		}
		t.Logf("sign-out to close: %v (interval %v)", time.Since(signedOut).Round(time.Millisecond), interval)

		// The revoked cookie no longer opens a socket.
		_, _, status = g.dial(t, hdr("Cookie", bob.Cookie))
		assert.Equal(t, http.StatusUnauthorized, status)
	})
}

func TestIntegrationBetterAuthSessionExpiry(t *testing.T) {
	t.Parallel()
	const lifetime = 4 * time.Second
	auth := betterauthtest.Start(t, betterauthtest.Options{SessionExpiresIn: lifetime})
	g := newRealGateway(t, auth, time.Hour) // only the expiry can close it
	carol := auth.SignUp(t, "carol@example.com", "correct-horse-battery", "Carol")
	signedUp := time.Now()

	c, got, status := g.dial(t, hdr("Cookie", carol.Cookie))
	require.Equal(t, http.StatusSwitchingProtocols, status)
	require.Equal(t, "Carol", got.Name)
	ce := waitClosed(t, c, lifetime+30*time.Second)
	assert.Equal(t, StatusSessionEnded, ce.Code)
	assert.Equal(t, "session expired", ce.Reason)
	t.Logf("a %v session closed after %v", lifetime, time.Since(signedUp).Round(time.Millisecond))
	assert.GreaterOrEqual(t, time.Since(signedUp), lifetime-time.Second, "closed long before the session's expiry")

	_, _, status = g.dial(t, hdr("Cookie", carol.Cookie))
	assert.Equal(t, http.StatusUnauthorized, status)
}

func TestIntegrationBetterAuthDown(t *testing.T) {
	t.Parallel()
	auth := betterauthtest.Start(t, betterauthtest.Options{})
	const interval = 500 * time.Millisecond
	g := newRealGateway(t, auth, interval)
	dave := auth.SignUp(t, "dave@example.com", "correct-horse-battery", "Dave")
	erin := auth.SignUp(t, "erin@example.com", "correct-horse-battery", "Erin")
	open, _, status := g.dial(t, hdr("Cookie", dave.Cookie))
	require.Equal(t, http.StatusSwitchingProtocols, status)

	auth.Stop()

	// A session the gateway has not seen cannot be checked: 503, not 401.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.srv.URL, "http"), &websocket.DialOptions{HTTPHeader: hdr("Cookie", erin.Cookie)})
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"))

	// Plugins do not depend on the auth service.
	c, got, status := g.dial(t, hdr(PluginTokenHeader, testKey))
	require.Equal(t, http.StatusSwitchingProtocols, status)
	assert.Equal(t, seen{Kind: KindPlugin, Subject: "telegram", Name: "telegram"}, *got)
	c.CloseNow()

	// The socket opened before the outage stays open through several
	// failed revalidations: its session is still tracked, not ended.
	time.Sleep(5 * interval)
	require.Eventually(t, func() bool { return g.m.live.size() == 1 }, 10*time.Second, 10*time.Millisecond,
		"only the session socket should be left (the plugin closed)")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	require.NoError(t, open.Write(ctx2, websocket.MessageText, []byte("still here")))
	assert.EqualValues(t, 2, g.accepted.Load())
}
