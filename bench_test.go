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
)

// upgradeRequest returns a handshake as a browser or a plugin sends it, with
// the headers real clients send, so that the benchmarks pay for realistic
// header maps.
func upgradeRequest(extra ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://chat.example.com/chat", nil)
	h := r.Header
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	h.Set("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
	h.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36")
	h.Set("Accept-Encoding", "gzip, deflate, br, zstd")
	h.Set("Accept-Language", "en-US,en;q=0.9")
	h.Set("Cache-Control", "no-cache")
	h.Set("Pragma", "no-cache")
	for i := 0; i < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	r.RemoteAddr = "203.0.113.7:51234"
	return r
}

// benchKeys returns n configured keys; the first is testKey.
func benchKeys(b *testing.B, n int) *PluginKeys {
	b.Helper()
	keys := []PluginKey{{Name: "telegram", Key: testKey}}
	for i := 1; i < n; i++ {
		keys = append(keys, PluginKey{Name: fmt.Sprintf("plugin%d", i), Key: fmt.Sprintf("%s-%04d", testKeyDiscord, i)})
	}
	p, err := NewPluginKeys(keys...)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func benchAuthenticate(b *testing.B, m *Middleware, r *http.Request, wantErr bool) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		id, err := m.Authenticate(r)
		if (err != nil) != wantErr || (err == nil && id == nil) {
			b.Fatalf("unexpected outcome: %v", err)
		}
	}
}

// BenchmarkAuthenticate measures the decision alone, without the network.
func BenchmarkAuthenticate(b *testing.B) {
	sessions := &fakeSessions{}
	// Throttling is off, so that a wrong key is checked on every
	// iteration; "wrong-key-throttled" measures the throttled refusal.
	newM := func(keys *PluginKeys) *Middleware {
		m, err := New(Options{PluginKeys: keys, Sessions: sessions, Throttle: ThrottleOptions{Disabled: true}})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	b.Run("plugin-1key", func(b *testing.B) {
		benchAuthenticate(b, newM(benchKeys(b, 1)), upgradeRequest(PluginTokenHeader, testKey), false)
	})
	b.Run("plugin-8keys", func(b *testing.B) {
		benchAuthenticate(b, newM(benchKeys(b, 8)), upgradeRequest(PluginTokenHeader, testKey), false)
	})
	b.Run("wrong-key", func(b *testing.B) {
		benchAuthenticate(b, newM(benchKeys(b, 1)), upgradeRequest(PluginTokenHeader, "wrong-"+testKey), true)
	})
	b.Run("wrong-key-throttled", func(b *testing.B) {
		m, err := New(Options{PluginKeys: benchKeys(b, 1), Throttle: ThrottleOptions{MaxFailures: 1}})
		if err != nil {
			b.Fatal(err)
		}
		benchAuthenticate(b, m, upgradeRequest(PluginTokenHeader, "wrong-"+testKey), true)
	})
	b.Run("no-credential", func(b *testing.B) {
		benchAuthenticate(b, newM(benchKeys(b, 1)), upgradeRequest("Origin", "http://chat.example.com"), true)
	})
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

// acceptHandler upgrades and closes at once: the cost of a handshake.
var acceptHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	c.CloseNow()
})

// benchHandshake dials handler over loopback in parallel: dial, upgrade,
// close, as a reconnect storm does.
func benchHandshake(b *testing.B, handler http.Handler, header http.Header) {
	b.Helper()
	srv := httptest.NewServer(handler)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/chat"
	client := lingerZeroClient()
	b.ReportAllocs()
	b.ResetTimer()
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
}

// BenchmarkHandshake measures full WebSocket handshakes over loopback with
// and without the middleware in front of the same handler.
func BenchmarkHandshake(b *testing.B) {
	m, err := New(Options{PluginKeys: benchKeys(b, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("bare", func(b *testing.B) {
		benchHandshake(b, acceptHandler, nil)
	})
	b.Run("plugin", func(b *testing.B) {
		benchHandshake(b, m.Handler(acceptHandler), http.Header{PluginTokenHeader: {testKey}})
	})
}
