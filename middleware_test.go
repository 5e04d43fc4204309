package wsauth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Test keys: long enough to be valid, obviously not real.
const (
	testKey        = "test-plugin-key-0123456789abcdef-AAAA"
	testKeyDiscord = "test-plugin-key-0123456789abcdef-BBBB"
)

// seen is what the wrapped handler reports to the client over the socket.
type seen struct {
	Kind        Kind   `json:"kind"`
	Subject     string `json:"subject"`
	Name        string `json:"name"`
	KeyID       string `json:"keyId"`
	SessionID   string `json:"sessionId"`
	TokenHeader bool   `json:"tokenHeader"` // X-Plugin-Token still visible to the handler
}

// fakeSessions is a session validator for unit tests of the middleware's
// own logic. The session cookie's value selects the behaviour.
type fakeSessions struct {
	calls atomic.Int64
}

const testCookie = "test_session"

func (f *fakeSessions) ValidateSession(ctx context.Context, r *http.Request) (*Identity, error) {
	f.calls.Add(1)
	c, err := r.Cookie(testCookie)
	if err != nil {
		return nil, ErrNoCredentials
	}
	switch v := c.Value; {
	case strings.HasPrefix(v, "good-"):
		user := strings.TrimPrefix(v, "good-")
		return &Identity{Subject: "id-" + user, Name: user, SessionID: "sid-" + user}, nil
	case v == "claims-plugin":
		return &Identity{Kind: KindPlugin, Subject: "u1", Name: "mallory"}, nil
	case v == "expired":
		return &Identity{Subject: "u2", Name: "old", Expires: time.Now().Add(-time.Minute)}, nil
	case v == "down":
		return nil, fmt.Errorf("%w: auth service answered 502", ErrUnavailable)
	case v == "weird":
		return nil, errors.New("something unexpected")
	case v == "slow":
		<-ctx.Done()
		return nil, ctx.Err()
	case v == "nil":
		return nil, nil
	case v == "nosubject":
		return &Identity{Name: "nobody"}, nil
	case v == "panic":
		panic("validator bug")
	default:
		return nil, ErrInvalidCredentials
	}
}

type harness struct {
	srv      *httptest.Server
	m        *Middleware
	sessions *fakeSessions
	handled  atomic.Int64 // how often the wrapped handler ran
}

// newHarness starts a server with the middleware in front of a handler
// that reports what it saw. Unless opts says otherwise, the middleware
// has two plugin keys and the fake session validator, and logs to the
// suite's audit log (see TestMain). configure runs before the server
// starts, to reach into the middleware (a fake clock).
func newHarness(t *testing.T, opts Options, configure ...func(*Middleware)) *harness {
	t.Helper()
	h := &harness{sessions: &fakeSessions{}}
	if opts.PluginKeys == nil {
		keys, err := NewPluginKeys(
			PluginKey{Name: "telegram", Key: testKey},
			PluginKey{Name: "discord", Key: testKeyDiscord},
		)
		require.NoError(t, err)
		opts.PluginKeys = keys
	}
	if opts.Sessions == nil {
		opts.Sessions = h.sessions
	}
	if opts.ValidatorTimeout == 0 {
		opts.ValidatorTimeout = 200 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = auditLogger
	}
	m, err := New(opts)
	require.NoError(t, err)
	for _, f := range configure {
		f(m)
	}
	h.m = m
	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.handled.Add(1)
		id, ok := FromContext(r.Context())
		if !ok {
			http.Error(w, "no identity in context", http.StatusTeapot)
			return
		}
		// Origin checks are the middleware's job here: the handler
		// skips coder/websocket's own check, so that a test of the
		// Origin rule fails if the middleware stops enforcing it.
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, hasToken := r.Header[PluginTokenHeader]
		_ = wsjson.Write(r.Context(), c, seen{
			Kind: id.Kind, Subject: id.Subject, Name: id.Name, KeyID: id.KeyID,
			SessionID: id.SessionID, TokenHeader: hasToken,
		})
		c.Close(websocket.StatusNormalClosure, "")
	})
	h.srv = httptest.NewServer(m.Handler(chat))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) wsURL(suffix string) string {
	return "ws" + strings.TrimPrefix(h.srv.URL, "http") + "/chat" + suffix
}

