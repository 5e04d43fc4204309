package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/mosaicstack/wsauth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const e2eKey = "e2e-plugin-key-0123456789abcdefghijklmnop"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// build compiles the example gateway and plugin once per test run, so that
// the tests drive them from outside, as a user would.
func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "wsauth-e2e")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"gateway", "plugin"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "../"+name).CombinedOutput()
			if err != nil {
				buildErr = &buildError{name: name, out: string(out), err: err}
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

type buildError struct {
	name, out string
	err       error
}

func (e *buildError) Error() string { return "build " + e.name + ": " + e.err.Error() + "\n" + e.out }

// process is a running example program and what it has logged.
type process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// start runs one of the example programs built by build.
func start(t *testing.T, name string, env ...string) *process {
	t.Helper()
	return startCommand(t, name, exec.Command(filepath.Join(build(t), name)), env...)
}

// startCommand runs cmd with only env (and PATH and HOME) in its
// environment, keeps what it logs, and kills it when the test ends.
func startCommand(t *testing.T, name string, cmd *exec.Cmd, env ...string) *process {
	t.Helper()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	p := &process{cmd: cmd, done: make(chan struct{})}
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() { _ = cmd.Wait(); pw.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		assert.NotContains(t, p.output(), e2eKey, "%s logged the plugin key", name)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

// waitFor waits until the process has logged a line matching re.
func (p *process) waitFor(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(p.output()); m != nil {
			return m
		}
		select {
		case <-p.done:
			if m := rx.FindStringSubmatch(p.output()); m != nil {
				return m
			}
			t.Fatalf("process exited before logging %q:\n%s", re, p.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("timed out waiting for %q:\n%s", re, p.output())
	return nil
}

func startGateway(t *testing.T, env ...string) (*process, string) {
	t.Helper()
	p := start(t, "gateway", append([]string{"ADDR=127.0.0.1:0"}, env...)...)
	m := p.waitFor(t, `"gateway listening" url=(http://\S+)`)
	return p, m[1]
}

// login signs a user in through the demo store and returns the cookie.
func login(t *testing.T, base, name string) string {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	resp, err := client.PostForm(base+"/login", url.Values{"name": {name}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	u, _ := url.Parse(base)
	cookies := jar.Cookies(u)
	require.Len(t, cookies, 1)
	return cookies[0].Name + "=" + cookies[0].Value
}

func wsURL(base string) string { return "ws" + strings.TrimPrefix(base, "http") + "/chat" }

func readMessage(t *testing.T, ctx context.Context, c *websocket.Conn) message {
	t.Helper()
	_, data, err := c.Read(ctx)
	require.NoError(t, err)
	var m message
	require.NoError(t, json.Unmarshal(data, &m))
	return m
}

func TestGatewayUserAndPluginSeeEachOther(t *testing.T) {
	p, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The example plugin, run as its own process, connects with the key.
	plugin := start(t, "plugin", "GATEWAY_URL="+wsURL(base), "PLUGIN_API_KEY="+e2eKey)
	plugin.waitFor(t, "connected to ")

	cookie := login(t, base, "alice")
	user, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{
		HTTPHeader: http.Header{"Cookie": {cookie}, "Origin": {base}},
	})
	require.NoError(t, err)
	defer user.CloseNow()

	require.NoError(t, user.Write(ctx, websocket.MessageText, []byte("hello <b>plugin</b>")))
	defer func() {
		_, value, _ := strings.Cut(cookie, "=")
		assert.NotContains(t, p.output(), value, "the gateway logged a session cookie")
	}()
	got := readMessage(t, ctx, user)
	assert.Equal(t, "hello <b>plugin</b>", got.Text)
	assert.Equal(t, sender{Kind: wsauth.KindUser, Name: "alice"}, got.From)

	// The plugin saw the user's message and its echo reaches the user.
	got = readMessage(t, ctx, user)
	assert.Equal(t, "echo: hello <b>plugin</b>", got.Text)
	assert.Equal(t, sender{Kind: wsauth.KindPlugin, Name: "plugin"}, got.From)
	plugin.waitFor(t, `alice \(user\): hello <b>plugin</b>`)
}

func TestGatewayRefusals(t *testing.T) {
	_, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	cookie := login(t, base, "bob")
	cases := []struct {
		name   string
		query  string
		header http.Header
		want   int
	}{
		{"wrong key", "", http.Header{wsauth.PluginTokenHeader: {"wrong-" + e2eKey}}, 401},
		{"wrong key with a valid session", "", http.Header{wsauth.PluginTokenHeader: {"wrong-" + e2eKey}, "Cookie": {cookie}}, 401},
		{"no credential", "", nil, 401},
		{"foreign Origin with a valid session", "", http.Header{"Cookie": {cookie}, "Origin": {"https://evil.example"}}, 403},
		{"duplicate headers", "", http.Header{wsauth.PluginTokenHeader: {e2eKey, e2eKey}}, 400},
		{"key in the query string", "?token=" + e2eKey, nil, 401},
		{"key in the query string as X-Plugin-Token", "?X-Plugin-Token=" + e2eKey, nil, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, wsURL(base)+tc.query, &websocket.DialOptions{HTTPHeader: tc.header})
			if c != nil {
				c.CloseNow()
			}
			require.Error(t, err)
			require.NotNil(t, resp)
			assert.Equal(t, tc.want, resp.StatusCode)
		})
	}
}

func TestGatewayUnsafeKeyStopsStartup(t *testing.T) {
	for name, env := range map[string]string{
		"short key":     "PLUGIN_API_KEY=too-short-key",
		"malformed map": "PLUGIN_API_KEYS=telegram" + e2eKey,
	} {
		t.Run(name, func(t *testing.T) {
			p := start(t, "gateway", "ADDR=127.0.0.1:0", env)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Fatal("gateway did not stop")
			}
			assert.NotEqual(t, 0, p.cmd.ProcessState.ExitCode())
			out := p.output()
			assert.Contains(t, out, "plugin keys")
			assert.NotContains(t, out, "gateway listening")
			assert.NotContains(t, out, "too-short-key")
			assert.NotContains(t, out, e2eKey)
		})
	}
}

func TestGatewayWithoutKeys(t *testing.T) {
	p, base := startGateway(t)
	assert.Equal(t, 1, strings.Count(p.output(), "plugin path is off"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{
		HTTPHeader: http.Header{wsauth.PluginTokenHeader: {e2eKey}},
	})
	require.Error(t, err)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestGatewayServesPageAndShutsDown(t *testing.T) {
	p, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	resp, err := http.Get(base + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "wsauth chat")

	// A plugin connected at shutdown is told the gateway is going away.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := wsauth.DialPlugin(ctx, wsURL(base), e2eKey, nil)
	require.NoError(t, err)
	defer c.CloseNow()

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	_, _, err = c.Read(ctx)
	assert.Equal(t, websocket.StatusGoingAway, websocket.CloseStatus(err))
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not stop on SIGTERM")
	}
	assert.Equal(t, 0, p.cmd.ProcessState.ExitCode())
	assert.Contains(t, p.output(), "shutting down")
}

// closeCode reads until the connection ends and returns its close status
// and reason.
func closeCode(t *testing.T, c *websocket.Conn, within time.Duration) (websocket.StatusCode, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		require.NoError(t, ctx.Err(), "the socket was not closed in time")
		var ce websocket.CloseError
		require.ErrorAs(t, err, &ce, "closed without a close frame: %v", err)
		return ce.Code, ce.Reason
	}
}

func TestGatewayLogoutClosesLiveSockets(t *testing.T) {
	_, base := startGateway(t, "REVALIDATE_INTERVAL=300ms")
	cookie := login(t, base, "dora")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {cookie}}})
	require.NoError(t, err)
	defer c.CloseNow()

	req, err := http.NewRequest(http.MethodPost, base+"/logout", nil)
	require.NoError(t, err)
	req.Header.Set("Cookie", cookie)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	code, reason := closeCode(t, c, 20*time.Second)
	assert.Equal(t, websocket.StatusCode(4401), code)
	assert.Equal(t, "session revoked", reason)
}

