//go:build browser

package main

// Browser tests: the chat page and the gateway driven by a real, headless
// Chromium (Debian's chromium package, which .ci/run installs), because a
// browser is a client unlike any Go test: it cannot set headers, cannot
// read the status of a refused handshake, and sends cookies to pages of
// other origins on the same site. Run them with
//
//	go test -tags browser ./examples/gateway
//
// They fail, never skip, when Chromium cannot be started: the build tag is
// the opt-in. Screenshots go to $ARTIFACTS_DIR (default: artifacts/ at the
// repository root).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// browserTimeout bounds one browser test. The machine may be busy with
// other tests, so waits are generous and poll for a condition.
const browserTimeout = 2 * time.Minute

// newBrowser starts a headless Chromium with a fresh profile and returns a
// context for driving a tab in it. The browser is stopped when the test
// ends.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is needed for the browser tests: %v (install Debian's chromium package; .ci/run does)", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(960, 760),
	)
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(bcancel)
	// The first call starts the browser.
	_, err := chromedp.Call(bctx, network.Enable, network.EnableParams{})
	require.NoError(t, err, "start Chromium")
	return bctx
}

// waitJS polls the page until the JavaScript expression is true. It keeps
// polling across navigations (a form submission loads a new page), and
// fails the test after a generous deadline.
func waitJS(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var ok bool
		if ok, err = chromedp.Run(ctx, chromedp.Evaluate[bool](expr)); err == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v); status line: %q", expr, err, statusLine(ctx))
}

// statusLine is the text of the page's status line, for assertions and
// failure messages.
func statusLine(ctx context.Context) string {
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("status")||{}).textContent||""`))
	return s
}

// recordStatus makes the page keep every text its status line shows, so
// that a test can check for a state the page has already left (a retry
// replaces "disconnected" within a second).
func recordStatus(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`(() => {
		const s = document.getElementById("status");
		window.statusSeen = [s.textContent];
		new MutationObserver(() => window.statusSeen.push(s.textContent)).observe(s, { childList: true, characterData: true, subtree: true });
	})()`))
	require.NoError(t, err)
}

// waitStatusSeen waits until the status line has shown a text that starts
// with prefix since recordStatus.
func waitStatusSeen(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	waitJS(t, ctx, fmt.Sprintf(`window.statusSeen.some(s => s.startsWith(%q))`, prefix))
}

// waitState waits for the status line's state (data-state).
func waitState(t *testing.T, ctx context.Context, state string) {
	t.Helper()
	waitJS(t, ctx, fmt.Sprintf(`document.getElementById("status").dataset.state === %q`, state))
}

// entry is one line of the page's message list as the user reads it.
type entry struct {
	Who  string `json:"who"`
	Kind string `json:"kind"`
	Text string `json:"text"`
}

// messages returns the page's message list.
func messages(t *testing.T, ctx context.Context) []entry {
	t.Helper()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]entry](`[...document.querySelectorAll("#messages li")].map(li => ({
		who: li.querySelector(".who").textContent,
		kind: li.querySelector(".kind").textContent,
		text: li.lastChild.textContent,
	}))`))
	require.NoError(t, err)
	return got
}

// signIn signs in through the page's demo form and waits for the socket.
func signIn(t *testing.T, ctx context.Context, base, name string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#demo-signin input[name=name]`)),
		chromedp.SendKeys(chromedp.CSS(`#demo-signin input[name=name]`), name),
		chromedp.Submit(chromedp.CSS(`#demo-signin`)),
	))
	waitState(t, ctx, "open")
}

// say types a message into the page and sends it.
func say(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("text"), text),
		chromedp.Click(chromedp.CSS(`#send button`)),
	))
}

// screenshot saves the visible page as a PNG test artifact.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
}

func TestBrowserChatWithPlugin(t *testing.T) {
	_, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	plugin := start(t, "plugin", "GATEWAY_URL="+wsURL(base), "PLUGIN_API_KEY="+e2eKey)
	plugin.waitFor(t, "connected to ")
	ctx := newBrowser(t)

	signIn(t, ctx, base, "alice")
	me, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("me")))
	require.NoError(t, err)
	assert.Equal(t, "alice", me)
	assert.Equal(t, "connected", statusLine(ctx))

	say(t, ctx, "hello plugin")
	waitJS(t, ctx, `[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("echo: hello plugin"))`)
	plugin.waitFor(t, `alice \(user\): hello plugin`)

	// Markup in a message is shown as text: nothing is parsed, nothing runs.
	const hostile = `<script>document.title="pwned"</script><img src=x onerror="document.title='pwned'"><b>bold?</b>`
	say(t, ctx, hostile)
	waitJS(t, ctx, `[...document.querySelectorAll("#messages li")].some(li => li.textContent.includes("echo: <script>"))`)
	nodes, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#messages script, #messages img, #messages b").length`))
	require.NoError(t, err)
	title, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	assert.Zero(t, nodes, "a message created elements")
	assert.Equal(t, "wsauth chat", title)

	assert.Equal(t, []entry{
		{Who: "alice", Kind: "user", Text: "hello plugin"},
		{Who: "plugin", Kind: "plugin", Text: "echo: hello plugin"},
		{Who: "alice", Kind: "user", Text: hostile},
		{Who: "plugin", Kind: "plugin", Text: "echo: " + hostile},
	}, messages(t, ctx))
	screenshot(t, ctx, "chat.png")
}

