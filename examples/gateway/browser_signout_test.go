//go:build browser

package main

// Browser tests of signing out: in another tab while the chat page has a
// live socket, and with the page's own "Sign out" button. Both run against
// the real example gateway.

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quietPeriod is how long a test watches for a retry that must not come.
// The page's first retry comes within a second of a close.
const quietPeriod = 3 * time.Second

// handshakeLine matches the gateway's log line for one decision on a
// WebSocket handshake, accepted or refused (the middleware also decides,
// and logs, the page's requests to /whoami).
var handshakeLine = regexp.MustCompile(`(?m)msg="wsauth: (?:accepted|refused)"[^\n]* path=/chat(?: |$)`)

// handshakes is the number of WebSocket handshakes the gateway has decided.
func (p *process) handshakes() int {
	return len(handshakeLine.FindAllStringIndex(p.output(), -1))
}

// pageWatch records what the browser reports about a page: the sockets it
// opens to one URL, and the script errors and uncaught exceptions of every
// page loaded in the tab.
type pageWatch struct {
	mu      sync.Mutex
	sockets int
	errors  []string
}

// watchPage starts recording for the tab of ctx (chromedp has enabled the
// runtime domain); chatURL is the WebSocket URL whose sockets are counted.
func watchPage(t *testing.T, ctx context.Context, chatURL string) *pageWatch {
	t.Helper()
	w := &pageWatch{}
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventWebSocketCreated:
			if ev.URL == chatURL {
				w.sockets++
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			if d.Exception != nil {
				w.errors = append(w.errors, "exception: "+d.Exception.Description)
			} else {
				w.errors = append(w.errors, "exception: "+d.Text)
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				w.errors = append(w.errors, "console.error: "+strings.Join(args, " "))
			}
		}
	}))
	return w
}

func (w *pageWatch) socketCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sockets
}

func (w *pageWatch) scriptErrors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errors...)
}

// browserCookie returns the demo session cookie the browser holds for
// base, as a Cookie header ("name=value"). Page script cannot read it (it
// is HttpOnly); DevTools can.
func browserCookie(t *testing.T, ctx context.Context, base string) string {
	t.Helper()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	require.NoError(t, err)
	for _, c := range res.Cookies {
		if c.Name == demoCookie {
			return c.Name + "=" + c.Value
		}
	}
	t.Fatalf("the browser holds no %s cookie for %s", demoCookie, base)
	return ""
}

// assertQuiet watches the page for quietPeriod and fails if it opens
// another socket, the gateway decides another handshake, or the status
// line changes.
func assertQuiet(t *testing.T, ctx context.Context, gw *process, w *pageWatch) {
	t.Helper()
	sockets, decided, status := w.socketCount(), gw.handshakes(), statusLine(ctx)
	for deadline := time.Now().Add(quietPeriod); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		require.Equal(t, sockets, w.socketCount(), "the page opened another socket")
		require.Equal(t, decided, gw.handshakes(), "the gateway saw another handshake")
		require.Equal(t, status, statusLine(ctx), "the status line changed")
	}
}

// Signing out in another tab (here: the test's own HTTP client, with the
// browser's cookie) revokes the session; within REVALIDATE_INTERVAL the
// gateway closes the page's live socket with 4401, and the page says so
// and stops: retrying cannot help until the user signs in again.
func TestBrowserSignOutElsewhereEndsTheChat(t *testing.T) {
	gw, base := startGateway(t, "REVALIDATE_INTERVAL=300ms")
	ctx := newBrowser(t)
	w := watchPage(t, ctx, wsURL(base))
	signIn(t, ctx, base, "gina")
	say(t, ctx, "before sign-out")
	waitJS(t, ctx, `[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("before sign-out"))`)
	require.Equal(t, 1, w.socketCount())
	require.Equal(t, 1, gw.handshakes())

	req, err := http.NewRequest(http.MethodPost, base+"/logout", nil)
	require.NoError(t, err)
	req.Header.Set("Cookie", browserCookie(t, ctx, base))
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirects.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	waitState(t, ctx, "stopped")
	assert.Equal(t, "disconnected (4401): session ended: sign in again", statusLine(ctx))
	waitJS(t, ctx, `!document.getElementById("demo-signin").hidden && document.getElementById("chat").hidden && document.getElementById("account").hidden`)
	gw.waitFor(t, `"wsauth: closing connections".*reason="session revoked"`)
	screenshot(t, ctx, "signed-out-elsewhere.png")

	assertQuiet(t, ctx, gw, w)
	assert.Equal(t, 1, w.socketCount(), "sockets the page opened")
	assert.Empty(t, w.scriptErrors())
}

// The page's own "Sign out" button posts /logout, and the gateway answers
// with a redirect to the page, which loads again signed out: the sign-in
// form, no error, no attempt to connect.
func TestBrowserSignOutButton(t *testing.T) {
	gw, base := startGateway(t, "REVALIDATE_INTERVAL=300ms")
	ctx := newBrowser(t)
	w := watchPage(t, ctx, wsURL(base))
	signIn(t, ctx, base, "hana")
	cookie := browserCookie(t, ctx, base)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#signout button`)),
		chromedp.Click(chromedp.CSS(`#signout button`)),
	))

	waitState(t, ctx, "signed-out")
	waitJS(t, ctx, `!document.getElementById("demo-signin").hidden && document.getElementById("chat").hidden && document.getElementById("account").hidden`)
	assert.Equal(t, "signed out", statusLine(ctx))
	screenshot(t, ctx, "signed-out-button.png")

	assertQuiet(t, ctx, gw, w)
	assert.Equal(t, 1, w.socketCount(), "sockets the page opened")
	assert.Equal(t, 1, gw.handshakes(), "handshakes the gateway saw")
	assert.Empty(t, w.scriptErrors())
	left, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	require.NoError(t, err)
	assert.Empty(t, left.Cookies, "the session cookie outlived the sign-out")

	// The session is gone at the gateway, not only in this browser.
	req, err := http.NewRequest(http.MethodGet, base+"/whoami", nil)
	require.NoError(t, err)
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// Signing in again works from the page as it is.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS(`#demo-signin input[name=name]`), "hana"),
		chromedp.Submit(chromedp.CSS(`#demo-signin`)),
	))
	waitState(t, ctx, "open")
}