func TestGatewayReloadsKeysOnSIGHUP(t *testing.T) {
	const newKey = "e2e-plugin-key-rotated-0123456789abcdefgh"
	file := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(file, []byte("relay="+e2eKey+"\n"), 0o600))
	p, base := startGateway(t, "PLUGIN_API_KEY_FILE="+file)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := wsauth.DialPlugin(ctx, wsURL(base), e2eKey, nil)
	require.NoError(t, err)
	defer old.CloseNow()

	// A broken file is refused and the old key keeps working.
	require.NoError(t, os.WriteFile(file, []byte("relay=short\n"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	p.waitFor(t, "plugin keys not reloaded")
	c, err := wsauth.DialPlugin(ctx, wsURL(base), e2eKey, nil)
	require.NoError(t, err)
	c.CloseNow()

	// The key is rotated: its socket closes, the new key connects.
	require.NoError(t, os.WriteFile(file, []byte("relay="+newKey+"\n"), 0o600))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	code, reason := closeCode(t, old, 20*time.Second)
	assert.Equal(t, websocket.StatusCode(4401), code)
	assert.Equal(t, "plugin key removed", reason)
	c, err = wsauth.DialPlugin(ctx, wsURL(base), newKey, nil)
	require.NoError(t, err)
	c.CloseNow()
	_, err = wsauth.DialPlugin(ctx, wsURL(base), e2eKey, nil)
	var he *wsauth.HandshakeError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, http.StatusUnauthorized, he.StatusCode)
	out := p.output()
	assert.Contains(t, out, "plugin keys reloaded")
	assert.NotContains(t, out, e2eKey)
	assert.NotContains(t, out, newKey)
}

func TestGatewayBadSessionSettingsStopStartup(t *testing.T) {
	for name, env := range map[string]string{
		"interval not a duration": "REVALIDATE_INTERVAL=banana",
		"negative interval":       "REVALIDATE_INTERVAL=-1m",
		"AUTH_URL not http":       "AUTH_URL=ftp://auth.example.com",
		"AUTH_URL with a secret":  "AUTH_URL=https://user:hunter2secret@auth.example.com",
	} {
		t.Run(name, func(t *testing.T) {
			p := start(t, "gateway", "ADDR=127.0.0.1:0", env)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Fatal("gateway did not stop")
			}
			assert.NotEqual(t, 0, p.cmd.ProcessState.ExitCode())
			out := p.output()
			assert.NotContains(t, out, "gateway listening")
			assert.NotContains(t, out, "hunter2secret")
		})
	}
}