// A page on another origin of the same site (same host, other port: the
// browser sends the user's cookie with its requests) must not be able to
// open a socket with the user's session: cross-site WebSocket hijacking.
func TestBrowserCrossOriginPageCannotOpenChat(t *testing.T) {
	gw, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	ctx := newBrowser(t)
	signIn(t, ctx, base, "carol")

	// A control: a server on a third port that records whether the
	// browser sends the user's cookie with a WebSocket handshake from the
	// other origin. If it does not, the refusal below proves nothing.
	var controlCookie atomic.Bool
	control := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie(demoCookie); err == nil {
			controlCookie.Store(true)
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		c.Close(websocket.StatusNormalClosure, "")
	}))
	t.Cleanup(control.Close)

	// The attacker's page opens the gateway's /chat, and the control.
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><title>elsewhere</title><body><script>
function open(url, name) {
  window[name] = "pending";
  const ws = new WebSocket(url);
  ws.onopen = () => { window[name] = "open"; };
  ws.onclose = (e) => { if (window[name] !== "open") window[name] = "closed " + e.code; };
}
open(%q, "chat");
open(%q, "control");
</script></body>`, wsURL(base), "ws"+strings.TrimPrefix(control.URL, "http")+"/")
	}))
	t.Cleanup(attacker.Close)

	// The browser's own account of the handshake: DevTools reports the
	// status that the page cannot see.
	var mu sync.Mutex
	chatRequests := map[network.RequestID]bool{}
	var handshakeErrors []string
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventWebSocketCreated:
			if ev.URL == wsURL(base) {
				chatRequests[ev.RequestID] = true
			}
		case *network.EventWebSocketFrameError:
			if chatRequests[ev.RequestID] {
				handshakeErrors = append(handshakeErrors, ev.ErrorMessage)
			}
		}
	}))

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(attacker.URL)))
	waitJS(t, ctx, `window.chat && window.chat !== "pending" && window.control && window.control !== "pending"`)
	chat, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.chat`))
	require.NoError(t, err)
	ctl, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.control`))
	require.NoError(t, err)

	assert.Equal(t, "open", ctl, "control socket")
	assert.True(t, controlCookie.Load(), "the browser did not send the user's cookie across ports; the test proves nothing")
	assert.Equal(t, "closed 1006", chat, "the socket to /chat must never open; the page only sees 1006")
	gw.waitFor(t, `wsauth: refused" .*method=session .*origin=`+regexp.QuoteMeta(attacker.URL)+` .*status=403`)
	mu.Lock()
	defer mu.Unlock()
	if assert.Len(t, handshakeErrors, 1) {
		assert.Contains(t, handshakeErrors[0], "403")
	}
}