// dial performs a real handshake. It returns what the handler saw on
// success, or the HTTP response that refused the handshake.
func (h *harness) dial(t *testing.T, suffix string, header http.Header) (*seen, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, h.wsURL(suffix), &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		require.NotNil(t, resp, "dial failed without an HTTP answer: %v", err)
		require.NotEqual(t, http.StatusSwitchingProtocols, resp.StatusCode)
		return nil, resp
	}
	defer c.CloseNow()
	var s seen
	require.NoError(t, wsjson.Read(ctx, c, &s))
	return &s, resp
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// TestContract runs every row of the contract table as real handshakes.
func TestContract(t *testing.T) {
	type want struct {
		status    int    // 0: the socket opens
		kind      Kind   // when it opens
		name      string // when it opens
		validator bool   // the session validator is consulted
	}
	cases := []struct {
		group, name string
		suffix      string
		header      http.Header
		want        want
	}{
		// Plugins.
		{"plugin", "matching key", "", hdr(PluginTokenHeader, testKey),
			want{kind: KindPlugin, name: "telegram"}},
		{"plugin", "second named key", "", hdr(PluginTokenHeader, testKeyDiscord),
			want{kind: KindPlugin, name: "discord"}},
		{"plugin", "matching key, foreign Origin (plugins ignore Origin)", "", hdr(PluginTokenHeader, testKey, "Origin", "https://evil.example"),
			want{kind: KindPlugin, name: "telegram"}},

		// A plugin token that is present and wrong is final.
		{"wrong key", "other value, same length", "", hdr(PluginTokenHeader, strings.Repeat("x", len(testKey))),
			want{status: 401}},
		{"wrong key", "all but the last byte right", "", hdr(PluginTokenHeader, testKey[:len(testKey)-1]+"Z"),
			want{status: 401}},
		{"wrong key", "prefix of the key", "", hdr(PluginTokenHeader, testKey[:len(testKey)-1]),
			want{status: 401}},
		{"wrong key", "key with a suffix", "", hdr(PluginTokenHeader, testKey+"A"),
			want{status: 401}},
		{"wrong key", "empty", "", hdr(PluginTokenHeader, ""),
			want{status: 401}},
		{"wrong key", "padded with a no-break space", "", hdr(PluginTokenHeader, "\u00a0"+testKey+"\u00a0"),
			want{status: 401}},
		{"wrong key", "space inside", "", hdr(PluginTokenHeader, testKey[:10]+" "+testKey[10:]),
			want{status: 401}},
		{"wrong key", "two keys in one header", "", hdr(PluginTokenHeader, testKey+", "+testKeyDiscord),
			want{status: 401}},
		{"wrong key", "lower-cased key", "", hdr(PluginTokenHeader, strings.ToLower(testKey)),
			want{status: 401}},
		{"wrong key", "wrong key with a valid session cookie", "", hdr(PluginTokenHeader, "nope", "Cookie", testCookie+"=good-alice"),
			want{status: 401}},

		// Duplicated headers are never accepted.
		{"duplicate", "two headers, both valid", "", hdr(PluginTokenHeader, testKey, PluginTokenHeader, testKey),
			want{status: 400}},
		{"duplicate", "valid and wrong", "", hdr(PluginTokenHeader, testKey, PluginTokenHeader, "nope"),
			want{status: 400}},
		{"duplicate", "two headers and a valid session", "", hdr(PluginTokenHeader, testKey, PluginTokenHeader, testKeyDiscord, "Cookie", testCookie+"=good-alice"),
			want{status: 400}},

		// Sessions.
		{"session", "valid, no Origin", "", hdr("Cookie", testCookie+"=good-alice"),
			want{kind: KindUser, name: "alice", validator: true}},
		{"session", "valid, validator claims a plugin: still a user", "", hdr("Cookie", testCookie+"=claims-plugin"),
			want{kind: KindUser, name: "mallory", validator: true}},
		{"session", "expired identity", "", hdr("Cookie", testCookie+"=expired"),
			want{status: 401, validator: true}},
		{"session", "forged or revoked", "", hdr("Cookie", testCookie+"=forged"),
			want{status: 401, validator: true}},

		// Origin on the session path.
		{"origin", "same host", "", nil, // Origin set per server below
			want{kind: KindUser, name: "alice", validator: true}},
		{"origin", "allowed pattern", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "https://app.example.com"),
			want{kind: KindUser, name: "alice", validator: true}},
		{"origin", "allowed pattern with scheme", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "https://admin.example.org"),
			want{kind: KindUser, name: "alice", validator: true}},
		{"origin", "foreign", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "https://evil.example"),
			want{status: 403}},
		{"origin", "allowed host but wrong scheme for a scheme pattern", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "http://admin.example.org"),
			want{status: 403}},
		{"origin", "look-alike suffix", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "https://app.example.com.evil.example"),
			want{status: 403}},
		{"origin", "null (sandboxed page)", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "null"),
			want{status: 403}},
		{"origin", "two Origin headers", "", hdr("Cookie", testCookie+"=good-alice", "Origin", "https://app.example.com", "Origin", "https://evil.example"),
			want{status: 403}},
		{"origin", "foreign, no session", "", hdr("Origin", "https://evil.example"),
			want{status: 403}},

		// Nothing at all.
		{"none", "no credential", "", nil,
			want{status: 401, validator: true}},

		// Could not decide.
		{"unavailable", "validator unavailable", "", hdr("Cookie", testCookie+"=down"),
			want{status: 503, validator: true}},
		{"unavailable", "validator error of unknown kind", "", hdr("Cookie", testCookie+"=weird"),
			want{status: 503, validator: true}},
		{"unavailable", "validator timed out", "", hdr("Cookie", testCookie+"=slow"),
			want{status: 503, validator: true}},
		{"internal", "validator panics", "", hdr("Cookie", testCookie+"=panic"),
			want{status: 500, validator: true}},
		{"internal", "validator returns nothing", "", hdr("Cookie", testCookie+"=nil"),
			want{status: 500, validator: true}},
		{"internal", "validator returns an identity without a subject", "", hdr("Cookie", testCookie+"=nosubject"),
			want{status: 500, validator: true}},

		// Query strings carry no credential.
		{"query", "?token=key", "?token=" + testKey, nil,
			want{status: 401, validator: true}},
		{"query", "?X-Plugin-Token=key", "?X-Plugin-Token=" + testKey, nil,
			want{status: 401, validator: true}},
		{"query", "?access_token=key", "?access_token=" + testKey, nil,
			want{status: 401, validator: true}},

		// Repeated failures from one address (each case of this group
		// first sends MaxFailures wrong keys): throttled before the
		// credential is looked at, a valid one included.
		{"throttle", "valid session after MaxFailures wrong keys", "", hdr("Cookie", testCookie+"=good-alice"),
			want{status: 429}},
		{"throttle", "valid key after MaxFailures wrong keys", "", hdr(PluginTokenHeader, testKey),
			want{status: 429}},
	}
	for _, tc := range cases {
		t.Run(tc.group+"/"+tc.name, func(t *testing.T) {
			h := newHarness(t, Options{AllowedOrigins: []string{"*.example.com", "https://admin.example.org"}})
			header := tc.header
			if tc.group == "origin" && tc.name == "same host" {
				header = hdr("Cookie", testCookie+"=good-alice", "Origin", h.srv.URL)
			}
			if tc.group == "throttle" {
				for range DefaultMaxFailures {
					_, resp := h.dial(t, "", hdr(PluginTokenHeader, "wrong"))
					require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
				}
			}
			start := time.Now()
			got, resp := h.dial(t, tc.suffix, header)
			if tc.want.status == 0 {
				require.NotNil(t, got, "handshake refused with %d", resp.StatusCode)
				assert.Equal(t, tc.want.kind, got.Kind)
				assert.Equal(t, tc.want.name, got.Name)
				assert.False(t, got.TokenHeader, "the wrapped handler must not see X-Plugin-Token")
				assert.EqualValues(t, 1, h.handled.Load())
			} else {
				require.Nil(t, got, "socket opened, want %d", tc.want.status)
				assert.Equal(t, tc.want.status, resp.StatusCode)
				assert.Zero(t, h.handled.Load(), "the wrapped handler ran for a refused request")
				switch tc.want.status {
				case 503, 429:
					assert.NotEmpty(t, resp.Header.Get("Retry-After"), "Retry-After")
				default:
					assert.Empty(t, resp.Header.Get("Retry-After"))
				}
			}
			if tc.want.validator {
				assert.EqualValues(t, 1, h.sessions.calls.Load(), "session validator calls")
			} else {
				assert.Zero(t, h.sessions.calls.Load(), "the session validator must not be called")
			}
			assert.Less(t, time.Since(start), 3*time.Second, "decision took too long")
		})
	}
}

