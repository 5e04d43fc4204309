package wsauth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

// The benchmarks measure the decision alone (BenchmarkAuthenticate) and
// full handshakes over loopback side by side with the bare upgrade
// (BenchmarkHandshake); conn_scale_test.go measures what live connections
// cost. BENCHMARKS.md gives the results and the command behind them.

// benchSessionLatency is how long the stand-in session service takes to
// answer, as a session service across a network does.
const benchSessionLatency = time.Millisecond

// browserHeaders are the headers a browser sends with every handshake,
// besides those of the upgrade itself, so that the benchmarks pay for
// realistic header maps.
var browserHeaders = []string{
	"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
	"Accept-Encoding", "gzip, deflate, br, zstd",
	"Accept-Language", "en-US,en;q=0.9",
	"Cache-Control", "no-cache",
	"Pragma", "no-cache",
}

// browserCookie is the Cookie header of a signed-in browser: a signed
// Better Auth session cookie among a few others, as a real page sends it.
var browserCookie = "theme=dark; " + baCookie + "=" + signed(baSecret, "good-alice") + "; _ga=GA1.1.1234567890.1764700000; lang=en"

// upgradeRequest returns a handshake as a browser or a plugin sends it to
// http://chat.example.com/chat, with extra headers (name, value, ...) added.
func upgradeRequest(extra ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/chat", nil)
	h := r.Header
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	h.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	for _, kv := range [][]string{browserHeaders, extra} {
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
	}
	r.RemoteAddr = "203.0.113.7:51234"
	return r
}

// benchKeys returns n configured keys; the first is testKey.
func benchKeys(tb testing.TB, n int) *PluginKeys {
	tb.Helper()
	keys := []PluginKey{{Name: "telegram", Key: testKey}}
	for i := 1; i < n; i++ {
		keys = append(keys, PluginKey{Name: fmt.Sprintf("plugin%d", i), Key: fmt.Sprintf("%s-%04d", testKeyDiscord, i)})
	}
	p, err := NewPluginKeys(keys...)
	require.NoError(tb, err)
	return p
}

// benchSessions returns the Better Auth validator, asking a stand-in
// get-session endpoint that answers after benchSessionLatency: on its
// own, it is the naive set-up that asks the session service on every
// handshake.
func benchSessions(tb testing.TB) SessionValidator {
	tb.Helper()
	f := newFakeBetterAuth(tb)
	f.latency.Store(int64(benchSessionLatency))
	return newBetterAuthFor(tb, f, BetterAuthOptions{Timeout: 10 * time.Second})
}

// benchCache wraps v in a session cache with its default options.
func benchCache(tb testing.TB, v SessionValidator) SessionValidator {
	tb.Helper()
	c, err := NewSessionCache(v, SessionCacheOptions{})
	require.NoError(tb, err)
	return c
}

// benchMiddleware returns a middleware with the default options, as a
// gateway runs it (throttling on), and the given keys, sessions and
// throttle.
func benchMiddleware(tb testing.TB, keys *PluginKeys, sessions SessionValidator, throttle ThrottleOptions) *Middleware {
	tb.Helper()
	m, err := New(Options{PluginKeys: keys, Sessions: sessions, Throttle: throttle, ValidatorTimeout: 10 * time.Second})
	require.NoError(tb, err)
	return m
}

// cachedSessionMiddleware returns a middleware whose session cache already
// knows the browser's session, as after its first handshake, and the
// browser's next handshake.
func cachedSessionMiddleware(tb testing.TB) (*Middleware, *http.Request) {
	tb.Helper()
	m := benchMiddleware(tb, nil, benchCache(tb, benchSessions(tb)), ThrottleOptions{})
	r := upgradeRequest("Origin", "http://chat.example.com", "Cookie", browserCookie)
	id, err := m.Authenticate(r)
	require.NoError(tb, err)
	require.Equal(tb, "alice", id.Name)
	return m, r
}

