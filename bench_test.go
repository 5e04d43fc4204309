package wsauth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
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

// handshakeSetup is one way of serving a handshake: a handler, and the
// headers (name, value, ...) its clients send besides a browser's.
type handshakeSetup struct {
	name    string
	handler http.Handler
	extra   []string
}

// handshakeSetups returns the set-ups of BenchmarkHandshake, bare first:
// coder/websocket's Accept alone, then behind the middleware with a plugin
// key, with a session its cache already knows, and with the naive set-up
// that asks the session service (answering after benchSessionLatency) on
// every handshake. The "-live" ones upgrade with Middleware.Accept
// instead, which also tracks the socket as a live connection of its
// identity.
func handshakeSetups(tb testing.TB) []handshakeSetup {
	tb.Helper()
	naive := benchSessions(tb)
	cached := benchCache(tb, naive)
	// The cache learns the browser's session before the first handshake.
	_, err := cached.ValidateSession(context.Background(), upgradeRequest("Cookie", browserCookie))
	require.NoError(tb, err)
	plugin := benchMiddleware(tb, benchKeys(tb, 1), nil, ThrottleOptions{})
	session := benchMiddleware(tb, nil, cached, ThrottleOptions{})
	key := []string{PluginTokenHeader, testKey}
	cookie := []string{"Cookie", browserCookie}
	return []handshakeSetup{
		{"bare", acceptHandler, nil},
		{"plugin", plugin.Handler(acceptHandler), key},
		{"session-cached", session.Handler(acceptHandler), cookie},
		{"naive-session", benchMiddleware(tb, nil, naive, ThrottleOptions{}).Handler(acceptHandler), cookie},
		{"plugin-live", plugin.Handler(liveHandler(plugin)), key},
		{"session-cached-live", session.Handler(liveHandler(session)), cookie},
	}
}

// handshakeServer serves a set-up over loopback until the test ends.
type handshakeServer struct {
	url    string
	header http.Header
	client *http.Client
}

func startHandshakeServer(tb testing.TB, s handshakeSetup) *handshakeServer {
	srv := httptest.NewServer(s.handler)
	h := &handshakeServer{url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/chat", header: http.Header{}, client: lingerZeroClient()}
	tb.Cleanup(func() {
		srv.Close()
		h.client.CloseIdleConnections()
	})
	for _, kv := range [][]string{browserHeaders, {"Origin", srv.URL}, s.extra} {
		for i := 0; i+1 < len(kv); i += 2 {
			h.header.Set(kv[i], kv[i+1])
		}
	}
	return h
}

// handshake makes one handshake, as a browser or a plugin makes it: dial,
// upgrade, close.
func (h *handshakeServer) handshake() error {
	c, _, err := websocket.Dial(context.Background(), h.url, &websocket.DialOptions{HTTPClient: h.client, HTTPHeader: h.header})
	if err != nil {
		return err
	}
	return c.CloseNow()
}

// handshakeDialers is how many clients dial at once, as in a reconnect
// storm: enough to keep both cores of a small machine busy.
const handshakeDialers = 8

// processCPU returns the CPU time the process has used, in user and
// kernel mode. Unlike the time on the clock, it does not grow while the
// machine runs something else.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandshake measures full WebSocket handshakes over loopback,
// client and server in one process, from handshakeDialers clients at once,
// for each of the handshakeSetups. cpu-ns/op is the CPU time of the
// process, client included, per handshake.
func BenchmarkHandshake(b *testing.B) {
	for _, s := range handshakeSetups(b) {
		b.Run(s.name, func(b *testing.B) {
			h := startHandshakeServer(b, s)
			b.ReportAllocs()
			b.SetParallelism(handshakeDialers / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			start := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := h.handshake(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkHandshakeOverhead runs the handshakes of BenchmarkHandshake,
// except naive-session, in rounds of 64 of each set-up in turn (each round
// starting with the next set-up), and reports each one's time per
// handshake relative to bare (plugin/bare, and so on). On a machine whose
// speed drifts from one second to the next, as a shared VM's does, this
// ratio is steadier than one between benchmarks run seconds apart.
func BenchmarkHandshakeOverhead(b *testing.B) {
	var setups []handshakeSetup
	var servers []*handshakeServer
	for _, s := range handshakeSetups(b) {
		if s.name != "naive-session" {
			setups = append(setups, s)
			servers = append(servers, startHandshakeServer(b, s))
		}
	}
	elapsed := make([]time.Duration, len(setups))
	round := 0
	for b.Loop() {
		for j := range setups {
			i := (round + j) % len(setups)
			start := time.Now()
			var wg sync.WaitGroup
			for range handshakeDialers {
				wg.Go(func() {
					for range 64 / handshakeDialers {
						if err := servers[i].handshake(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed[i] += time.Since(start)
		}
		round++
	}
	b.ReportMetric(0, "ns/op")
	for i := 1; i < len(setups); i++ {
		b.ReportMetric(float64(elapsed[i])/float64(elapsed[0]), setups[i].name+"/bare")
	}
}