func TestPluginIdentity(t *testing.T) {
	keys, err := NewPluginKeys(
		PluginKey{Name: "telegram", Key: testKey},
		PluginKey{Name: "telegram#next", Key: testKeyDiscord},
	)
	require.NoError(t, err)
	h := newHarness(t, Options{PluginKeys: keys})

	got, _ := h.dial(t, "", hdr(PluginTokenHeader, testKey))
	require.NotNil(t, got)
	assert.Equal(t, seen{Kind: KindPlugin, Subject: "telegram", Name: "telegram", KeyID: "telegram"}, *got)

	// During a rotation, the new key authenticates the same plugin.
	got, _ = h.dial(t, "", hdr(PluginTokenHeader, testKeyDiscord))
	require.NotNil(t, got)
	assert.Equal(t, seen{Kind: KindPlugin, Subject: "telegram", Name: "telegram", KeyID: "telegram#next"}, *got)
}

func TestSessionIdentity(t *testing.T) {
	h := newHarness(t, Options{})
	got, _ := h.dial(t, "", hdr("Cookie", testCookie+"=good-bob"))
	require.NotNil(t, got)
	assert.Equal(t, seen{Kind: KindUser, Subject: "id-bob", Name: "bob", SessionID: "sid-bob"}, *got)
}

