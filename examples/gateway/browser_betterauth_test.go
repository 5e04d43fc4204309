//go:build browser && integration

package main

// The chat page in Chromium against the gateway run with AUTH_URL, in front
// of a real Better Auth server (which needs Node and npm, like the other
// integration tests). Run it with
//
//	go test -tags browser,integration -run '^TestBrowser' ./examples/gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/mosaicstack/wsauth/internal/betterauthtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A user signed in at Better Auth opens the chat page on the gateway: the
// browser sends the auth server's session cookie to the gateway too
// (cookies are per host, not per port), the page shows the user's name
// and chats. Signing out at Better Auth closes the socket with 4401 at
// the next revalidation, and the page says so and stops.
func TestBrowserWithBetterAuth(t *testing.T) {
	const interval = time.Second
	auth := betterauthtest.Start(t, betterauthtest.Options{})
	gw, base := startGateway(t,
		"PLUGIN_API_KEY="+e2eKey,
		"AUTH_URL="+auth.URL,
		"BETTER_AUTH_SECRET="+auth.Secret,
		"REVALIDATE_INTERVAL="+interval.String(),
	)
	plugin := start(t, "plugin", "GATEWAY_URL="+wsURL(base), "PLUGIN_API_KEY="+e2eKey)
	plugin.waitFor(t, "connected to ")
	alice := auth.SignUp(t, "alice@example.com", "correct-horse-battery", "Alice")

	// The cookie as the auth server set it, for its own URL.
	ctx := newBrowser(t)
	w := watchPage(t, ctx, wsURL(base))
	name, value, ok := strings.Cut(alice.Cookie, "=")
	require.True(t, ok)
	httpOnly := true
	_, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
		Name: name, Value: value, URL: auth.URL + "/", Path: "/",
		HTTPOnly: &httpOnly, SameSite: network.CookieSameSiteLax,
	})
	require.NoError(t, err)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	waitState(t, ctx, "open")
	me, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("me")))
	require.NoError(t, err)
	assert.Equal(t, "Alice", me)
	hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("signout").hidden`))
	require.NoError(t, err)
	assert.True(t, hidden, "the page offers to sign out of a session it does not own")

	say(t, ctx, "hello from Alice")
	waitJS(t, ctx, `document.querySelectorAll("#messages li").length >= 2`)
	assert.Equal(t, []entry{
		{Who: "Alice", Kind: "user", Text: "hello from Alice"},
		{Who: "plugin", Kind: "plugin", Text: "echo: hello from Alice"},
	}, messages(t, ctx))
	plugin.waitFor(t, `Alice \(user\): hello from Alice`)
	screenshot(t, ctx, "betterauth-chat.png")

	signedOut := time.Now()
	auth.SignOut(t, alice)
	waitState(t, ctx, "stopped")
	took := time.Since(signedOut)
	assert.Equal(t, "disconnected (4401): session ended: sign in again", statusLine(ctx))
	// The socket closes at the first revalidation after the sign-out; the
	// slack is for a busy machine.
	assert.Less(t, took, interval+5*time.Second, "the page learnt of the sign-out too late")
	t.Logf("the page showed the sign-out %v after it", took.Round(10*time.Millisecond))
	waitJS(t, ctx, `!document.getElementById("auth-signin").hidden && document.getElementById("demo-signin").hidden && document.getElementById("chat").hidden`)
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("signin-link").href`))
	require.NoError(t, err)
	assert.Equal(t, auth.URL+"/", href)
	screenshot(t, ctx, "betterauth-signed-out.png")

	assertQuiet(t, ctx, gw, w)
	assert.Equal(t, 1, w.socketCount(), "sockets the page opened")
	assert.Empty(t, w.scriptErrors())
	out := gw.output()
	for _, secret := range []string{auth.Secret, alice.Token, value} {
		assert.NotContains(t, out, secret, "a secret reached the gateway's log")
	}
}