func TestGatewayMetrics(t *testing.T) {
	_, base := startGateway(t, "PLUGIN_API_KEY="+e2eKey)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := wsauth.DialPlugin(ctx, wsURL(base), e2eKey, nil)
	require.NoError(t, err)
	c.CloseNow()
	_, err = wsauth.DialPlugin(ctx, wsURL(base), "wrong-"+e2eKey, nil)
	require.Error(t, err)
	cookie := login(t, base, "carol")
	c, _, err = websocket.Dial(ctx, wsURL(base), &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {cookie}}})
	require.NoError(t, err)
	c.CloseNow()

	resp, err := http.Get(base + "/debug/vars")
	require.NoError(t, err)
	defer resp.Body.Close()
	var vars struct {
		Decisions        map[string]int `json:"wsauth_decisions"`
		ValidatorCalls   int            `json:"wsauth_validator_calls"`
		ValidatorSeconds float64        `json:"wsauth_validator_seconds"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&vars))
	assert.Equal(t, map[string]int{"plugin.accepted": 1, "plugin.invalid_credentials": 1, "session.accepted": 1}, vars.Decisions)
	assert.Equal(t, 1, vars.ValidatorCalls)
	assert.Positive(t, vars.ValidatorSeconds)
}

// TestGatewayWhoamiIsGuardedLikeChat: /whoami is decided by the same
// middleware as /chat, so it is logged, and guessing there is throttled.
func TestGatewayWhoamiIsGuardedLikeChat(t *testing.T) {
	p, base := startGateway(t)
	get := func(cookie string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+"/whoami", nil)
		require.NoError(t, err)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get(login(t, base, "erin")))
	assert.Equal(t, http.StatusUnauthorized, get(""))
	p.waitFor(t, `wsauth: refused" .*method=session .*path=/whoami .*status=401`)

	status := 0
	for i := 0; i < 20 && status != http.StatusTooManyRequests; i++ {
		status = get(demoCookie + "=guess-" + strings.Repeat("x", i))
	}
	assert.Equal(t, http.StatusTooManyRequests, status, "guessing sessions at /whoami is throttled")
}