func TestPluginPathOff(t *testing.T) {
	empty, err := NewPluginKeys()
	require.NoError(t, err)
	h := newHarness(t, Options{PluginKeys: empty})

	// Without keys, a token is refused, never "any token works", and
	// the session path is not tried.
	for _, token := range []string{"", "anything", testKey} {
		got, resp := h.dial(t, "", hdr(PluginTokenHeader, token, "Cookie", testCookie+"=good-alice"))
		require.Nil(t, got)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	assert.Zero(t, h.sessions.calls.Load())

	got, _ := h.dial(t, "", hdr("Cookie", testCookie+"=good-alice"))
	require.NotNil(t, got)
	assert.Equal(t, KindUser, got.Kind)
}

func TestSessionPathOff(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys})
	require.NoError(t, err)
	srv := httptest.NewServer(m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("handler ran")
	})))
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestPaddedKeyOnTheWire sends raw bytes, so that no HTTP client can clean
// the value up before it reaches the server.
func TestPaddedKeyOnTheWire(t *testing.T) {
	h := newHarness(t, Options{})
	for name, value := range map[string]string{
		"two keys with spaces": testKey + " " + testKey,
		"quoted":               `"` + testKey + `"`,
		"no-break spaces":      "\u00a0" + testKey + "\u00a0",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", h.srv.Listener.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"+
				"%s: %s\r\n\r\n", h.srv.Listener.Addr(), PluginTokenHeader, value)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Contains(t, []int{400, 401}, resp.StatusCode)
			assert.Zero(t, h.handled.Load())
		})
	}
}

func TestPanicDoesNotStopTheServer(t *testing.T) {
	h := newHarness(t, Options{})
	for range 3 {
		_, resp := h.dial(t, "", hdr("Cookie", testCookie+"=panic"))
		require.NotNil(t, resp)
		assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	}
	got, _ := h.dial(t, "", hdr("Cookie", testCookie+"=good-alice"))
	require.NotNil(t, got)
}