// When the gateway goes away, the status line says so in words and the
// page retries; when it comes back without the user's session (the demo
// store lives in memory), the page asks the user to sign in again instead
// of retrying for ever.
func TestBrowserStatusWhenTheGatewayRestarts(t *testing.T) {
	addr := freeAddr(t)
	gw, base := startGateway(t, "ADDR="+addr)
	ctx := newBrowser(t)
	signIn(t, ctx, base, "dave")
	recordStatus(t, ctx)

	require.NoError(t, gw.cmd.Process.Signal(syscall.SIGTERM))
	waitStatusSeen(t, ctx, "disconnected (1001): gateway restarting, retrying in ")
	<-gw.done

	startGateway(t, "ADDR="+addr)
	waitState(t, ctx, "stopped")
	assert.Equal(t, "could not connect (1006): session ended: sign in again", statusLine(ctx))
	waitJS(t, ctx, `!document.getElementById("demo-signin").hidden`)

	signIn(t, ctx, base, "dave")
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for a gateway that must come back on the same address.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// scripted is a stand-in gateway that serves the real chat page with a
// /whoami, /login and /chat the test controls, so that the page's answer to
// every close code and refusal can be checked, whatever the real gateway
// can be made to do on cue.
type scripted struct {
	url        string
	signInURL  string
	signedIn   atomic.Bool
	refuse     atomic.Int64 // non-zero: refuse /chat and /whoami with this status
	handshakes atomic.Int64 // sockets opened
	conns      chan *websocket.Conn
}

func newScripted(t *testing.T, signInURL string) *scripted {
	t.Helper()
	s := &scripted{signInURL: signInURL, conns: make(chan *websocket.Conn, 16)}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", pageHandler())
	mux.Handle("GET /config", configHandler(signInURL))
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.refuse.Load() != 0:
			http.Error(w, "refused", int(s.refuse.Load()))
		case !s.signedIn.Load():
			http.Error(w, "signed out", http.StatusUnauthorized)
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"user","name":"erin"}`))
		}
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		s.signedIn.Store(true)
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /chat", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.refuse.Load() != 0:
			http.Error(w, "refused", int(s.refuse.Load()))
			return
		case !s.signedIn.Load():
			http.Error(w, "signed out", http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		s.handshakes.Add(1)
		s.conns <- c
		<-c.CloseRead(context.Background()).Done()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// open loads the page signed in and returns the server's end of its socket.
func (s *scripted) open(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	s.signedIn.Store(true)
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.url+"/")))
	waitState(t, ctx, "open")
	return s.next(t)
}

// next returns the server's end of the page's next socket.
func (s *scripted) next(t *testing.T) *websocket.Conn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(45 * time.Second):
		t.Fatal("the page did not connect")
		return nil
	}
}

func TestBrowserPageCloseCodes(t *testing.T) {
	ctx := newBrowser(t)

	t.Run("4401 stops retrying until the user signs in again", func(t *testing.T) {
		s := newScripted(t, "")
		c := s.open(t, ctx)
		s.signedIn.Store(false)
		require.NoError(t, c.Close(4401, "session ended"))

		waitState(t, ctx, "stopped")
		assert.Equal(t, "disconnected (4401): session ended: sign in again", statusLine(ctx))
		waitJS(t, ctx, `!document.getElementById("demo-signin").hidden && document.getElementById("chat").hidden`)
		screenshot(t, ctx, "session-ended.png")

		// No retry: the first one would come within a second. Watch for
		// three.
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			require.EqualValues(t, 1, s.handshakes.Load(), "the page retried after 4401")
		}

		require.NoError(t, chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS(`#demo-signin input[name=name]`), "erin"),
			chromedp.Submit(chromedp.CSS(`#demo-signin`)),
		))
		waitState(t, ctx, "open")
		s.next(t)
		assert.EqualValues(t, 2, s.handshakes.Load())
	})

	t.Run("4503 retries with backoff", func(t *testing.T) {
		s := newScripted(t, "")
		c := s.open(t, ctx)
		recordStatus(t, ctx)
		require.NoError(t, c.Close(4503, "auth service unavailable"))
		waitStatusSeen(t, ctx, "disconnected (4503): auth service unavailable, retrying in ")
		waitState(t, ctx, "open")
		s.next(t)
		assert.EqualValues(t, 2, s.handshakes.Load())
	})

	t.Run("a refused handshake after the session ended asks to sign in", func(t *testing.T) {
		s := newScripted(t, "")
		c := s.open(t, ctx)
		s.signedIn.Store(false)
		require.NoError(t, c.Close(websocket.StatusGoingAway, "restarting"))
		waitState(t, ctx, "stopped")
		assert.Equal(t, "could not connect (1006): session ended: sign in again", statusLine(ctx))
		waitJS(t, ctx, `!document.getElementById("demo-signin").hidden`)
	})

	t.Run("a refused handshake while the auth service is down retries", func(t *testing.T) {
		s := newScripted(t, "")
		c := s.open(t, ctx)
		recordStatus(t, ctx)
		s.refuse.Store(http.StatusServiceUnavailable)
		require.NoError(t, c.Close(websocket.StatusGoingAway, "restarting"))
		waitStatusSeen(t, ctx, "could not connect (1006): auth service unavailable, retrying in ")
		s.refuse.Store(0)
		waitState(t, ctx, "open")
		s.next(t)
	})

	t.Run("with an auth service the page links to its sign-in", func(t *testing.T) {
		s := newScripted(t, "https://auth.example/sign-in")
		require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(s.url+"/")))
		waitState(t, ctx, "signed-out")
		waitJS(t, ctx, `!document.getElementById("auth-signin").hidden && document.getElementById("demo-signin").hidden`)
		href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("signin-link").href`))
		require.NoError(t, err)
		assert.Equal(t, "https://auth.example/sign-in", href)
	})
}
