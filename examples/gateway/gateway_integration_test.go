//go:build integration

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
	"github.com/mosaicstack/wsauth/internal/betterauthtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// forge changes one character of the token of a session cookie.
func forge(cookie string) string {
	name, value, _ := strings.Cut(cookie, "=")
	b := []byte(value)
	if b[0] == 'a' {
		b[0] = 'b'
	} else {
		b[0] = 'a'
	}
	return name + "=" + string(b)
}

func dialStatus(t *testing.T, base string, header http.Header) (*websocket.Conn, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		require.NotNil(t, resp, "dial: %v", err)
		return nil, resp.StatusCode
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, http.StatusSwitchingProtocols
}

// TestGatewayWithBetterAuth runs the gateway binary with AUTH_URL pointing at
// a real Better Auth server and drives it as a browser and a plugin would.
func TestGatewayWithBetterAuth(t *testing.T) {
	auth := betterauthtest.Start(t, betterauthtest.Options{})
	p, base := startGateway(t,
		"PLUGIN_API_KEY="+e2eKey,
		"AUTH_URL="+auth.URL,
		"BETTER_AUTH_SECRET="+auth.Secret,
		"REVALIDATE_INTERVAL=1s",
	)
	alice := auth.SignUp(t, "alice@example.com", "correct-horse-battery", "Alice")

	t.Run("whoami and login", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, base+"/whoami", nil)
		require.NoError(t, err)
		req.Header.Set("Cookie", alice.Cookie)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var me sender
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&me))
		resp.Body.Close()
		assert.Equal(t, sender{Kind: wsauth.KindUser, Name: "Alice"}, me)

		resp, err = http.PostForm(base+"/login", map[string][]string{"name": {"mallory"}})
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Contains(t, string(body), auth.URL, "/login points at the auth server")
		assert.Empty(t, resp.Cookies(), "no demo session in Better Auth mode")
	})

	t.Run("a real session chats under its name", func(t *testing.T) {
		c, status := dialStatus(t, base, http.Header{"Cookie": {alice.Cookie}, "Origin": {base}})
		require.Equal(t, http.StatusSwitchingProtocols, status)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, c.Write(ctx, websocket.MessageText, []byte("hello")))
		got := readMessage(t, ctx, c)
		assert.Equal(t, "hello", got.Text)
		assert.Equal(t, sender{Kind: wsauth.KindUser, Name: "Alice"}, got.From)
		c.CloseNow()
	})

	t.Run("forged and unknown cookies are refused", func(t *testing.T) {
		for _, cookie := range []string{
			forge(alice.Cookie),
			auth.CookieName + "=" + auth.SignedCookieValue(strings.Repeat("z", 32)),
		} {
			c, status := dialStatus(t, base, http.Header{"Cookie": {cookie}})
			assert.Nil(t, c)
			assert.Equal(t, http.StatusUnauthorized, status)
		}
	})

	t.Run("sign-out closes the socket with 4401", func(t *testing.T) {
		bob := auth.SignUp(t, "bob@example.com", "correct-horse-battery", "Bob")
		c, status := dialStatus(t, base, http.Header{"Cookie": {bob.Cookie}})
		require.Equal(t, http.StatusSwitchingProtocols, status)
		auth.SignOut(t, bob)
		code, reason := closeCode(t, c, 30*time.Second)
		assert.Equal(t, websocket.StatusCode(4401), code)
		assert.Equal(t, "session revoked", reason)
	})

	t.Run("auth server down: sessions 503, plugins connect", func(t *testing.T) {
		erin := auth.SignUp(t, "erin@example.com", "correct-horse-battery", "Erin")
		auth.Stop()
		c, status := dialStatus(t, base, http.Header{"Cookie": {erin.Cookie}})
		assert.Nil(t, c)
		assert.Equal(t, http.StatusServiceUnavailable, status)

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pc, err := wsauth.DialPlugin(ctx, wsURL(base), e2eKey, nil)
		require.NoError(t, err)
		pc.CloseNow()
	})

	out := p.output()
	for _, secret := range []string{auth.Secret, e2eKey, alice.Token} {
		assert.NotContains(t, out, secret, "a secret reached the log")
	}
}

// TestGatewayBetterAuthExpiry watches a short Better Auth session end while
// its socket is open.
func TestGatewayBetterAuthExpiry(t *testing.T) {
	const lifetime = 3 * time.Second
	auth := betterauthtest.Start(t, betterauthtest.Options{SessionExpiresIn: lifetime})
	_, base := startGateway(t, "AUTH_URL="+auth.URL, "REVALIDATE_INTERVAL=1h")
	carol := auth.SignUp(t, "carol@example.com", "correct-horse-battery", "Carol")
	c, status := dialStatus(t, base, http.Header{"Cookie": {carol.Cookie}})
	require.Equal(t, http.StatusSwitchingProtocols, status)
	code, reason := closeCode(t, c, lifetime+30*time.Second)
	assert.Equal(t, websocket.StatusCode(4401), code)
	assert.Equal(t, "session expired", reason)
}