func TestRefusalBodySaysNoMore(t *testing.T) {
	h := newHarness(t, Options{})
	for _, header := range []http.Header{
		hdr(PluginTokenHeader, "wrong-"+testKey),
		hdr("Cookie", testCookie+"=down"),
		hdr("Cookie", testCookie+"=panic"),
		hdr("Cookie", testCookie+"=good-alice", "Origin", "https://evil.example"),
	} {
		req, err := http.NewRequest(http.MethodGet, h.srv.URL+"/chat", nil)
		require.NoError(t, err)
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body := new(strings.Builder)
		_, _ = bufio.NewReader(resp.Body).WriteTo(body)
		resp.Body.Close()
		assert.Equal(t, http.StatusText(resp.StatusCode)+"\n", body.String())
		assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	}
}

func TestErrorHandlerIsPluggable(t *testing.T) {
	var got error
	h := newHarness(t, Options{ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
		got = err
		w.WriteHeader(StatusCode(err))
		fmt.Fprint(w, "custom")
	}})
	_, resp := h.dial(t, "", hdr(PluginTokenHeader, "wrong"))
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.ErrorIs(t, got, ErrInvalidCredentials)
}

func TestRequestIsNotMutated(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys})
	require.NoError(t, err)

	req := httptest.NewRequest(http.MethodGet, "/chat", nil)
	req.Header.Set(PluginTokenHeader, testKey)
	var inner *http.Request
	m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inner = r })).
		ServeHTTP(httptest.NewRecorder(), req)
	require.NotNil(t, inner)
	assert.Empty(t, inner.Header.Get(PluginTokenHeader))
	assert.Equal(t, testKey, req.Header.Get(PluginTokenHeader), "the caller's request must keep its header")
	_, ok := FromContext(req.Context())
	assert.False(t, ok, "the caller's request must not gain an identity")
}

func TestResponseWriterIsNotWrapped(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys})
	require.NoError(t, err)

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/chat", nil)
	req.Header.Set(PluginTokenHeader, testKey)
	ran := false
	m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran = true
		assert.Same(t, rec, w)
	})).ServeHTTP(rec, req)
	require.True(t, ran, "the handler did not run")
}

func TestNewRefusesUnsafeOptions(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	empty, err := NewPluginKeys()
	require.NoError(t, err)
	for name, opts := range map[string]Options{
		"nothing configured":      {},
		"empty key set":           {PluginKeys: empty},
		"origin *":                {PluginKeys: keys, AllowedOrigins: []string{"*"}},
		"origin *://*":            {PluginKeys: keys, AllowedOrigins: []string{"*://*"}},
		"empty origin":            {PluginKeys: keys, AllowedOrigins: []string{" "}},
		"malformed origin":        {PluginKeys: keys, AllowedOrigins: []string{"[a-"}},
		"negative timeout":        {PluginKeys: keys, ValidatorTimeout: -time.Second},
		"negative retry duration": {PluginKeys: keys, RetryAfter: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := New(opts)
			assert.Error(t, err)
			assert.Nil(t, m)
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	h := newHarness(t, Options{RetryAfter: 1500 * time.Millisecond})
	_, resp := h.dial(t, "", hdr("Cookie", testCookie+"=down"))
	require.NotNil(t, resp)
	assert.Equal(t, "2", resp.Header.Get("Retry-After"), "rounded up to whole seconds")
}

func TestTimeoutIsBounded(t *testing.T) {
	h := newHarness(t, Options{ValidatorTimeout: 100 * time.Millisecond})
	start := time.Now()
	_, resp := h.dial(t, "", hdr("Cookie", testCookie+"=slow"))
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Less(t, time.Since(start), time.Second)
}

// TestPaddedKeyInProcess covers values no HTTP server would pass on
// (net/http trims spaces and tabs around a value and refuses control
// characters), in case a request reaches the middleware some other way.
func TestPaddedKeyInProcess(t *testing.T) {
	keys, err := NewPluginKeys(PluginKey{Name: "telegram", Key: testKey})
	require.NoError(t, err)
	m, err := New(Options{PluginKeys: keys})
	require.NoError(t, err)
	for _, value := range []string{" " + testKey, testKey + " ", "\t" + testKey, testKey + "\v", testKey + "\x00", testKey + "\r\n"} {
		r := httptest.NewRequest(http.MethodGet, "/chat", nil)
		r.Header[PluginTokenHeader] = []string{value}
		id, err := m.Authenticate(r)
		assert.Nil(t, id)
		assert.ErrorIs(t, err, ErrInvalidCredentials, "%q", value)
	}
}

func TestZeroPluginKeys(t *testing.T) {
	_, err := New(Options{PluginKeys: &PluginKeys{}})
	assert.Error(t, err, "a zero key set is an empty one")
	m, err := New(Options{PluginKeys: &PluginKeys{}, Sessions: &fakeSessions{}})
	require.NoError(t, err)
	r := httptest.NewRequest(http.MethodGet, "/chat", nil)
	r.Header.Set(PluginTokenHeader, testKey)
	_, err = m.Authenticate(r)
	assert.ErrorIs(t, err, ErrInvalidCredentials)
}

// TestSharedIdentityIsNotModified: a validator may hand the same identity
// to many requests (a cache does); the middleware must not write to it.
func TestSharedIdentityIsNotModified(t *testing.T) {
	shared := &Identity{Kind: KindPlugin, Subject: "u1", Name: "alice", KeyID: "telegram"}
	m, err := New(Options{Sessions: SessionValidatorFunc(func(context.Context, *http.Request) (*Identity, error) {
		return shared, nil
	})})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := m.Authenticate(httptest.NewRequest(http.MethodGet, "/chat", nil))
			assert.NoError(t, err)
			assert.Equal(t, KindUser, id.Kind)
			assert.Empty(t, id.KeyID, "a session never carries a plugin key name")
			assert.NotSame(t, shared, id)
		}()
	}
	wg.Wait()
	assert.Equal(t, Identity{Kind: KindPlugin, Subject: "u1", Name: "alice", KeyID: "telegram"}, *shared)
}