// BenchmarkAuthenticate measures the decision alone, without the network,
// on one goroutine: the CPU time a handshake spends in the library.
func BenchmarkAuthenticate(b *testing.B) {
	run := func(name string, m *Middleware, r *http.Request, wantErr bool) {
		b.Run(name, func(b *testing.B) {
			// The first call is not timed: it fills the cache, or
			// uses up the throttle's budget.
			_, _ = m.Authenticate(r)
			b.ReportAllocs()
			for b.Loop() {
				id, err := m.Authenticate(r)
				if (err != nil) != wantErr || (err == nil && id == nil) {
					b.Fatalf("unexpected outcome: %v", err)
				}
			}
		})
	}
	one, eight := benchKeys(b, 1), benchKeys(b, 8)
	sessions := benchCache(b, benchSessions(b))
	plugin := upgradeRequest(PluginTokenHeader, testKey)
	wrong := upgradeRequest(PluginTokenHeader, "wrong-"+testKey)

	run("plugin-1key", benchMiddleware(b, one, sessions, ThrottleOptions{}), plugin, false)
	run("plugin-8keys", benchMiddleware(b, eight, sessions, ThrottleOptions{}), plugin, false)
	// Throttling is off, so that the wrong key is compared on every
	// iteration; "wrong-key-throttled" measures the refusal of a client
	// that has used up its attempts.
	run("wrong-key", benchMiddleware(b, one, sessions, ThrottleOptions{Disabled: true}), wrong, true)
	run("wrong-key-throttled", benchMiddleware(b, one, sessions, ThrottleOptions{MaxFailures: 1}), wrong, true)
	run("no-credential", benchMiddleware(b, one, sessions, ThrottleOptions{}), upgradeRequest("Origin", "http://chat.example.com"), true)
	m, r := cachedSessionMiddleware(b)
	run("session-cached", m, r, false)
}

// lingerZeroClient returns an HTTP client whose connections are reset on
// close instead of lingering in TIME_WAIT, so that a benchmark opening tens
// of thousands of loopback connections does not run out of ports.
func lingerZeroClient() *http.Client {
	d := &net.Dialer{
		Timeout: 5 * time.Second,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// acceptHandler upgrades with coder/websocket alone and closes at once:
// the bare handshake.
var acceptHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c.CloseNow()
})

// liveHandler is the same handler upgrading with [Middleware.Accept]
// instead, which ties the socket to its identity: it is closed when the
// session ends.
func liveHandler(m *Middleware) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := m.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.CloseNow()
	})
}

// benchHandshake dials handler over loopback from many goroutines at once,
// as clients do in a reconnect storm: dial, upgrade, close. Every dial
// sends a browser's headers and Origin, and extra headers (name, value,
// ...) such as a credential.
func benchHandshake(b *testing.B, handler http.Handler, extra ...string) {
	srv := httptest.NewServer(handler)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/chat"
	header := http.Header{}
	for _, kv := range [][]string{browserHeaders, {"Origin", srv.URL}, extra} {
		for i := 0; i+1 < len(kv); i += 2 {
			header.Set(kv[i], kv[i+1])
		}
	}
	client := lingerZeroClient()
	defer client.CloseIdleConnections()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	start := processCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header})
			if err != nil {
				b.Error(err)
				return
			}
			c.CloseNow()
		}
	})
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
}

// processCPU returns the CPU time the process has used, in user and
// kernel mode. Unlike the time on the clock, it does not grow while the
// machine runs something else.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandshake measures full WebSocket handshakes over loopback,
// client and server in one process: coder/websocket's Accept alone (bare),
// and behind the middleware with a plugin key, with a session its cache
// already knows, and with the naive set-up that asks the session service
// (answering after benchSessionLatency) on every handshake. plugin-live
// and session-cached-live upgrade with Middleware.Accept instead, which
// also tracks the socket as a live connection of its identity.
func BenchmarkHandshake(b *testing.B) {
	naive := benchSessions(b)
	cached := benchCache(b, naive)
	// The cache learns the browser's session before the first handshake.
	_, err := cached.ValidateSession(context.Background(), upgradeRequest("Cookie", browserCookie))
	require.NoError(b, err)
	plugin := func(b *testing.B) *Middleware { return benchMiddleware(b, benchKeys(b, 1), nil, ThrottleOptions{}) }
	session := func(b *testing.B) *Middleware { return benchMiddleware(b, nil, cached, ThrottleOptions{}) }
	b.Run("bare", func(b *testing.B) {
		benchHandshake(b, acceptHandler)
	})
	b.Run("plugin", func(b *testing.B) {
		benchHandshake(b, plugin(b).Handler(acceptHandler), PluginTokenHeader, testKey)
	})
	b.Run("session-cached", func(b *testing.B) {
		benchHandshake(b, session(b).Handler(acceptHandler), "Cookie", browserCookie)
	})
	b.Run("naive-session", func(b *testing.B) {
		m := benchMiddleware(b, nil, naive, ThrottleOptions{})
		benchHandshake(b, m.Handler(acceptHandler), "Cookie", browserCookie)
	})
	b.Run("plugin-live", func(b *testing.B) {
		m := plugin(b)
		benchHandshake(b, m.Handler(liveHandler(m)), PluginTokenHeader, testKey)
	})
	b.Run("session-cached-live", func(b *testing.B) {
		m := session(b)
		benchHandshake(b, m.Handler(liveHandler(m)), "Cookie", browserCookie)
	})
}