// logBuffer collects a logger's output for tests.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestPanicIsLogged(t *testing.T) {
	var out logBuffer
	h := newHarness(t, Options{Logger: slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	_, resp := h.dial(t, "", hdr("Cookie", testCookie+"=panic"))
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	log := out.String()
	assert.Contains(t, log, `"level":"ERROR","msg":"wsauth: session validator panicked"`)
	assert.Contains(t, log, `"panic_type":"string"`)
	assert.NotContains(t, log, "validator bug", "the panic value may hold secrets and is not logged")
	assert.NotContains(t, log, "panic\"", "the cookie value is not logged")
}

func TestValidatorErrorIsRedactedInTheLog(t *testing.T) {
	var out logBuffer
	secret := "cookie-value-that-must-not-leak"
	m, err := New(Options{
		Sessions: SessionValidatorFunc(func(ctx context.Context, r *http.Request) (*Identity, error) {
			_, err := http.Get("http://user:pw@127.0.0.1:1/get-session?token=" + secret)
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}),
		Logger: slog.New(slog.NewTextHandler(&out, nil)),
	})
	require.NoError(t, err)
	_, err = m.Authenticate(httptest.NewRequest(http.MethodGet, "/chat", nil))
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Contains(t, out.String(), "127.0.0.1:1/get-session")
	assert.NotContains(t, out.String(), secret)
	assert.NotContains(t, out.String(), "pw@")
}

// TestLateSuccessIsUnavailable: a validator's success that arrives after
// its deadline is "could not decide" (503), as the deadline itself is; so
// is an error that is the deadline.
func TestLateSuccessIsUnavailable(t *testing.T) {
	ended, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	id, err := inTime(ended, &Identity{Subject: "u1", Name: "alice"}, nil)
	assert.Nil(t, id)
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Equal(t, http.StatusServiceUnavailable, StatusCode(err))

	_, err = inTime(ended, nil, fmt.Errorf("auth service: %w", context.DeadlineExceeded))
	require.ErrorIs(t, err, ErrUnavailable)
	assert.Equal(t, http.StatusServiceUnavailable, StatusCode(err))

	id, err = inTime(context.Background(), &Identity{Subject: "u1", Name: "alice"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "alice", id.Name)
}
